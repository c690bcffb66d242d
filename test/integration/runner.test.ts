import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { inject, afterAll, beforeAll, describe, expect, it } from 'vitest';
import { streamToFile } from '../../src/catalog/files';
import { LocalRunner, runChecked, runText } from '../../src/runner/runner';
import { pgEnv, parsePgUrl } from '../../src/runner/postgres-env';
import { PsqlSession } from '../../src/runner/psql';
import { SecretMasker } from '../../src/logger';
import { SAMPLE_MIGRATION_HEAD } from '../helpers/sample-dataset';
import { createSampleDatabase, dropDatabase, tableCounts, tempDir } from '../helpers/db';

describe('tool runner against the real services', () => {
  let db: Awaited<ReturnType<typeof createSampleDatabase>>;
  const dir = tempDir();
  beforeAll(async () => {
    db = await createSampleDatabase(1);
  });
  afterAll(async () => {
    await dropDatabase(db.name);
    dir.cleanup();
  });

  it('loads the same sample dataset deterministically', async () => {
    const counts = await tableCounts(db.name);
    const again = await createSampleDatabase(1);
    try {
      expect(await tableCounts(again.name)).toEqual(counts);
      expect(counts['public.orders']).toBe(2600);
      expect(counts['public.tenants']).toBe(5);
      expect(counts['public.order_items']).toBeGreaterThan(counts['public.orders']!);
    } finally {
      await dropDatabase(again.name);
    }
  });

  it('keeps one psql session (and its transaction) across queries', async () => {
    const runner = new LocalRunner();
    const session = PsqlSession.open(runner, db.conn);
    try {
      await session.exec('BEGIN ISOLATION LEVEL REPEATABLE READ');
      const snapshot = await session.queryValue<string>('SELECT pg_export_snapshot()');
      expect(snapshot).toMatch(/^[0-9A-F]+-[0-9A-F]+-\d+$/);
      const rows = await session.query<{ version_num: string }>('SELECT version_num FROM alembic_version');
      expect(rows).toEqual([{ version_num: SAMPLE_MIGRATION_HEAD }]);
      // Text with tabs, quotes and newlines survives the round trip.
      expect(await session.queryValue(`SELECT E'a\\tb\\n"c"' AS v`)).toBe('a\tb\n"c"');
      await session.exec('COMMIT');
    } finally {
      await session.close();
    }
  });

  it('reports a failing query with the server message', async () => {
    const session = PsqlSession.open(new LocalRunner(), db.conn);
    await expect(session.query('SELECT * FROM no_such_table')).rejects.toThrow(/no_such_table/);
    await session.close();
  });

  it('streams pg_dump into a file, hashing in the same pass', async () => {
    const runner = new LocalRunner();
    const running = runner.start({ tool: 'pg_dump', args: ['-Fc', '--no-sync'], env: pgEnv(db.conn) });
    const path = join(dir.path, 'db.dump');
    const [hashed, result] = await Promise.all([streamToFile(running.stdout, path), running.done]);
    expect(result.exitCode).toBe(0);
    const sha = spawnSync('sha256sum', [path], { encoding: 'utf8' }).stdout.split(' ')[0];
    expect(hashed.sha256).toBe(sha);
    expect(spawnSync('pg_restore', ['--list', path]).status).toBe(0);
  });

  it('masks the password in the error of a wrong-password connection', async () => {
    const masker = new SecretMasker();
    const conn = { ...parsePgUrl(inject('pgUrl')), password: 'definitely-wrong-pw' };
    masker.add(conn.password);
    const runner = new LocalRunner({ masker });
    const error = await runChecked(runner, { tool: 'psql', args: ['-X', '-c', 'select 1'], env: pgEnv(conn) }, 'connecting').catch((e: Error) => e);
    expect(error).toBeInstanceOf(Error);
    expect((error as Error).message).toMatch(/password authentication failed/);
    expect((error as Error).message).not.toContain('definitely-wrong-pw');
  });

  it('runs redis-cli against the real Redis with the password kept off the command line', async () => {
    const url = new URL(inject('redisUrl'));
    const runner = new LocalRunner();
    const result = await runText(runner, { tool: 'redis-cli', args: ['-h', url.hostname, '-p', url.port, 'PING'], env: { REDISCLI_AUTH: decodeURIComponent(url.password) } });
    expect(result.stdout.trim()).toBe('PONG');
  });

  it('says which tool is missing and how to fix it', async () => {
    const runner = new LocalRunner();
    await expect(runText(runner, { tool: 'pg_dump_does_not_exist', args: [] })).rejects.toMatchObject({ code: 'TOOL_MISSING' });
  });
});
