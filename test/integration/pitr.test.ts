import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMemoryLogger } from '../../src/logger';
import { runPgBackRest, runPhysicalBackup, stanzaInfo } from '../../src/postgres/pgbackrest';
import { restorePointInTime } from '../../src/postgres/pitr';
import { formatPgUrl } from '../../src/runner/postgres-env';
import { PsqlSession, queryOnce } from '../../src/runner/psql';
import { resolveEnvironment, type EnvironmentSettings } from '../../src/settings/resolve';
import { lifeline } from '../helpers/cli';
import { runner, tempDir } from '../helpers/db';
import { startArchivingCluster, type ArchivingCluster } from '../helpers/pgbackrest-stanza';

describe('point-in-time recovery through pgBackRest', () => {
  let archiving: ArchivingCluster;
  let work: ReturnType<typeof tempDir>;
  let settings: EnvironmentSettings;
  let configPath: string;
  let liveUrl: string;
  let noted: string;

  const live = (sql: string, database = 'shop') => queryOnce<Record<string, unknown>>(runner, archiving.cluster.conn, sql, database);

  beforeAll(async () => {
    archiving = await startArchivingCluster();
    work = tempDir();
    liveUrl = formatPgUrl({ ...archiving.cluster.conn, database: 'shop' });
    configPath = join(work.path, 'lifeline.yml');
    writeFileSync(
      configPath,
      [
        'version: 1',
        'environments:',
        '  production:',
        '    rto: 10m',
        '    rpo: 1h',
        '    postgres:',
        '      database: shop',
        '      physical:',
        `        stanza: ${archiving.physical.stanza}`,
        `        configFile: ${archiving.physical.configFile}`,
        '',
      ].join('\n'),
    );
    settings = resolveEnvironment({ config: configPath, env: 'production', store: join(work.path, 'store') }, { env: { DATABASE_URL: liveUrl }, cwd: work.path });

    const admin = archiving.cluster.conn;
    const session = PsqlSession.open(runner, admin, { database: 'postgres' });
    await session.exec('CREATE DATABASE shop');
    await session.close();
    const shop = PsqlSession.open(runner, { ...admin, database: 'shop' });
    await shop.exec('CREATE TABLE orders (id int PRIMARY KEY, item text NOT NULL)');
    await shop.close();

    const backup = await runPhysicalBackup(settings, createMemoryLogger());
    expect(backup.type).toBe('full');

    const writer = PsqlSession.open(runner, { ...admin, database: 'shop' });
    await writer.exec("INSERT INTO orders VALUES (1, 'soup'), (2, 'bread'), (3, 'wine')");
    // The noted time is taken after the commit, as an operator would read a clock.
    await new Promise((r) => setTimeout(r, 1100));
    noted = String(await writer.queryValue<string>(`SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`));
    await new Promise((r) => setTimeout(r, 1100));
    await writer.exec("INSERT INTO orders VALUES (4, 'cake'), (5, 'tea')");
    await writer.exec('DELETE FROM orders WHERE id = 1');
    await writer.close();
    // check switches WAL and waits until the segment holding the later changes is archived.
    await runPgBackRest(archiving.physical, 'check', [], 'pgbackrest check');
  });

  afterAll(async () => {
    await archiving?.stop();
    work?.cleanup();
  });

  it('lists the physical backup pgBackRest took', async () => {
    const info = await stanzaInfo(archiving.physical);
    expect(info.backups).toHaveLength(1);
    expect(info.backups[0]!.databaseBytes).toBeGreaterThan(0);
  });

  it('restores exactly the rows committed before the noted time, and the live rows differ', async () => {
    const liveRows = await live('SELECT id FROM orders ORDER BY id');
    expect(liveRows.map((r) => r.id)).toEqual([2, 3, 4, 5]);

    const restored = await restorePointInTime(settings, noted, createMemoryLogger());
    try {
      const rows = await queryOnce<{ id: number; item: string }>(runner, restored.conn, 'SELECT id, item FROM orders ORDER BY id', 'shop');
      expect(rows).toEqual([
        { id: 1, item: 'soup' },
        { id: 2, item: 'bread' },
        { id: 3, item: 'wine' },
      ]);
      const [state] = await queryOnce<{ recovering: boolean }>(runner, restored.conn, 'SELECT pg_is_in_recovery() AS recovering', 'shop');
      expect(state!.recovering).toBe(false);
      expect(new Date(restored.lastReplayedCommit!).getTime()).toBeLessThanOrEqual(new Date(noted).getTime());
    } finally {
      await restored.stop();
    }
    // The live cluster is untouched by the drill.
    expect((await live('SELECT id FROM orders ORDER BY id')).map((r) => r.id)).toEqual([2, 3, 4, 5]);
  });

  it('lifeline drill --pitr restores to the noted time, runs the checks on exactly the first rows, and stores a report', async () => {
    const smoke = join(work.path, 'pitr-smoke.sql');
    writeFileSync(smoke, ['-- name: exactly the orders committed before the noted time', '-- expect: 1,2,3', "SELECT string_agg(id::text, ',' ORDER BY id) FROM orders", ''].join('\n'));
    const run = await lifeline(['drill', '--pitr', noted, '--smoke-sql', smoke, '--json', '--config', configPath, '--env', 'production', '--store', join(work.path, 'store')], {
      env: { DATABASE_URL: liveUrl },
    });
    expect(run.code, run.stderr).toBe(0);
    const report = JSON.parse(run.stdout);
    expect(report).toMatchObject({ mode: 'pitr', passed: true, pitrTarget: noted.replace('T', ' ').replace('Z', '+00') });
    const status = Object.fromEntries(report.checks.map((c: { name: string; status: string }) => [c.name, c.status]));
    expect(status).toMatchObject({
      'base backup before the target': 'pass',
      'pgbackrest restore exit': 'pass',
      'recovery finished and promoted': 'pass',
      'recovered up to the target, not past it': 'pass',
      'amcheck on B-tree indexes': 'pass',
      'smoke: exactly the orders committed before the noted time': 'pass',
    });
    expect(report.checks.find((c: { name: string }) => c.name.startsWith('smoke:')).detail).toBe('returned 1,2,3');
    expect(report.rto.seconds).toBeGreaterThan(0);
    // RPO of a point-in-time recovery: how far behind the live server the WAL archive is.
    expect(report.rpo.seconds).toBeGreaterThanOrEqual(0);
    expect(report.rpo.seconds).toBeLessThan(3600);
    expect(report.rpo).toMatchObject({ targetSeconds: 3600, met: true });
    expect(report.rpo.note).toMatch(/WAL archive lag: the live server last archived [0-9A-F]{24} at /);

    const wrong = join(work.path, 'pitr-wrong.sql');
    writeFileSync(wrong, ['-- expect: 2,3,4,5', "SELECT string_agg(id::text, ',' ORDER BY id) FROM orders", ''].join('\n'));
    const failing = await lifeline(['drill', '--pitr', noted, '--smoke-sql', wrong, '--json', '--config', configPath, '--env', 'production', '--store', join(work.path, 'store')], {
      env: { DATABASE_URL: liveUrl },
    });
    expect(failing.code).toBe(1);
    expect(JSON.parse(failing.stdout).failures).toEqual([expect.stringMatching(/returned 1,2,3, expected 2,3,4,5$/)]);

    // An RPO target the archive lag exceeds fails the drill, and says why.
    const tight = await lifeline(['drill', '--pitr', noted, '--rpo', '1s', '--json', '--config', configPath, '--env', 'production', '--store', join(work.path, 'store')], {
      env: { DATABASE_URL: liveUrl },
    });
    expect(tight.code).toBe(1);
    expect(JSON.parse(tight.stdout).failures).toEqual([expect.stringMatching(/^RPO missed the target 1s: the newest archived WAL is .+ behind the live server$/)]);
  });

  it('reads the same instant whatever the offset spelling: +00 through the CLI, +05:30 through the library', async () => {
    // The noted time, as "YYYY-MM-DD HH:MM:SS.ffffff+00" (psql's own spelling) and shifted to +05:30.
    const plus00 = noted.replace('T', ' ').replace('Z', '+00');
    const at = new Date(noted);
    const shifted = new Date(at.getTime() + 330 * 60_000)
      .toISOString()
      .replace('T', ' ')
      .replace(/\.\d+Z$/, '');
    const plus0530 = `${shifted}.${noted.split('.')[1]!.replace('Z', '')}+05:30`;
    const smoke = join(work.path, 'pitr-offset-smoke.sql');
    writeFileSync(smoke, ['-- name: orders before the noted time', '-- expect: 1,2,3', "SELECT string_agg(id::text, ',' ORDER BY id) FROM orders", ''].join('\n'));
    const run = await lifeline(['drill', '--pitr', plus00, '--smoke-sql', smoke, '--json', '--config', configPath, '--env', 'production', '--store', join(work.path, 'store')], {
      env: { DATABASE_URL: liveUrl },
    });
    expect(run.code, run.stderr).toBe(0);
    const report = JSON.parse(run.stdout);
    expect(report).toMatchObject({ mode: 'pitr', passed: true, pitrTarget: plus00 });
    expect(report.checks.find((c: { name: string }) => c.name.startsWith('smoke:')).detail).toBe('returned 1,2,3');

    const restored = await restorePointInTime(settings, plus0530, createMemoryLogger());
    try {
      const rows = await queryOnce<{ id: number }>(runner, restored.conn, 'SELECT id FROM orders ORDER BY id', 'shop');
      expect(rows.map((r) => r.id)).toEqual([1, 2, 3]);
    } finally {
      await restored.stop();
    }
  });

  it('fails fast, with the reason, for a target past the newest archived WAL', async () => {
    const started = Date.now();
    await expect(restorePointInTime(settings, new Date(Date.now() + 60_000).toISOString(), createMemoryLogger())).rejects.toThrow(/recovery ended before configured recovery target was reached/);
    expect(Date.now() - started).toBeLessThan(120_000);
  });

  it('refuses a time without a zone (exit 2) before touching anything', async () => {
    await expect(restorePointInTime(settings, '2026-01-01 10:00:00', createMemoryLogger())).rejects.toMatchObject({ code: 'BAD_PITR_TIME', exitCode: 2 });
  });

  it('fails clearly for a time before the first base backup', async () => {
    await expect(restorePointInTime(settings, '2000-01-01T00:00:00Z', createMemoryLogger())).rejects.toMatchObject({ code: 'PITR_NO_BASE_BACKUP', exitCode: 1 });
  });
});
