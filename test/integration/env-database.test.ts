import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BACKUP_METADATA_FILE, type BackupMetadata } from '../../src/backup/metadata';
import { lifeline } from '../helpers/cli';
import { createDatabase, dropDatabase, sql, tempDir } from '../helpers/db';

const noEnv = { DATABASE_URL: undefined, REDIS_URL: undefined, LIFELINE_STORE: undefined, LIFELINE_ENV: undefined, LIFELINE_CONFIG: undefined, STAGING_DATABASE_URL: undefined };

/**
 * Issue 16 item 8: an environment that names its URL variable uses it, whatever DATABASE_URL
 * holds; DATABASE_URL applies only to environments that name none. Checked by the rows each
 * backup holds, as an operator would.
 */
describe('an environment backs up the database its config names', () => {
  let production: Awaited<ReturnType<typeof createDatabase>>;
  let staging: Awaited<ReturnType<typeof createDatabase>>;
  let work: ReturnType<typeof tempDir>;
  let configPath: string;

  beforeAll(async () => {
    work = tempDir('lifeline-envdb-');
    production = await createDatabase('envdb_prod');
    staging = await createDatabase('envdb_staging');
    await sql('CREATE TABLE orders (id int PRIMARY KEY); INSERT INTO orders SELECT generate_series(1, 5)', production.name);
    await sql('CREATE TABLE orders (id int PRIMARY KEY); INSERT INTO orders SELECT generate_series(1, 2)', staging.name);
    configPath = join(work.path, 'lifeline.yml');
    // As examples/lifeline.yml invites: production reads DATABASE_URL, staging its own variable, scratch names none.
    writeFileSync(
      configPath,
      [
        'version: 1',
        `store: ${join(work.path, 'store')}`,
        'environments:',
        '  production:',
        '    postgres:',
        '      urlEnv: DATABASE_URL',
        '  staging:',
        '    postgres:',
        '      urlEnv: STAGING_DATABASE_URL',
        '  scratch: {}',
        '',
      ].join('\n'),
    );
  });

  afterAll(async () => {
    if (production) await dropDatabase(production.name);
    if (staging) await dropDatabase(staging.name);
    work?.cleanup();
  });

  const run = (args: string[], env: Record<string, string | undefined>) => lifeline([...args, '--config', configPath], { env: { ...noEnv, ...env } });
  const backupRows = (path: string) => (JSON.parse(readFileSync(join(path, BACKUP_METADATA_FILE), 'utf8')) as BackupMetadata).rowCounts;

  it('backup --env staging reads STAGING_DATABASE_URL even though DATABASE_URL is set', async () => {
    const both = { DATABASE_URL: production.url, STAGING_DATABASE_URL: staging.url };
    const stagingRun = await run(['backup', '--env', 'staging', '--json'], both);
    expect(stagingRun.code, stagingRun.stderr).toBe(0);
    const stagingBackup = JSON.parse(stagingRun.stdout);
    expect(backupRows(stagingBackup.path)).toEqual({ 'public.orders': 2 });
    expect(JSON.parse(readFileSync(join(stagingBackup.path, BACKUP_METADATA_FILE), 'utf8')).database).toBe(staging.name);

    const productionRun = await run(['backup', '--env', 'production', '--json'], both);
    expect(productionRun.code, productionRun.stderr).toBe(0);
    expect(backupRows(JSON.parse(productionRun.stdout).path)).toEqual({ 'public.orders': 5 });
  });

  it('an environment that names no variable takes DATABASE_URL; --database-url beats both', async () => {
    const scratch = await run(['backup', '--env', 'scratch', '--json'], { DATABASE_URL: production.url, STAGING_DATABASE_URL: staging.url });
    expect(scratch.code, scratch.stderr).toBe(0);
    expect(backupRows(JSON.parse(scratch.stdout).path)).toEqual({ 'public.orders': 5 });

    const flagged = await run(['backup', '--env', 'production', '--database-url', staging.url, '--json'], { DATABASE_URL: production.url });
    expect(flagged.code, flagged.stderr).toBe(0);
    expect(backupRows(JSON.parse(flagged.stdout).path)).toEqual({ 'public.orders': 2 });
  });

  it('staging with its variable unset does not fall back to production: exit 2 naming the variable, nothing written', async () => {
    const before = await run(['backups', '--env', 'staging', '--json'], {});
    const unset = await run(['backup', '--env', 'staging', '--json'], { DATABASE_URL: production.url });
    expect(unset.code).toBe(2);
    const error = JSON.parse(unset.stdout).error;
    expect(error.code).toBe('NO_DATABASE_URL');
    expect(error.message).toContain('STAGING_DATABASE_URL');
    expect(error.fix).toContain('set STAGING_DATABASE_URL');
    const after = await run(['backups', '--env', 'staging', '--json'], {});
    expect(after.stdout).toBe(before.stdout);
  });

  it('config check names where each URL came from, and warns when two environments reach the same database', async () => {
    const distinct = await run(['config', 'check', '--json'], { DATABASE_URL: production.url, STAGING_DATABASE_URL: staging.url });
    expect(distinct.code, distinct.stderr).toBe(0);
    const ok = JSON.parse(distinct.stdout);
    expect(ok.urlSources).toEqual([
      'production: postgres URL from DATABASE_URL (environments.production.postgres.urlEnv)',
      'staging: postgres URL from STAGING_DATABASE_URL (environments.staging.postgres.urlEnv)',
      'scratch: postgres URL from DATABASE_URL',
    ]);
    expect(ok.environments.staging.postgres.urlSource).toBe('STAGING_DATABASE_URL (environments.staging.postgres.urlEnv)');
    // scratch falls back to DATABASE_URL, which is production's database: that is worth a warning.
    expect(ok.warnings).toEqual([
      expect.stringMatching(
        /^environments production \(URL from DATABASE_URL \(environments\.production\.postgres\.urlEnv\)\) and scratch \(URL from DATABASE_URL\) resolve to the same PostgreSQL server and database \(loopback:\d+\/envdb_prod_[0-9a-f]+\)/,
      ),
    ]);
    expect(distinct.stderr).toContain('resolve to the same PostgreSQL server and database');
    expect(distinct.stdout + distinct.stderr).not.toContain(production.conn.password!);

    // Staging pointed at production under another spelling of the same host is caught too.
    const aliased = staging.url.replace(staging.name, production.name).replace('127.0.0.1', 'localhost');
    const same = await run(['config', 'check', '--json'], { DATABASE_URL: production.url, STAGING_DATABASE_URL: aliased });
    expect(same.code, same.stderr).toBe(0);
    const warned = JSON.parse(same.stdout).warnings as string[];
    expect(warned).toHaveLength(1);
    expect(warned[0]).toMatch(/^environments production .* and staging \(URL from STAGING_DATABASE_URL .*\) and scratch .* resolve to the same/);

    const text = await run(['config', 'check', '--env', 'staging'], { STAGING_DATABASE_URL: staging.url });
    expect(text.code, text.stderr).toBe(0);
    expect(text.stdout).toContain('staging: postgres URL from STAGING_DATABASE_URL (environments.staging.postgres.urlEnv)');
  });
});
