import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseGithubOutput, REPO, runBundle } from '../helpers/cli';
import { createSampleDatabase, dropDatabase, tempDir } from '../helpers/db';

/** What a reader of the job log sees: the runner hides `::add-mask::` lines and masks their values. */
const visible = (text: string) =>
  text
    .split('\n')
    .filter((line) => !line.startsWith('::add-mask::'))
    .join('\n');
const noEnv = { LIFELINE_STORE: undefined, LIFELINE_ENV: undefined, LIFELINE_CONFIG: undefined, DATABASE_URL: undefined };

describe('the tenant-export action bundle, run the way the GitHub runner runs it', () => {
  let db: Awaited<ReturnType<typeof createSampleDatabase>>;
  const dir = tempDir('lifeline-tenant-action-');

  beforeAll(async () => {
    execFileSync(process.execPath, [join(REPO, 'scripts/build.mjs'), 'tenant-export'], { cwd: REPO, stdio: 'inherit' });
    db = await createSampleDatabase(1, 'tenant_action');
  }, 300_000);
  afterAll(async () => {
    await dropDatabase(db.name);
    dir.cleanup();
  });

  it('exports a tenant, sets the outputs and never prints the database password', async () => {
    const files = { output: join(dir.path, 'output'), summary: join(dir.path, 'summary') };
    for (const f of Object.values(files)) writeFileSync(f, '');
    const store = join(dir.path, 'store');
    const run = await runBundle(
      'tenant-export',
      { tenant: 'tenant-002', collection: 'orders:tenant_id\npayments:order_id->orders.id', 'row-cap': '100', 'allow-truncation': 'true', archive: 'true', store, 'database-url': db.url },
      { env: { ...noEnv, GITHUB_OUTPUT: files.output, GITHUB_STEP_SUMMARY: files.summary } },
    );
    expect(run.code, run.stdout + run.stderr).toBe(0);
    const outputs = parseGithubOutput(readFileSync(files.output, 'utf8'));
    expect(outputs['export-id']).toMatch(/^\d{8}T\d+Z-[0-9a-f]{6}$/);
    expect(outputs.path).toBe(join(store, 'default', 'tenants', 'tenant-002', 'exports', outputs['export-id']!));
    expect(outputs.truncated).toBe('true');
    expect(outputs.rows).toBe('200');
    expect(outputs['archive-path']).toBe(join(outputs.path!, 'export.tar.gz'));
    const manifest = readFileSync(join(outputs.path!, 'export.json'));
    expect(outputs['manifest-sha256']).toBe(execFileSync('sha256sum', ['-'], { input: manifest }).toString().split(' ')[0]);
    expect(readFileSync(files.summary, 'utf8')).toContain('| orders | 100 |');
    expect(db.conn.password).toBeTruthy();
    expect(visible(run.stdout + run.stderr)).not.toContain(db.conn.password!);
  });
});
