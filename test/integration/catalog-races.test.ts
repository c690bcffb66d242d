import { execFileSync, spawn } from 'node:child_process';
import { chmodSync, cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Catalog } from '../../src/catalog/store';
import { createMemoryLogger } from '../../src/logger';
import { createBackup } from '../../src/backup/create';
import { listBackups, type BackupEntry } from '../../src/backup/metadata';
import { recordVerification } from '../../src/backup/verify';
import { LocalRunner } from '../../src/runner/runner';
import { cliArgv, lifeline, REPO } from '../helpers/cli';
import { createSampleDatabase, dropDatabase, tempDir } from '../helpers/db';

const noEnv = { DATABASE_URL: undefined, REDIS_URL: undefined, LIFELINE_STORE: undefined, LIFELINE_ENV: undefined, LIFELINE_CONFIG: undefined };
const REAL_PG_RESTORE = '/usr/lib/postgresql/15/bin/pg_restore';

/** A hand-made backup entry (no PostgreSQL needed): backup.json, SHA256SUMS and the archive it names. */
function fakeBackup(store: string, id: string, createdAt: string): void {
  const dir = join(store, 'default', 'backups', id);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'postgres.dump'), 'archive');
  const sha = 'b'.repeat(64);
  writeFileSync(join(dir, 'SHA256SUMS'), `${sha}  postgres.dump\n`);
  writeFileSync(
    join(dir, 'backup.json'),
    JSON.stringify({
      schemaVersion: 1,
      id,
      environment: 'default',
      label: 'scheduled',
      createdAt,
      database: 'shop',
      files: { postgres: { name: 'postgres.dump', bytes: 7, sha256: sha } },
      rowCounts: {},
    }),
  );
}

describe('recording a verification never resurrects or half-writes an entry', () => {
  const store = tempDir('lifeline-verify-record-');
  afterAll(() => store.cleanup());
  const report = (id: string) => ({ backupId: id, ok: true, checks: [{ name: 'x', ok: true, detail: 'fine' }] });

  it('an entry pruned after it was read is not recreated: the verification fails and nothing lists', async () => {
    fakeBackup(store.path, 'b1', '2026-11-01T00:00:00.000Z');
    const catalog = new Catalog(store.path);
    const [entry] = await listBackups(catalog, 'default');
    await catalog.remove(entry!);
    await expect(recordVerification(catalog, 'default', entry!, report('b1'))).rejects.toMatchObject({ code: 'BACKUP_GONE', exitCode: 1 });
    expect(existsSync(join(store.path, 'default', 'backups', 'b1'))).toBe(false);
    expect(await listBackups(catalog, 'default')).toEqual([]);
  });

  it('an entry that lost a file, or was replaced, is not marked verified', async () => {
    fakeBackup(store.path, 'b2', '2026-11-02T00:00:00.000Z');
    fakeBackup(store.path, 'b3', '2026-11-03T00:00:00.000Z');
    const catalog = new Catalog(store.path);
    const entries = await listBackups(catalog, 'default');
    const b2 = entries.find((e) => e.id === 'b2')!;
    const b3 = entries.find((e) => e.id === 'b3')!;
    rmSync(join(b2.dir, 'SHA256SUMS'));
    await expect(recordVerification(catalog, 'default', b2, report('b2'))).rejects.toThrow(/lost SHA256SUMS/);
    // Someone put another backup.json in place while it was being verified: its files differ.
    const replaced = JSON.parse(readFileSync(join(b3.dir, 'backup.json'), 'utf8'));
    replaced.files.postgres.sha256 = 'c'.repeat(64);
    writeFileSync(join(b3.dir, 'backup.json'), JSON.stringify(replaced));
    await expect(recordVerification(catalog, 'default', b3, report('b3'))).rejects.toThrow(/was replaced/);
    for (const e of await listBackups(catalog, 'default')) expect(e.metadata.verified).toBeUndefined();
  });

  it('a failed verdict is recorded even when a file was swapped for a FIFO or points outside: the entry never stays listed as verified', async () => {
    fakeBackup(store.path, 'b5', '2026-11-05T00:00:00.000Z');
    const catalog = new Catalog(store.path);
    const b5 = (await listBackups(catalog, 'default')).find((e) => e.id === 'b5')!;
    // An earlier run verified it.
    await recordVerification(catalog, 'default', b5, report('b5'));
    expect((await listBackups(catalog, 'default')).find((e) => e.id === 'b5')!.metadata.verified?.ok).toBe(true);
    // Then its archive became a FIFO: verify fails, and that failure must be what the listing says.
    rmSync(join(b5.dir, 'postgres.dump'));
    execFileSync('mkfifo', [join(b5.dir, 'postgres.dump')]);
    const failed = { backupId: 'b5', ok: false, checks: [{ name: 'postgres.dump', ok: false, detail: 'is a FIFO; it was not read' }] };
    const current = (await listBackups(catalog, 'default')).find((e) => e.id === 'b5')!;
    await recordVerification(catalog, 'default', current, failed);
    expect((await listBackups(catalog, 'default')).find((e) => e.id === 'b5')!.metadata.verified?.ok).toBe(false);
    // A pass is still never recorded into an entry that is not whole.
    await expect(recordVerification(catalog, 'default', current, report('b5'))).rejects.toThrow(/lost postgres.dump/);
  });

  it('waits for the environment lock before it writes, and writes into the entry that is there', async () => {
    fakeBackup(store.path, 'b4', '2026-11-04T00:00:00.000Z');
    const catalog = new Catalog(store.path);
    const b4 = (await listBackups(catalog, 'default')).find((e) => e.id === 'b4')!;
    // A live holder (this process, as a prune would be) holds the lock: the record waits for it.
    const lockFile = join(store.path, 'default', '.lock');
    writeFileSync(lockFile, JSON.stringify({ owner: 'prune', pid: process.pid, host: (await import('node:os')).hostname(), command: 'prune --apply', acquiredAt: new Date().toISOString() }));
    const recording = recordVerification(catalog, 'default', b4, report('b4'), { lockWaitSeconds: 10 });
    await new Promise((r) => setTimeout(r, 700));
    expect(JSON.parse(readFileSync(join(b4.dir, 'backup.json'), 'utf8')).verified).toBeUndefined();
    // The holder deletes the entry, then lets go.
    await catalog.remove(b4);
    rmSync(lockFile);
    await expect(recording).rejects.toMatchObject({ code: 'BACKUP_GONE' });
    expect(existsSync(b4.dir)).toBe(false);
  });
});

describe('verify racing prune --apply (real processes, real archives)', () => {
  let db: Awaited<ReturnType<typeof createSampleDatabase>>;
  const store = tempDir('lifeline-verify-prune-');
  const gate = tempDir('lifeline-verify-gate-');
  const ids: string[] = [];
  let config: string;

  beforeAll(async () => {
    db = await createSampleDatabase(1, 'vrace');
    const catalog = new Catalog(store.path);
    for (const day of [1, 2]) {
      ids.push(
        (
          await createBackup({
            catalog,
            environment: 'default',
            runner: new LocalRunner(),
            conn: db.conn,
            label: 'scheduled',
            logger: createMemoryLogger(),
            now: () => new Date(`2026-11-0${day}T03:00:00.000Z`),
          })
        ).id,
      );
    }
    // A pg_restore that says it started and then waits for the test: verify is held mid-check, deterministically.
    const bin = join(gate.path, 'bin');
    mkdirSync(bin);
    writeFileSync(join(bin, 'pg_restore'), `#!/bin/sh\ntouch '${gate.path}/started'\nwhile [ ! -e '${gate.path}/go' ]; do sleep 0.1; done\nexec ${REAL_PG_RESTORE} "$@"\n`);
    chmodSync(join(bin, 'pg_restore'), 0o755);
    config = join(store.path, 'lifeline.yml');
    writeFileSync(config, ['version: 1', 'environments:', '  default:', `    postgres: { binDir: ${bin} }`, '    retention: { keepLast: 1, keepDaily: 0, keepWeekly: 0 }', ''].join('\n'));
  }, 120_000);
  afterAll(async () => {
    await dropDatabase(db.name);
    store.cleanup();
    gate.cleanup();
  });

  it('the pruned entry stays gone, is not listed, and verify fails saying why', async () => {
    const child = spawn(process.execPath, [...cliArgv(), 'verify', ids[0]!, '--config', config, '--store', store.path], {
      cwd: REPO,
      env: Object.fromEntries(Object.entries({ ...process.env, ...noEnv }).filter(([, v]) => v !== undefined)) as NodeJS.ProcessEnv,
    });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
    try {
      for (let i = 0; i < 600 && !existsSync(join(gate.path, 'started')); i++) await new Promise((r) => setTimeout(r, 100));
      expect(existsSync(join(gate.path, 'started')), stderr).toBe(true);
      // verify is reading the archive now; prune deletes that backup (the newer one is the last 1 of 1).
      const prune = await lifeline(['prune', '--apply', '--json', '--config', config, '--store', store.path], { env: noEnv });
      expect(prune.code, prune.stderr).toBe(0);
      expect(JSON.parse(prune.stdout).deleted).toEqual([ids[0]]);
      writeFileSync(join(gate.path, 'go'), '');
      const code = await exited;
      expect(code, stderr).toBe(1);
      expect(stderr).toMatch(new RegExp(`backup ${ids[0]} was deleted while it was being verified`));
    } finally {
      writeFileSync(join(gate.path, 'go'), '');
      child.kill('SIGKILL');
    }
    expect(existsSync(join(store.path, 'default', 'backups', ids[0]!))).toBe(false);
    expect(readdirSync(join(store.path, 'default', 'backups')).filter((n) => !n.startsWith('.'))).toEqual([ids[1]]);
    const listing = await lifeline(['backups', '--json', '--config', config, '--store', store.path], { env: noEnv });
    expect(listing.code, listing.stderr).toBe(0);
    expect(JSON.parse(listing.stdout).map((b: { id: string }) => b.id)).toEqual([ids[1]]);
  });
});

describe('listing survives a concurrent prune and damaged entries', () => {
  let db: Awaited<ReturnType<typeof createSampleDatabase>>;
  const store = tempDir('lifeline-damaged-');
  let good: string;

  beforeAll(async () => {
    db = await createSampleDatabase(1, 'dmg');
    const catalog = new Catalog(store.path);
    good = (
      await createBackup({
        catalog,
        environment: 'default',
        runner: new LocalRunner(),
        conn: db.conn,
        label: 'scheduled',
        logger: createMemoryLogger(),
        now: () => new Date('2026-11-01T03:00:00.000Z'),
      })
    ).id;
    const backups = join(store.path, 'default', 'backups');
    // Newer than the good one, so `latest` would pick them if they were not skipped.
    const damage: Record<string, string> = {
      '20261120T000000000Z-torn01': '{ "schemaVersion": 1, "createdAt": "2026-11-20T',
      '20261121T000000000Z-array1': '[]',
      '20261122T000000000Z-future': JSON.stringify({ schemaVersion: 99, id: 'x', createdAt: '2026-11-22T00:00:00.000Z' }),
      '20261123T000000000Z-nofile': JSON.stringify({ schemaVersion: 1, id: 'y', createdAt: '2026-11-23T00:00:00.000Z', label: 'scheduled', database: db.name }),
      '20261124T000000000Z-nodate': JSON.stringify({ schemaVersion: 1, id: 'z', database: db.name }),
    };
    for (const [id, text] of Object.entries(damage)) {
      cpSync(join(backups, good), join(backups, id), { recursive: true });
      writeFileSync(join(backups, id, 'backup.json'), text);
    }
    // Entries that vanish between readdir and reading them (a dangling link, a metadata link to nowhere): links are skipped with a warning.
    symlinkSync(join(backups, '.deleting-gone-1'), join(backups, '20261125T000000000Z-vanish'));
    mkdirSync(join(backups, '20261126T000000000Z-halfgone'));
    symlinkSync(join(backups, 'nowhere.json'), join(backups, '20261126T000000000Z-halfgone', 'backup.json'));
  }, 120_000);
  afterAll(async () => {
    await dropDatabase(db.name);
    store.cleanup();
  });

  const cli = (args: string[], env: Record<string, string | undefined> = {}) => lifeline([...args, '--store', store.path, '--json'], { env: { ...noEnv, ...env } });

  it('backups lists the good entry and names each damaged backup.json as a warning', async () => {
    const run = await cli(['backups']);
    expect(run.code, run.stderr).toBe(0);
    expect(JSON.parse(run.stdout).map((b: { id: string }) => b.id)).toEqual([good]);
    for (const id of ['torn01', 'array1', 'future', 'nofile', 'nodate']) {
      expect(run.stderr).toMatch(new RegExp(`warning: skipped \\S+-${id}/backup\\.json: `));
    }
    expect(run.stderr).toMatch(/-future\/backup\.json: it has schema version 99, written by a newer Lifeline/);
    expect(run.stderr).toMatch(/-torn01\/backup\.json: it is not valid JSON/);
    // Links are never followed out of the store (#15): each is named as a link and skipped, not silently ignored.
    expect(run.stderr).toMatch(/-vanish: it is a symbolic link, not an entry directory/);
    expect(run.stderr).toMatch(/-halfgone\/backup\.json: it is a symbolic link/);
  });

  it('restore latest and gate still work on the good entry', async () => {
    // `latest` is the newest backup of the target's own database: restore it over that database.
    const restore = await cli(['restore', '--backup', 'latest', '--target', db.url, '--confirm', db.name, '--database-url', db.url]);
    expect(restore.code, restore.stderr).toBe(0);
    expect(JSON.parse(restore.stdout).backupId).toBe(good);
    expect(restore.stderr).toMatch(/warning: skipped \S+-torn01\/backup\.json/);
    const gate = await cli(['gate', '--rpo', '1000d']);
    // The gate's verdict is its own business (no drill here): it must read the catalog and decide, not crash on it.
    expect(gate.code === 0 || gate.code === 1, gate.stderr).toBe(true);
    expect(() => JSON.parse(gate.stdout)).not.toThrow();
    expect(gate.stderr).not.toMatch(/CATALOG_CORRUPT|not valid JSON\n\s*fix/);
  });

  it('a listing while entries are being deleted returns only whole entries and never throws', async () => {
    const dir = tempDir('lifeline-churn-');
    try {
      for (let i = 0; i < 60; i++) fakeBackup(dir.path, `c${String(i).padStart(3, '0')}`, `2026-11-01T00:00:${String(i).padStart(2, '0')}.000Z`);
      const catalog = new Catalog(dir.path);
      const all = await listBackups(catalog, 'default');
      const deleting = (async () => {
        for (const entry of all) await catalog.remove(entry as BackupEntry);
      })();
      const seen: number[] = [];
      for (let i = 0; i < 40; i++) {
        const listed = await listBackups(catalog, 'default');
        for (const e of listed) expect(e.metadata.files.postgres.name).toBe('postgres.dump');
        seen.push(listed.length);
      }
      await deleting;
      expect(await listBackups(catalog, 'default')).toEqual([]);
      expect(Math.max(...seen)).toBeLessThanOrEqual(60);
    } finally {
      dir.cleanup();
    }
  });
});
