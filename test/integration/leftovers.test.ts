import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { findLeftovers, leftoverDir, reapLeftovers, recordLeftover } from '../../src/runner/leftovers';
import { stopPid, waitFor } from '../../src/runner/ports';
import { lifeline, REPO } from '../helpers/cli';

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

/** A pid that is certainly gone: a process that ran and exited. */
async function deadPid(): Promise<number> {
  const child = spawn('true');
  await new Promise((resolve) => child.on('close', resolve));
  return child.pid!;
}

/** Writes a record as a hostile or stale file would look, bypassing recordLeftover. */
function plant(name: string, record: Record<string, unknown>): string {
  mkdirSync(leftoverDir(), { recursive: true, mode: 0o700 });
  const path = join(leftoverDir(), `${name}-${process.pid}-${Math.random().toString(16).slice(2)}.json`);
  writeFileSync(path, JSON.stringify(record), { mode: 0o600 });
  return path;
}

describe('drill leftovers: records, doctor and the reaper (issue 16 item 7)', () => {
  const cleanups: Array<() => void | Promise<void>> = [];
  afterAll(async () => {
    for (const c of cleanups.reverse()) await c();
  });

  it("a killed process's throwaway server is listed by doctor with its remove command, then stopped by pid and deleted by the reaper", async () => {
    const script = join(mkdtempSync(join(tmpdir(), 'lifeline-leftover-child-')), 'child.mts');
    cleanups.push(() => rmSync(join(script, '..'), { recursive: true, force: true }));
    writeFileSync(
      script,
      `import { startThrowawayCluster } from ${JSON.stringify(join(REPO, 'src/postgres/cluster.ts'))};\nconst c = await startThrowawayCluster({ fast: true, purpose: 'leftover test' });\nconsole.log('READY ' + c.dataDir);\nsetInterval(() => {}, 1000);\n`,
    );
    const child = spawn(process.execPath, ['--import', 'tsx', script], { cwd: REPO, stdio: ['ignore', 'pipe', 'inherit'] });
    cleanups.push(async () => {
      if (alive(child.pid!)) await stopPid(child.pid!, 'SIGKILL', 1000);
    });
    let out = '';
    child.stdout!.setEncoding('utf8').on('data', (c: string) => (out += c));
    await waitFor(async () => out.includes('READY'), { timeoutMs: 90_000, what: 'the child cluster' });
    const dataDir = /READY (\S+)/.exec(out)![1]!;
    const record = findLeftovers().find((l) => l.dataDir === dataDir)!;
    expect(record).toMatchObject({ kind: 'cluster', state: 'in-use', purpose: 'leftover test' });
    expect(record.pid).toBeGreaterThan(0);
    // Its copy is reachable on 127.0.0.1 only with its random password: no trust for TCP, not even as postgres.
    const port = /^port = (\d+)$/m.exec(readFileSync(join(dataDir, 'postgresql.auto.conf'), 'utf8'))![1]!;
    const env = { ...process.env, PGPASSWORD: '', PGPASSFILE: '/dev/null' };
    const noPassword = spawnSync('psql', ['-h', '127.0.0.1', '-p', port, '-U', 'postgres', '-w', '-d', 'postgres', '-c', 'SELECT 1'], { env, encoding: 'utf8' });
    expect(noPassword.status).not.toBe(0);
    expect(noPassword.stderr).toMatch(/password/);
    // Its owner runs: the reaper leaves it alone.
    const early = await reapLeftovers();
    expect(early.inUse.join('\n')).toContain(`server pid ${record.pid}`);
    expect(alive(record.pid!)).toBe(true);

    child.kill('SIGKILL');
    await new Promise((resolve) => child.on('close', resolve));
    expect(alive(record.pid!)).toBe(true);

    const store = mkdtempSync(join(tmpdir(), 'lifeline-doctor-store-'));
    cleanups.push(() => rmSync(store, { recursive: true, force: true }));
    const doctor = await lifeline(['doctor', '--store', store, '--json'], { env: { DATABASE_URL: undefined, LIFELINE_CONFIG: undefined, LIFELINE_STORE: undefined } });
    expect(doctor.code, doctor.stderr).toBe(1);
    const listed = JSON.parse(doctor.stdout).drills.find((d: { description: string }) => d.description.includes(`server pid ${record.pid}`));
    expect(listed).toMatchObject({ kind: 'cluster', remove: expect.stringMatching(new RegExp(`^kill -QUIT ${record.pid} && rm -rf -- '${record.path}'`)) });

    const reaped = await reapLeftovers();
    expect(reaped.removed.join('\n')).toContain(`leftover test: PostgreSQL server pid ${record.pid} on ${dataDir}`);
    expect(alive(record.pid!)).toBe(false);
    expect(existsSync(record.path!)).toBe(false);
    expect(findLeftovers().filter((l) => l.dataDir === dataDir)).toEqual([]);
  }, 180_000);

  it('a hostile or stale record never makes the reaper kill another process or delete outside its own temp directories', async () => {
    const dead = await deadPid();
    const owner = { pid: dead, started: '1' };
    const createdAt = new Date().toISOString();
    // A live process that is not a postmaster, named by a postmaster.pid in a data directory.
    const sleeper = spawn('sleep', ['300'], { stdio: 'ignore' });
    cleanups.push(() => {
      sleeper.kill('SIGKILL');
    });
    const fake = mkdtempSync(join(tmpdir(), 'lifeline-pg-hostile-'));
    mkdirSync(join(fake, 'data'));
    writeFileSync(join(fake, 'data', 'postmaster.pid'), `${sleeper.pid}\n${join(fake, 'data')}\n`);
    plant('cluster', { kind: 'cluster', owner, path: fake, dataDir: join(fake, 'data'), purpose: 'pid of another process', createdAt });
    // Paths outside what Lifeline creates, a traversal, a symlink named like ours, a crafted container name.
    const victim = mkdtempSync(join(tmpdir(), 'victim-'));
    writeFileSync(join(victim, 'keep'), 'precious');
    cleanups.push(() => rmSync(victim, { recursive: true, force: true }));
    const link = join(tmpdir(), `lifeline-link-${process.pid}`);
    symlinkSync(victim, link);
    cleanups.push(() => rmSync(link, { force: true }));
    const planted = [
      plant('directory', { kind: 'directory', owner, path: victim, purpose: 'not ours by name', createdAt }),
      plant('directory', { kind: 'directory', owner, path: `${tmpdir()}/lifeline-x/../${victim.split('/').pop()}`, purpose: 'traversal', createdAt }),
      plant('directory', { kind: 'directory', owner, path: link, purpose: 'symlink', createdAt }),
      plant('container', { kind: 'container', owner, container: 'lifeline-drill-x; rm -rf /', purpose: 'crafted name', createdAt }),
    ];
    // A record file that is itself a symlink (to a valid-looking record elsewhere) is not read.
    const elsewhere = join(victim, 'record.json');
    writeFileSync(elsewhere, JSON.stringify({ kind: 'directory', owner, path: victim, purpose: 'via symlink', createdAt }));
    const symlinkRecord = join(leftoverDir(), `directory-symlink-${process.pid}.json`);
    symlinkSync(elsewhere, symlinkRecord);
    cleanups.push(() => rmSync(symlinkRecord, { force: true }));

    const reaped = await reapLeftovers();
    expect(alive(sleeper.pid!)).toBe(true);
    expect(readFileSync(join(victim, 'keep'), 'utf8')).toBe('precious');
    expect([...reaped.removed, ...reaped.failed, ...reaped.inUse].join('\n')).not.toMatch(/not ours by name|traversal|symlink|crafted name|via symlink/);
    // The fake data directory is ours by name and its owner is dead: deleted, but its "server" was never signalled.
    expect(reaped.removed.join('\n')).toContain('pid of another process: PostgreSQL (not running)');
    expect(existsSync(fake)).toBe(false);
    for (const path of planted) rmSync(path, { force: true });
  });

  it('a record of a live owner whose pid was reused is treated as dead (start time differs)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'lifeline-pitr-reused-'));
    const marker = plant('directory', { kind: 'directory', owner: { pid: process.pid, started: '1' }, path: dir, purpose: 'reused pid', createdAt: new Date().toISOString() });
    expect(findLeftovers().find((l) => l.marker === marker)?.state).toBe('orphaned');
    const forget = recordLeftover({ kind: 'directory', path: dir, purpose: 'mine, alive' });
    expect(findLeftovers().find((l) => l.purpose === 'mine, alive')?.state).toBe('in-use');
    const reaped = await reapLeftovers();
    expect(reaped.removed.join('\n')).toContain('reused pid');
    expect(reaped.inUse.join('\n')).toContain('mine, alive');
    forget();
    expect(findLeftovers().find((l) => l.purpose === 'mine, alive')).toBeUndefined();
  });
});
