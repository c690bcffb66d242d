import { readdirSync, readFileSync, writeFileSync, openSync, writeSync, closeSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Catalog } from '../../src/catalog/store';
import { createMemoryLogger } from '../../src/logger';
import { createBackup } from '../../src/backup/create';
import { formatPgUrl } from '../../src/runner/postgres-env';
import { lifeline } from '../helpers/cli';
import { createSampleDatabase, dropDatabase, query, runner, sql, tableCounts, tempDir } from '../helpers/db';

const ENV = 'production';

describe('lifeline drill, drills and gate against real PostgreSQL', () => {
  let work: ReturnType<typeof tempDir>;
  let live: Awaited<ReturnType<typeof createSampleDatabase>>;
  let catalog: Catalog;
  let configPath: string;
  let smokePath: string;
  const drillDatabases: string[] = [];

  const cli = (args: string[]) => lifeline([...args, '--config', configPath, '--env', ENV], { env: { DATABASE_URL: live.url, LIFELINE_STORE: undefined } });
  const drillTargetUrl = () => {
    const name = `drill_${Math.random().toString(16).slice(2, 10)}`;
    drillDatabases.push(name);
    return formatPgUrl({ ...live.conn, database: name });
  };
  const backup = () => createBackup({ catalog, environment: ENV, runner, conn: live.conn, label: 'manual', logger: createMemoryLogger() });

  beforeAll(async () => {
    work = tempDir();
    live = await createSampleDatabase(2, 'drill_live');
    catalog = new Catalog(join(work.path, 'store'));
    configPath = join(work.path, 'lifeline.yml');
    smokePath = join(work.path, 'smoke.sql');
    writeFileSync(
      configPath,
      [
        'version: 1',
        `store: ${join(work.path, 'store')}`,
        'environments:',
        `  ${ENV}:`,
        '    rto: 10m',
        '    rpo: 1h',
        '    owner: ops-oncall',
        '    drill:',
        '      maxAge: 7d',
        '      window: 1d',
        '',
      ].join('\n'),
    );
    const [orders] = await query<{ n: number }>('SELECT count(*) AS n FROM orders', live.name);
    writeFileSync(
      smokePath,
      ['-- name: every order survived', `-- expect: ${orders!.n}`, 'SELECT count(*) FROM orders;', '', '-- expect: 0', 'SELECT count(*) FROM order_items WHERE quantity <= 0', ''].join('\n'),
    );
    await backup();
  });

  afterAll(async () => {
    for (const name of drillDatabases) await dropDatabase(name);
    if (live) await dropDatabase(live.name);
    work?.cleanup();
  });

  it('passes on a good backup in a throwaway cluster, records every check, and the gate passes', async () => {
    const run = await cli(['drill', '--smoke-sql', smokePath, '--json']);
    expect(run.code, run.stderr).toBe(0);
    const report = JSON.parse(run.stdout);
    expect(report.passed).toBe(true);
    expect(report.target.kind).toBe('throwaway-cluster');
    const byName = Object.fromEntries(report.checks.map((c: { name: string; status: string }) => [c.name, c.status]));
    expect(byName).toMatchObject({
      checksums: 'pass',
      'pg_restore exit': 'pass',
      'row counts match backup.json': 'pass',
      'schema fingerprint matches': 'pass',
      'migration head matches': 'pass',
      'amcheck on B-tree indexes': 'pass',
      'smoke: every order survived': 'pass',
    });
    expect(report.checks.find((c: { name: string }) => c.name === 'amcheck on B-tree indexes').detail).toMatch(/^\d+ indexes intact/);
    expect(report.rto.seconds).toBeGreaterThan(0);
    expect(report.rto.met).toBe(true);
    expect(report.rpo.met).toBe(true);
    // The drill walks the runbook: every runbook step is in the report, performed or skipped with a reason.
    expect(report.steps.map((s: { id: string }) => s.id)).toEqual([
      'stop-writes',
      'select-backup',
      'verify-backup',
      'restore',
      'check-data',
      'check-indexes',
      'smoke-queries',
      'start-app',
      'switch-over',
    ]);
    expect(report.steps.find((s: { id: string }) => s.id === 'stop-writes').status).toBe('skipped');

    const list = await cli(['drills', '--json']);
    expect(list.code).toBe(0);
    const drills = JSON.parse(list.stdout);
    expect(drills[0]).toMatchObject({ id: report.id, passed: true, rtoSeconds: report.rto.seconds, rpoSeconds: report.rpo.seconds, createdAt: report.createdAt });

    const gate = await cli(['gate']);
    expect(gate.code, gate.stdout + gate.stderr).toBe(0);
    expect(gate.stdout).toMatch(/newest drill passed\s+\S+: passed/);
    expect(gate.stdout).toContain('PASSED');
  });

  it('refuses (exit 3) a target that is the live database, under any loopback spelling, and changes nothing', async () => {
    const before = await tableCounts(live.name);
    const drillsBefore = JSON.parse((await cli(['drills', '--json'])).stdout).length;
    for (const host of ['127.0.0.1', 'localhost']) {
      const target = live.url.replace('127.0.0.1', host);
      const run = await cli(['drill', '--target', target]);
      expect(run.code, run.stderr).toBe(3);
      expect(run.stderr).toContain("the environment's live database");
      expect(run.stderr).toContain('fix:');
      expect(run.stderr).not.toContain(live.conn.password!);
    }
    expect(await tableCounts(live.name)).toEqual(before);
    expect(JSON.parse((await cli(['drills', '--json'])).stdout)).toHaveLength(drillsBefore);
  });

  it('refuses the live database under an address that is not a loopback spelling, by its system identifier', async () => {
    // 0.0.0.0 reaches this host's server, but names no loopback host: only pg_control_system() can tell.
    const before = await tableCounts(live.name);
    const run = await cli(['drill', '--target', live.url.replace('127.0.0.1', '0.0.0.0')]);
    expect(run.code, run.stderr).toBe(3);
    expect(run.stderr).toMatch(/is the environment's live database under another address \(same system identifier \d+\)/);
    expect(await tableCounts(live.name)).toEqual(before);
  });

  it('restores into a given isolated database, then drops what it created', async () => {
    const target = drillTargetUrl();
    const run = await cli(['drill', '--target', target, '--json']);
    expect(run.code, run.stderr).toBe(0);
    const report = JSON.parse(run.stdout);
    expect(report.target.kind).toBe('url');
    expect(report.target.description).not.toContain(live.conn.password!);
    const name = drillDatabases[drillDatabases.length - 1]!;
    expect(await query(`SELECT 1 FROM pg_database WHERE datname = '${name}'`, 'postgres')).toHaveLength(0);
  });

  it('fails a smoke query whose result differs, and says which', async () => {
    const wrong = join(work.path, 'wrong.sql');
    writeFileSync(wrong, '-- name: impossible\n-- expect: 42\nSELECT count(*) FROM tenants WHERE id IS NULL\n');
    const run = await cli(['drill', '--target', drillTargetUrl(), '--smoke-sql', wrong, '--json']);
    expect(run.code).toBe(1);
    const report = JSON.parse(run.stdout);
    expect(report.passed).toBe(false);
    expect(report.failures).toEqual(['smoke: impossible: returned 0, expected 42']);
  });

  it('fails on an RPO miss (backup older than the target) even when every check passes', async () => {
    await new Promise((r) => setTimeout(r, 2100));
    const run = await cli(['drill', '--target', drillTargetUrl(), '--rpo', '2s', '--json']);
    expect(run.code).toBe(1);
    const report = JSON.parse(run.stdout);
    expect(report.checks.every((c: { status: string }) => c.status !== 'fail')).toBe(true);
    expect(report.rpo.met).toBe(false);
    expect(report.rpo.seconds).toBeGreaterThan(2);
    expect(report.failures).toHaveLength(1);
    expect(report.failures[0]).toMatch(/^RPO missed the target 2s: the backup was [\d.]+[smhd] old$/);
  });

  it('fails a stale drill at the gate (exit 1, one line per reason)', async () => {
    await new Promise((r) => setTimeout(r, 1100));
    const gate = await cli(['gate', '--max-drill-age', '1s']);
    expect(gate.code).toBe(1);
    expect(gate.stdout).toMatch(/newest drill age .* FAIL/);
    expect(gate.stderr).toMatch(/error: the newest drill \S+ is [\d.]+[smhd] old; the limit is 1s/);
  });

  it('fails a drill of a corrupted backup before restoring it, and the gate then fails', async () => {
    const entry = await backup();
    const dump = join(entry.dir, entry.metadata.files.postgres.name);
    const fd = openSync(dump, 'r+');
    writeSync(fd, Buffer.from([0xff ^ readFileSync(dump)[Math.floor(statSync(dump).size / 2)]!]), 0, 1, Math.floor(statSync(dump).size / 2));
    closeSync(fd);

    const run = await cli(['drill', '--json']);
    expect(run.code).toBe(1);
    const report = JSON.parse(run.stdout);
    expect(report.backup.id).toBe(entry.id);
    const status = Object.fromEntries(report.checks.map((c: { name: string; status: string }) => [c.name, c.status]));
    expect(status.checksums).toBe('fail');
    expect(status['Restore into the database']).toBe('skipped');
    expect(report.rto.seconds).toBeNull();
    expect(report.failures[0]).toMatch(/^checksums: postgres.dump checksum: sha256 is/);

    const gate = await cli(['gate']);
    expect(gate.code).toBe(1);
    expect(gate.stderr).toContain(`the newest drill ${report.id} failed: checksums`);
    expect(readdirSync(join(work.path, 'store', ENV, 'drills')).filter((n) => !n.startsWith('.'))).toHaveLength(5);
  });

  it('prints the drills as a readable table, newest first', async () => {
    const run = await cli(['drills']);
    expect(run.code).toBe(0);
    const lines = run.stdout.trim().split('\n');
    expect(lines[0]).toMatch(/^id\s+created\s+mode\s+backup\s+result\s+RTO\s+RPO$/);
    expect(lines[2]).toContain('FAILED');
  });
});
