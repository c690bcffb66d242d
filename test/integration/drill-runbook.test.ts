import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { lifeline, REPO } from '../helpers/cli';
import { tempDir } from '../helpers/db';

describe('lifeline runbook', () => {
  it('lists every environment in restore priority order, and the steps of the one asked for', async () => {
    const run = await lifeline(['runbook', '--config', 'examples/lifeline.yml', '--env', 'production', '--json'], { cwd: REPO });
    expect(run.code, run.stderr).toBe(0);
    const result = JSON.parse(run.stdout);
    expect(result.order).toEqual(['production', 'staging']);
    expect(result.environments.map((e: { name: string }) => e.name)).toEqual(['production']);
    const steps = result.environments[0].steps;
    expect(steps.map((s: { id: string }) => s.id)).toEqual([
      'stop-writes',
      'select-backup',
      'verify-backup',
      'restore',
      'check-data',
      'check-indexes',
      'restore-redis',
      'smoke-queries',
      'start-app',
      'switch-over',
    ]);
    // The example environment runs Redis as the Compose service "redis": its restore is a runbook step.
    expect(steps.find((s: { id: string }) => s.id === 'restore-redis').command).toBe('lifeline redis-restore --env production --backup <backup-id> --confirm redis');
    expect(result.environments[0].pitrSteps.find((s: { id: string }) => s.id === 'restore').command).toContain('--stanza=shop');
  });

  it('docs/runbook.md is what the example configuration generates', async () => {
    const out = tempDir();
    try {
      const target = join(out.path, 'runbook.md');
      const run = await lifeline(['runbook', '--config', 'examples/lifeline.yml', '--output', target], { cwd: REPO });
      expect(run.code, run.stderr).toBe(0);
      expect(readFileSync(join(REPO, 'docs/runbook.md'), 'utf8')).toBe(readFileSync(target, 'utf8'));
    } finally {
      out.cleanup();
    }
  });
});
