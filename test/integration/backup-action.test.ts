import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { Catalog } from '../../src/catalog/store';
import { listBackups } from '../../src/backup/metadata';
import { formatPgUrl } from '../../src/runner/postgres-env';
import { parseGithubOutput, REPO, runBundle } from '../helpers/cli';
import { createSampleDatabase, dropDatabase, tempDir } from '../helpers/db';

/** The log with the runner's `::add-mask::` registrations removed: what a reader of the log sees. */
const visible = (text: string) =>
  text
    .split('\n')
    .filter((line) => !line.startsWith('::add-mask::'))
    .join('\n');

const noEnv = { DATABASE_URL: undefined, REDIS_URL: undefined, LIFELINE_STORE: undefined, LIFELINE_ENV: undefined, LIFELINE_CONFIG: undefined };

describe('the backup action bundle, run the way the GitHub runner runs it', () => {
  let db: Awaited<ReturnType<typeof createSampleDatabase>>;
  const work = tempDir('lifeline-backup-action-');

  beforeAll(async () => {
    execFileSync(process.execPath, [join(REPO, 'scripts/build.mjs'), 'backup'], { cwd: REPO, stdio: 'inherit' });
    db = await createSampleDatabase(1, 'act');
  }, 300_000);
  afterAll(async () => {
    await dropDatabase(db.name);
    work.cleanup();
  });

  function runnerFiles(name: string) {
    const dir = join(work.path, name);
    mkdirSync(dir);
    const output = join(dir, 'output');
    const summary = join(dir, 'summary');
    for (const f of [output, summary]) writeFileSync(f, '');
    return { dir, output, summary };
  }

  it('label pre-migration: outputs backup-id, sha256, bytes and path, and a summary', async () => {
    const gh = runnerFiles('ok');
    const store = join(gh.dir, 'store');
    const run = await runBundle(
      'backup',
      { label: 'pre-migration', release: 'v2.0.0', 'database-url': db.url, store },
      { env: { ...noEnv, GITHUB_OUTPUT: gh.output, GITHUB_STEP_SUMMARY: gh.summary } },
    );
    expect(run.code, run.stdout + run.stderr).toBe(0);
    expect(visible(run.stdout + run.stderr)).not.toContain(db.conn.password!);
    const outputs = parseGithubOutput(readFileSync(gh.output, 'utf8'));
    const [listed] = await listBackups(new Catalog(store), 'default');
    expect(outputs).toMatchObject({ 'backup-id': listed!.id, sha256: listed!.metadata.files.postgres.sha256, bytes: String(listed!.metadata.files.postgres.bytes), path: listed!.dir });
    expect(listed!.metadata).toMatchObject({ label: 'pre-migration', release: 'v2.0.0', verified: { ok: true } });
    expect(readFileSync(gh.summary, 'utf8')).toContain(`Backup ${listed!.id} (pre-migration)`);
  });

  it('fails the step (blocking the deploy) when the database cannot be backed up', async () => {
    const gh = runnerFiles('badpw');
    const store = join(gh.dir, 'store');
    const run = await runBundle(
      'backup',
      { label: 'pre-migration', 'database-url': formatPgUrl({ ...db.conn, password: 'wrong-password-77' }), store },
      { env: { ...noEnv, GITHUB_OUTPUT: gh.output, GITHUB_STEP_SUMMARY: gh.summary } },
    );
    expect(run.code).toBe(1);
    expect(run.stdout).toContain('::error::');
    expect(visible(run.stdout + run.stderr)).not.toContain('wrong-password-77');
    expect(run.stdout).toContain('password authentication failed');
    expect(parseGithubOutput(readFileSync(gh.output, 'utf8'))).toEqual({});
    expect(await listBackups(new Catalog(store), 'default')).toEqual([]);
  });

  it('fails the step when the new backup does not verify (here: a pg_restore that cannot read archives)', async () => {
    const gh = runnerFiles('noverify');
    const store = join(gh.dir, 'store');
    // Real pg_dump, pg_dumpall and psql; a pg_restore that fails, as a broken client install would.
    const bin = join(gh.dir, 'bin');
    mkdirSync(bin);
    for (const tool of ['pg_dump', 'pg_dumpall', 'psql']) symlinkSync(join(inject('pgBinDir'), tool), join(bin, tool));
    writeFileSync(join(bin, 'pg_restore'), '#!/bin/sh\necho "pg_restore: error: could not read input file" >&2\nexit 1\n');
    chmodSync(join(bin, 'pg_restore'), 0o755);
    const config = join(gh.dir, 'lifeline.yml');
    writeFileSync(config, `version: 1\nenvironments:\n  production:\n    postgres:\n      binDir: ${bin}\n`);
    const run = await runBundle(
      'backup',
      { label: 'pre-migration', env: 'production', config, 'database-url': db.url, store },
      { env: { ...noEnv, GITHUB_OUTPUT: gh.output, GITHUB_STEP_SUMMARY: gh.summary } },
    );
    expect(run.code).toBe(1);
    // Verification reads the stream as pg_dump writes it: a reader that fails fails the backup, and
    // nothing that did not verify is added to the catalog.
    expect(run.stdout).toMatch(/::error::.*pg_restore could not read the archive pg_dump wrote/);
    expect(await listBackups(new Catalog(store), 'production')).toEqual([]);
  });
});
