// Issue 18: the backup verifies in the same pass (a corrupted stream fails it, nothing lists), the
// compression is chosen by the client and recorded, --compress / postgres.compress override it,
// and counts and fingerprint taken while pg_dump runs equal those of the database.
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Transform } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Catalog } from '../../src/catalog/store';
import { createMemoryLogger } from '../../src/logger';
import { createBackup } from '../../src/backup/create';
import { exactRowCounts, schemaFingerprint } from '../../src/postgres/inspect';
import { BACKUP_METADATA_FILE, listBackups, type BackupMetadata } from '../../src/backup/metadata';
import { verifyBackup } from '../../src/backup/verify';
import { formatPgUrl } from '../../src/runner/postgres-env';
import { PsqlSession } from '../../src/runner/psql';
import { LocalRunner, type Runner, type RunningTool, type ToolInvocation } from '../../src/runner/runner';
import { lifeline } from '../helpers/cli';
import { adminConn, createSampleDatabase, dropDatabase, tableCounts, tempDir } from '../helpers/db';

const noEnv = { DATABASE_URL: undefined, REDIS_URL: undefined, LIFELINE_STORE: undefined, LIFELINE_ENV: undefined, LIFELINE_CONFIG: undefined };

/** A runner whose pg_dump output has one byte flipped at `offset` on its way out (a bad NIC, RAM, a bug). */
class CorruptingRunner implements Runner {
  readonly where = 'local binaries (one byte of the dump flipped)';
  private readonly inner = new LocalRunner();
  flipped = false;
  constructor(private readonly offset: number) {}
  start(invocation: ToolInvocation): RunningTool {
    const running = this.inner.start(invocation);
    if (invocation.tool !== 'pg_dump' || !invocation.args.includes('--format=custom')) return running;
    let seen = 0;
    const offset = this.offset;
    const corrupt = new Transform({
      transform: (chunk: Buffer, _enc, callback) => {
        if (seen <= offset && offset < seen + chunk.length) {
          chunk = Buffer.from(chunk);
          chunk[offset - seen] ^= 0xff;
          this.flipped = true;
        }
        seen += chunk.length;
        callback(null, chunk);
      },
    });
    return { ...running, stdout: running.stdout.pipe(corrupt) };
  }
}

/** A local runner that records the sizes of the pieces pg_dump's archive arrives in. */
class PieceRecordingRunner implements Runner {
  readonly where = 'local binaries (pieces recorded)';
  private readonly inner = new LocalRunner();
  pieces: number[] = [];
  start(invocation: ToolInvocation): RunningTool {
    const running = this.inner.start(invocation);
    if (invocation.tool !== 'pg_dump' || !invocation.args.includes('--format=custom')) return running;
    const record = new Transform({
      transform: (chunk: Buffer, _enc, callback) => {
        this.pieces.push(chunk.length);
        callback(null, chunk);
      },
    });
    return { ...running, stdout: running.stdout.pipe(record) };
  }
}

function entriesIn(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

/** The compression pg_restore reads from an archive's header (PostgreSQL 15 prints the gzip level). */
function archiveCompression(path: string): string {
  return /Compression: (\S+)/.exec(execFileSync('pg_restore', ['--list', path], { encoding: 'utf8' }))?.[1] ?? '?';
}

describe('a backup verifies itself in the same pass', () => {
  let db: Awaited<ReturnType<typeof createSampleDatabase>>;
  let archiveBytes = 0;
  beforeAll(async () => {
    db = await createSampleDatabase(6, 'instream');
  });
  afterAll(async () => {
    await dropDatabase(db.name);
  });

  it('a clean stream verifies: every check recorded in backup.json, counts and fingerprint equal the database', async () => {
    const store = tempDir('lifeline-instream-');
    try {
      const catalog = new Catalog(store.path);
      const entry = await createBackup({ catalog, environment: 'default', runner: new LocalRunner(), conn: db.conn, label: 'manual', verify: true, logger: createMemoryLogger() });
      archiveBytes = entry.metadata.files.postgres.bytes;
      expect(entry.metadata.verified).toMatchObject({ ok: true });
      expect(entry.metadata.verified!.checks.map((c) => c.name)).toEqual(['postgres.dump checksum', 'archive table of contents', 'archive decompresses end to end']);
      expect(entry.metadata.compression).toEqual({ method: 'gzip', level: 1 });
      // Taken while pg_dump ran, in its snapshot: the same as counting and fingerprinting the idle database now.
      const session = PsqlSession.open(new LocalRunner(), db.conn);
      try {
        expect(entry.metadata.rowCounts).toEqual(await exactRowCounts(session));
        expect(entry.metadata.schemaFingerprint).toBe(await schemaFingerprint(session));
      } finally {
        await session.close();
      }
      expect(entry.metadata.rowCounts).toEqual(await tableCounts(db.name));
      // What the verify command finds in the committed entry agrees.
      const report = await verifyBackup(entry, { runner: new LocalRunner(), logger: createMemoryLogger() });
      expect(report.ok, JSON.stringify(report.checks)).toBe(true);
    } finally {
      store.cleanup();
    }
  });

  it("pg_dump writes the archive in 256 KB blocks (stdbuf), not its stdio's 4 KB: Lifeline wakes for a few reads, not one per 4 KB", async () => {
    const store = tempDir('lifeline-pieces-');
    try {
      const runner = new PieceRecordingRunner();
      const entry = await createBackup({ catalog: new Catalog(store.path), environment: 'default', runner, conn: db.conn, label: 'manual', verify: true, logger: createMemoryLogger() });
      const bytes = runner.pieces.reduce((a, b) => a + b, 0);
      expect(bytes).toBe(entry.metadata.files.postgres.bytes);
      // Read from the pipe in pieces of up to 64 KB; pg_dump's own 4 KB writes average ~4-8 KB here.
      expect(bytes / runner.pieces.length).toBeGreaterThan(32 * 1024);
    } finally {
      store.cleanup();
    }
  });

  for (const [where, fraction] of [
    ['in the middle', 0.5],
    ['in the last data blocks', 0.97],
  ] as const) {
    it(`one byte flipped ${where} of the stream fails the backup (exit 1), and nothing lists`, async () => {
      const store = tempDir('lifeline-corrupt-');
      try {
        const catalog = new Catalog(store.path);
        const runner = new CorruptingRunner(Math.floor(archiveBytes * fraction));
        const error = await createBackup({ catalog, environment: 'default', runner, conn: db.conn, label: 'manual', verify: true, logger: createMemoryLogger() }).catch((e: unknown) => e);
        expect(runner.flipped).toBe(true);
        expect(error).toMatchObject({
          code: 'ARCHIVE_UNREADABLE',
          exitCode: 1,
          message: expect.stringMatching(/pg_restore could not read the archive pg_dump wrote .*(uncompress|corrupt|unexpected)/),
          fix: expect.stringContaining('nothing was added to the catalog'),
        });
        expect(await listBackups(catalog, 'default')).toEqual([]);
        expect(entriesIn(join(store.path, 'default', 'backups'))).toEqual([]);
      } finally {
        store.cleanup();
      }
    });
  }

  it('the same flipped byte without the in-stream reader lists as a backup that only a full verify catches (the control)', async () => {
    const store = tempDir('lifeline-corrupt-control-');
    try {
      const catalog = new Catalog(store.path);
      const runner = new CorruptingRunner(Math.floor(archiveBytes * 0.97));
      const entry = await createBackup({ catalog, environment: 'default', runner, conn: db.conn, label: 'manual', verify: false, logger: createMemoryLogger() });
      expect(runner.flipped).toBe(true);
      expect(entry.metadata.verified).toBeUndefined();
      // The checksum was taken of the corrupted bytes, so it matches: only reading every block finds it.
      const report = await verifyBackup(entry, { runner: new LocalRunner(), logger: createMemoryLogger() });
      expect(report.checks.find((c) => c.name === 'postgres.dump checksum')?.ok).toBe(true);
      expect(report.checks.find((c) => c.name === 'archive decompresses end to end')).toMatchObject({ ok: false });
    } finally {
      store.cleanup();
    }
  });

  it('a failing migration head query stops the dump at once and nothing lists', async () => {
    const store = tempDir('lifeline-headfail-');
    try {
      const catalog = new Catalog(store.path);
      const started = Date.now();
      const error = await createBackup({
        catalog,
        environment: 'default',
        runner: new LocalRunner(),
        conn: db.conn,
        label: 'manual',
        verify: true,
        migrationHeadQuery: 'SELECT version_num FROM no_such_table',
        logger: createMemoryLogger(),
      }).catch((e: unknown) => e);
      expect(error).toMatchObject({ code: 'MIGRATION_HEAD_QUERY', exitCode: 1 });
      expect(Date.now() - started).toBeLessThan(60_000);
      expect(await listBackups(catalog, 'default')).toEqual([]);
      expect(entriesIn(join(store.path, 'default', 'backups'))).toEqual([]);
    } finally {
      store.cleanup();
    }
  });
});

describe('compression: chosen by the client, recorded, overridable, restorable', () => {
  let db: Awaited<ReturnType<typeof createSampleDatabase>>;
  const store = tempDir('lifeline-compress-');
  const restored: string[] = [];
  beforeAll(async () => {
    db = await createSampleDatabase(3, 'compress');
  });
  afterAll(async () => {
    await dropDatabase(db.name);
    for (const name of restored) await dropDatabase(name);
    store.cleanup();
  });
  const args = () => ['--store', store.path, '--database-url', db.url];
  const metadataOf = (path: string) => JSON.parse(readFileSync(join(path, BACKUP_METADATA_FILE), 'utf8')) as BackupMetadata;

  for (const [flag, expected, header] of [
    [undefined, { method: 'gzip', level: 1 }, '1'],
    ['gzip:6', { method: 'gzip', level: 6 }, '6'],
  ] as const) {
    it(`${flag ? `--compress ${flag}` : 'the default (pg_dump 15)'}: backup.json records ${expected.method}:${expected.level}, the archive is written so, and it restores with every row`, async () => {
      const run = await lifeline(['backup', ...args(), ...(flag ? ['--compress', flag] : []), '--json'], { env: noEnv });
      expect(run.code, run.stderr).toBe(0);
      const out = JSON.parse(run.stdout) as { id: string; path: string; compression: unknown };
      expect(out.compression).toEqual(expected);
      const metadata = metadataOf(out.path);
      expect(metadata.compression).toEqual(expected);
      expect(metadata.compressLevel).toBe(expected.level);
      expect(metadata.verified?.ok).toBe(true);
      expect(archiveCompression(join(out.path, 'postgres.dump'))).toBe(header);
      const target = `${db.name}_r${expected.level}`;
      restored.push(target);
      const restore = await lifeline(['restore', '--store', store.path, '--backup', out.id, '--target', formatPgUrl({ ...adminConn(), database: target })], { env: noEnv });
      expect(restore.code, restore.stderr).toBe(0);
      expect(await tableCounts(target)).toEqual(await tableCounts(db.name));
    });
  }

  it('gzip:6 is smaller than the default gzip:1 on the same data (the level really changed)', async () => {
    const dirs = readdirSync(join(store.path, 'default', 'backups')).filter((n) => !n.startsWith('.'));
    const byLevel = Object.fromEntries(dirs.map((d) => metadataOf(join(store.path, 'default', 'backups', d))).map((m) => [m.compression!.level, m.files.postgres.bytes]));
    expect(byLevel[6]).toBeLessThan(byLevel[1]!);
  });

  it('zstd or lz4 on pg_dump 15, an unknown method or a bad level: exit 2 with the fix, before anything is written', async () => {
    const before = readdirSync(join(store.path, 'default', 'backups')).sort();
    for (const [value, says] of [
      ['zstd:3', /zstd:3 compression needs pg_dump 16 or newer; this pg_dump is version 15/],
      ['brotli', /unknown compression method/],
      ['gzip:10', /gzip levels are 1-9/],
    ] as const) {
      const run = await lifeline(['backup', ...args(), '--compress', value], { env: noEnv });
      expect(run.code, `${value}: ${run.stderr}`).toBe(2);
      expect(run.stderr).toMatch(says);
      expect(run.stderr).toMatch(/gzip/);
    }
    expect(readdirSync(join(store.path, 'default', 'backups')).sort()).toEqual(before);
  });

  it('postgres.compress in lifeline.yml is used, and a method the client lacks is exit 2 naming the key', async () => {
    const dir = tempDir('lifeline-compress-config-');
    try {
      const config = join(dir.path, 'lifeline.yml');
      const write = (compress: string) => writeFileSync(config, ['version: 1', 'environments:', '  default:', '    postgres:', `      compress: "${compress}"`, ''].join('\n'));
      write('none');
      const ok = await lifeline(['backup', '--config', config, ...args(), '--no-verify', '--json'], { env: noEnv });
      expect(ok.code, ok.stderr).toBe(0);
      const out = JSON.parse(ok.stdout) as { path: string };
      expect(metadataOf(out.path).compression).toEqual({ method: 'none', level: null });
      expect(archiveCompression(join(out.path, 'postgres.dump'))).toBe('0');
      write('lz4:2');
      const refused = await lifeline(['backup', '--config', config, ...args()], { env: noEnv });
      expect(refused.code, refused.stderr).toBe(2);
      expect(refused.stderr).toMatch(/lz4:2 compression needs pg_dump 16/);
      write('gzip:99');
      const bad = await lifeline(['config', 'check', '--config', config], { env: noEnv });
      expect(bad.code, bad.stderr).toBe(2);
      expect(bad.stderr + bad.stdout).toMatch(/environments\.default\.postgres\.compress/);
    } finally {
      dir.cleanup();
    }
  });
});
