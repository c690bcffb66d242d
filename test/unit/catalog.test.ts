import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { acquireLock, breakLock, lockStatus } from '../../src/catalog/lock';
import { Catalog, newEntryId } from '../../src/catalog/store';
import { checkSums } from '../../src/catalog/sums';
import { REPO } from '../helpers/cli';
import { tempDir } from '../helpers/db';

const cleanups: Array<() => void> = [];
afterEach(() => cleanups.splice(0).forEach((c) => c()));
function store() {
  const dir = tempDir('lifeline-catalog-');
  cleanups.push(dir.cleanup);
  return new Catalog(dir.path);
}

async function writeEntry(catalog: Catalog, id: string, payload: string, createdAt = new Date().toISOString()) {
  const entry = await catalog.begin('production', 'backups', id, 'backup.json');
  await entry.addStream('db.dump', Readable.from([Buffer.from(payload)]));
  await entry.addText('globals.sql', '-- roles\n');
  await entry.commit({ schemaVersion: 1, id, createdAt });
  return catalog.entryDir('production', 'backups', id);
}

describe('catalog', () => {
  it('writes entries that sha256sum -c accepts from inside the directory', async () => {
    const catalog = store();
    const dir = await writeEntry(catalog, newEntryId(), 'orders and payments');
    const check = spawnSync('sha256sum', ['-c', 'SHA256SUMS'], { cwd: dir, encoding: 'utf8' });
    expect(check.status).toBe(0);
    expect(check.stdout).toContain('db.dump: OK');
    expect(check.stdout).toContain('globals.sql: OK');
    expect((await checkSums(dir)).every((c) => c.ok)).toBe(true);
  });

  it('detects one flipped byte, as sha256sum -c does', async () => {
    const catalog = store();
    const dir = await writeEntry(catalog, newEntryId(), 'orders and payments');
    const file = join(dir, 'db.dump');
    const bytes = readFileSync(file);
    bytes[3] = bytes[3]! ^ 0x01;
    writeFileSync(file, bytes);
    const results = await checkSums(dir);
    expect(results.find((r) => r.file === 'db.dump')!.ok).toBe(false);
    expect(spawnSync('sha256sum', ['-c', 'SHA256SUMS'], { cwd: dir }).status).not.toBe(0);
  });

  it('lists newest first and never lists an aborted entry', async () => {
    const catalog = store();
    await writeEntry(catalog, 'a-old', 'x', '2026-01-01T00:00:00.000Z');
    await writeEntry(catalog, 'b-new', 'y', '2026-02-01T00:00:00.000Z');
    const aborted = await catalog.begin('production', 'backups', 'c-aborted', 'backup.json');
    await aborted.addText('db.dump', 'partial');
    await aborted.abort();
    writeFileSync(join(catalog.kindDir('production', 'backups'), 'NOTES.txt'), 'an operator left this here');
    const listed = await catalog.list('production', 'backups', 'backup.json');
    expect(listed.map((e) => e.id)).toEqual(['b-new', 'a-old']);
  });

  it('refuses ids and names that would escape the catalog', async () => {
    const catalog = store();
    for (const bad of ['../etc', '/abs', 'a/b', 'nul\0byte', '..', '.hidden', '']) {
      expect(() => catalog.entryDir('production', 'backups', bad)).toThrow(/cannot be used as a catalog name/);
    }
  });

  it('leaves nothing that lists as complete when the writer is killed mid-write', async () => {
    const catalog = store();
    const child = spawn(process.execPath, ['--import', 'tsx', join(REPO, 'test/fixtures/slow-writer.ts'), catalog.root, 'killed-1'], { cwd: REPO, stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((resolve) => child.stdout.once('data', () => resolve()));
    await new Promise((r) => setTimeout(r, 300));
    child.kill('SIGKILL');
    await new Promise((r) => child.once('close', r));
    const kindDir = catalog.kindDir('production', 'backups');
    expect(readdirSync(kindDir).some((n) => n.startsWith('.staging-killed-1'))).toBe(true);
    expect(await catalog.list('production', 'backups', 'backup.json')).toEqual([]);
    expect(existsSync(join(kindDir, 'killed-1'))).toBe(false);
    // The dead writer's staging directory is swept because its pid is gone.
    expect(await catalog.sweepStaging('production', 'backups')).toHaveLength(1);
    expect(readdirSync(kindDir)).toEqual([]);
  });

  it('keeps an append-only log that survives a torn last line', async () => {
    const catalog = store();
    await catalog.appendLog('production', 'history.ndjson', { action: 'deploy', to: 'v1' });
    await catalog.appendLog('production', 'history.ndjson', { action: 'deploy', to: 'v2' });
    const path = join(catalog.envDir('production'), 'history.ndjson');
    writeFileSync(path, readFileSync(path, 'utf8') + '{"action":"depl');
    expect(await catalog.readLog('production', 'history.ndjson')).toEqual([
      { action: 'deploy', to: 'v1' },
      { action: 'deploy', to: 'v2' },
    ]);
  });
});

describe('per-environment lock', () => {
  it('a FIFO or a link planted as the lock file is reported as a stale lock, never read through or blocked on', async () => {
    for (const kind of ['fifo', 'link'] as const) {
      const dir = tempDir(`lifeline-lockkind-${kind}-`);
      cleanups.push(dir.cleanup);
      const envDir = join(dir.path, 'production');
      mkdirSync(envDir, { mode: 0o700 });
      if (kind === 'fifo') expect(spawnSync('mkfifo', [join(envDir, '.lock')]).status).toBe(0);
      else {
        // A link to a lock that names this (live) process: followed, it would look held by a live holder.
        writeFileSync(join(dir.path, 'elsewhere.json'), JSON.stringify({ owner: 'x', pid: process.pid, host: hostname(), command: 'deploy', acquiredAt: new Date().toISOString() }));
        symlinkSync(join(dir.path, 'elsewhere.json'), join(envDir, '.lock'));
      }
      // A plain read of a FIFO would never return: the race makes a hang a failure, not a timeout.
      const status = await Promise.race([lockStatus(envDir), new Promise((resolve) => setTimeout(() => resolve('blocked'), 5000))]);
      expect(status, kind).toEqual({ held: true, stale: true });
      await expect(acquireLock(envDir, 'production', { command: 'backup' })).rejects.toThrow();
      await breakLock(envDir, { env: 'production' });
      expect(existsSync(join(dir.path, 'elsewhere.json'))).toBe(kind === 'link');
      const lock = await acquireLock(envDir, 'production', { command: 'backup' });
      await lock.release();
    }
  });
  it('lets exactly one of two concurrent writers in', async () => {
    const catalog = store();
    const envDir = catalog.envDir('production');
    const results = await Promise.allSettled([acquireLock(envDir, 'production', { command: 'deploy v1' }), acquireLock(envDir, 'production', { command: 'deploy v2' })]);
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
    const rejected = results.find((r) => r.status === 'rejected') as PromiseRejectedResult;
    expect(rejected.reason.exitCode).toBe(3);
    expect(rejected.reason.message).toMatch(/locked by .*pid \d+ on /);
  });

  it('waits for the holder when asked to, then proceeds', async () => {
    const catalog = store();
    const envDir = catalog.envDir('production');
    const first = await acquireLock(envDir, 'production', { command: 'backup' });
    setTimeout(() => void first.release(), 300);
    const second = await acquireLock(envDir, 'production', { command: 'deploy', waitSeconds: 5, pollMs: 50 });
    expect(second.info.command).toBe('deploy');
    await second.release();
    expect((await lockStatus(envDir)).held).toBe(false);
  });

  it('reports a stale lock with its owner and breaks it only on request', async () => {
    const catalog = store();
    const envDir = catalog.envDir('production');
    const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
    const { hostname } = await import('node:os');
    const { mkdirSync } = await import('node:fs');
    mkdirSync(envDir, { recursive: true });
    writeFileSync(join(envDir, '.lock'), JSON.stringify({ owner: 'alice', pid: Number(dead.stdout), host: hostname(), command: 'deploy v9', acquiredAt: '2026-11-01T00:00:00Z' }));
    await expect(acquireLock(envDir, 'production', { command: 'deploy' })).rejects.toMatchObject({ code: 'LOCK_STALE', exitCode: 3 });
    await expect(acquireLock(envDir, 'production', { command: 'deploy' })).rejects.toThrow(/alice .*lifeline lock break|alice/);
    const broken = await breakLock(envDir);
    expect(broken.info?.owner).toBe('alice');
    const lock = await acquireLock(envDir, 'production', { command: 'deploy' });
    await lock.release();
  });
});
