import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runPgBackRest, runPhysicalBackup } from '../../src/postgres/pgbackrest';
import { createMemoryLogger } from '../../src/logger';
import { findLeftovers, type Leftover } from '../../src/runner/leftovers';
import { stopPid, waitFor } from '../../src/runner/ports';
import { formatPgUrl } from '../../src/runner/postgres-env';
import { PsqlSession } from '../../src/runner/psql';
import { resolveEnvironment } from '../../src/settings/resolve';
import { cliArgv, lifeline, REPO, type CliRun } from '../helpers/cli';
import { runner, tempDir } from '../helpers/db';
import { startArchivingCluster, type ArchivingCluster } from '../helpers/pgbackrest-stanza';

/** Running, not a zombie: a stopped server reparented to PID 1 may wait there a while before it is reaped. */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/**
 * Issue 16 item 7 for point-in-time drills, and two adversarial cases: a PITR drill killed while
 * its server runs on the restored copy, and a WAL archive with a segment missing.
 */
describe('point-in-time drills: killed, and with a gap in the WAL archive', () => {
  let archiving: ArchivingCluster;
  let work: ReturnType<typeof tempDir>;
  let configPath: string;
  let liveUrl: string;
  let beforeGap: string;
  const children: ChildProcess[] = [];

  const writer = () => PsqlSession.open(runner, { ...archiving.cluster.conn, database: 'shop' });
  const utcNow = async (session: PsqlSession) => String(await session.queryValue<string>(`SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'`));
  const drill = (args: string[]) => lifeline(['drill', ...args, '--json', '--config', configPath, '--env', 'production'], { env: { DATABASE_URL: liveUrl, LIFELINE_STORE: undefined } });

  beforeAll(async () => {
    archiving = await startArchivingCluster('gap');
    work = tempDir('lifeline-pitr-kill-');
    liveUrl = formatPgUrl({ ...archiving.cluster.conn, database: 'shop' });
    configPath = join(work.path, 'lifeline.yml');
    writeFileSync(
      configPath,
      [
        'version: 1',
        `store: ${join(work.path, 'store')}`,
        'environments:',
        '  production:',
        '    postgres:',
        '      database: shop',
        '      physical:',
        `        stanza: ${archiving.physical.stanza}`,
        `        configFile: ${archiving.physical.configFile}`,
        '',
      ].join('\n'),
    );
    const admin = PsqlSession.open(runner, archiving.cluster.conn, { database: 'postgres' });
    await admin.exec('CREATE DATABASE shop');
    await admin.close();
    const shop = writer();
    await shop.exec('CREATE TABLE orders (id int PRIMARY KEY)');
    await shop.close();
    const settings = resolveEnvironment({ config: configPath, env: 'production' }, { env: { DATABASE_URL: liveUrl }, cwd: work.path });
    await runPhysicalBackup(settings, createMemoryLogger());
    const session = writer();
    await session.exec('INSERT INTO orders SELECT generate_series(1, 3)');
    await new Promise((r) => setTimeout(r, 1100));
    beforeGap = await utcNow(session);
    await new Promise((r) => setTimeout(r, 1100));
    await session.exec('INSERT INTO orders VALUES (4)');
    await session.close();
    await runPgBackRest(archiving.physical, 'check', [], 'pgbackrest check');
  });

  afterAll(async () => {
    for (const child of children) if (child.pid && alive(child.pid)) await stopPid(child.pid, 'SIGKILL', 1000);
    await archiving?.stop();
    work?.cleanup();
  });

  it('kill -9 while the point-in-time server runs on the restored copy: the next drill stops it by pid and deletes the copy', async () => {
    const smoke = join(work.path, 'slow.sql');
    writeFileSync(smoke, ['-- name: slow smoke query', '-- expect: 1', 'SELECT 1 FROM pg_sleep(30)', ''].join('\n'));
    const env: NodeJS.ProcessEnv = { ...process.env, DATABASE_URL: liveUrl };
    delete env.LIFELINE_STORE;
    const child = spawn(process.execPath, [...cliArgv(), 'drill', '--pitr', beforeGap, '--smoke-sql', smoke, '--config', configPath, '--env', 'production'], {
      cwd: REPO,
      env,
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    children.push(child);
    let stderr = '';
    child.stderr!.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    const closed = new Promise<void>((resolve) => child.on('close', () => resolve()));
    // Kill once the drill says it recovered (its server is then up, and the slow query holds it there).
    await waitFor(async () => /recovered to .* from base backup/.test(stderr), { timeoutMs: 240_000, what: 'the point-in-time recovery' });
    const mine = () => findLeftovers().filter((l) => l.owner.pid === child.pid);
    let server: Leftover | undefined;
    await waitFor(async () => Boolean((server = mine().find((l) => l.kind === 'cluster' && l.pid))), { timeoutMs: 10_000, what: 'the server record' });
    const copy = mine().find((l) => l.kind === 'directory')!;
    process.kill(child.pid!, 'SIGKILL');
    await closed;
    // As it was: the server on the restored copy of production outlives the drill.
    expect(alive(server!.pid!)).toBe(true);
    expect(existsSync(join(copy.path!, 'data', 'PG_VERSION'))).toBe(true);

    // Another drill on this host (a parallel test file) may reap them first; the end state below is checked either way.
    const unreaped = mine().length > 0;
    const next = await drill(['--pitr', beforeGap]);
    expect(next.code, next.stderr).toBe(0);
    expect(JSON.parse(next.stdout)).toMatchObject({ mode: 'pitr', passed: true });
    if (unreaped) expect(next.stderr).toContain(`removed what a killed drill left: point-in-time server on a copy of stanza gap: PostgreSQL server pid ${server!.pid}`);
    if (unreaped) expect(next.stderr).toContain(`removed what a killed drill left: point-in-time copy of stanza gap: directory ${copy.path}`);
    expect(alive(server!.pid!)).toBe(false);
    expect(existsSync(copy.path!)).toBe(false);
    expect(mine()).toEqual([]);
  }, 600_000);

  it('a WAL segment missing from the archive: the drill fails and says recovery ended early, never passes at an earlier point', async () => {
    const session = writer();
    await session.exec('SELECT pg_switch_wal()');
    await session.exec('INSERT INTO orders SELECT generate_series(100, 199)');
    const lost = String(await session.queryValue<string>('SELECT pg_walfile_name(pg_current_wal_lsn())'));
    await session.exec('SELECT pg_switch_wal()');
    await session.exec('INSERT INTO orders SELECT generate_series(200, 299)');
    await session.exec('SELECT pg_switch_wal()');
    await new Promise((r) => setTimeout(r, 1100));
    const afterGap = await utcNow(session);
    await session.close();
    await runPgBackRest(archiving.physical, 'check', [], 'pgbackrest check');

    // Delete the segment from the repository, as a failed upload or a pruning mistake would.
    const archiveDir = join(archiving.dir, 'repo', 'archive', 'gap');
    const timelineDirs = readdirSync(archiveDir).filter((n) => /^\d+-\d+$/.test(n));
    let removed = 0;
    for (const version of timelineDirs) {
      const segmentDir = join(archiveDir, version, lost.slice(0, 16));
      if (!existsSync(segmentDir)) continue;
      for (const file of readdirSync(segmentDir).filter((n) => n.startsWith(lost))) {
        rmSync(join(segmentDir, file));
        removed++;
      }
    }
    expect(removed).toBe(1);

    const run = await drill(['--pitr', afterGap]);
    expect(run.code, run.stderr).toBe(1);
    const report = JSON.parse(run.stdout);
    expect(report.passed).toBe(false);
    expect(report.failures.join('\n')).toMatch(/recovery ended before configured recovery target was reached/);
    expect(report.checks.find((c: { name: string }) => c.name === 'recovered up to the target, not past it')?.status).not.toBe('pass');
    expect(findLeftovers().filter((l) => l.purpose.includes('stanza gap'))).toEqual([]);

    // A target before the gap still recovers: the failure is the gap's, not the drill's.
    const earlier = await drill(['--pitr', beforeGap]);
    expect(earlier.code, earlier.stderr).toBe(0);
  }, 600_000);
});
