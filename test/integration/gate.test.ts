import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Catalog } from '../../src/catalog/store';
import { createMemoryLogger } from '../../src/logger';
import { createBackup } from '../../src/backup/create';
import { formatPgUrl } from '../../src/runner/postgres-env';
import { parseGithubOutput, runBundle } from '../helpers/cli';
import { createSampleDatabase, dropDatabase, runner, tempDir } from '../helpers/db';

// The shipped bundles (dist/drill, dist/gate), run the way GitHub's runner runs them.
describe('drill and gate actions (bundles)', () => {
  let work: ReturnType<typeof tempDir>;
  let live: Awaited<ReturnType<typeof createSampleDatabase>>;
  let configPath: string;
  const created: string[] = [];

  const runAction = async (bundle: string, inputs: Record<string, string>) => {
    const outputFile = join(work.path, `${bundle}-${Date.now()}.out`);
    const summaryFile = join(work.path, `${bundle}-${Date.now()}.md`);
    writeFileSync(outputFile, '');
    writeFileSync(summaryFile, '');
    const run = await runBundle(bundle, { config: configPath, env: 'production', ...inputs }, { env: { GITHUB_OUTPUT: outputFile, GITHUB_STEP_SUMMARY: summaryFile, DATABASE_URL: live.url } });
    return { ...run, outputs: parseGithubOutput(readFileSync(outputFile, 'utf8')), summary: readFileSync(summaryFile, 'utf8') };
  };

  beforeAll(async () => {
    work = tempDir();
    live = await createSampleDatabase(1, 'gate_live');
    configPath = join(work.path, 'lifeline.yml');
    writeFileSync(configPath, ['version: 1', `store: ${join(work.path, 'store')}`, 'environments:', '  production:', '    rto: 10m', '    rpo: 1h', ''].join('\n'));
  });

  afterAll(async () => {
    for (const name of created) await dropDatabase(name);
    if (live) await dropDatabase(live.name);
    work?.cleanup();
  });

  it('gate fails closed with no backups and no drills, and says why in outputs, annotations and the summary', async () => {
    const run = await runAction('gate', {});
    expect(run.code).toBe(1);
    expect(run.outputs.passed).toBe('false');
    expect(run.outputs.reasons.split('\n')).toEqual([
      'no restore drill has run for production: run lifeline drill --env production',
      'no drill within 7d for production',
      'production has no verified backup: run lifeline verify latest --env production or lifeline drill --env production',
      'no drill of production measured an RTO',
      'no drill of production measured an RPO',
    ]);
    expect(run.stdout).toContain('::error title=release gate (production)::no restore drill has run');
    expect(run.summary).toContain('| check | value | limit | result |');
  });

  it('drill passes, its summary has the checks and the trend, and the gate then passes', async () => {
    await createBackup({ catalog: new Catalog(join(work.path, 'store')), environment: 'production', runner, conn: live.conn, label: 'manual', logger: createMemoryLogger() });
    for (let i = 0; i < 2; i++) {
      const name = `gate_drill_${i}_${process.pid}`;
      created.push(name);
      const run = await runAction('drill', { target: formatPgUrl({ ...live.conn, database: name }) });
      expect(run.code, run.stdout).toBe(0);
      expect(run.outputs.passed).toBe('true');
      expect(Number(run.outputs['rto-seconds'])).toBeGreaterThan(0);
      expect(JSON.parse(readFileSync(run.outputs.report!, 'utf8')).id).toBe(run.outputs['drill-id']);
      // The runner consumes ::add-mask:: lines; everything else it would print must be masked already.
      const printed = run.stdout.split('\n').filter((line) => !line.startsWith('::add-mask::'));
      expect(run.stdout).toContain(`::add-mask::${live.conn.password}`);
      expect(printed.join('\n')).not.toContain(live.conn.password!);
      expect(run.summary).toContain('| verify-backup | checksums | pass |');
      if (i === 1) expect(run.summary).toContain('xychart-beta');
    }
    const gate = await runAction('gate', {});
    expect(gate.code, gate.stdout).toBe(0);
    expect(gate.outputs).toMatchObject({ passed: 'true', reasons: '' });
  });
});
