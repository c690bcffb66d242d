// Issue 18: at gzip levels 4-9 pg_dump writes the archive uncompressed and Lifeline compresses it on
// several cores. Against the real pg_dump 15 and pg_restore: the archive is the one pg_dump -Z6
// writes (pg_restore prints the same script from it as from pg_dump's own uncompressed archive),
// large objects, an empty table and a table spanning many segments survive a restore, and a stream
// cut short, or a pg_dump that fails half-way, fails the backup with nothing listed.
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BACKUP_METADATA_FILE, type BackupMetadata } from '../../src/backup/metadata';
import { formatPgUrl, pgEnv } from '../../src/runner/postgres-env';
import { lifeline } from '../helpers/cli';
import { adminConn, createSampleDatabase, dropDatabase, query, sql, tableCounts, tempDir } from '../helpers/db';

const noEnv = { DATABASE_URL: undefined, REDIS_URL: undefined, LIFELINE_STORE: undefined, LIFELINE_ENV: undefined, LIFELINE_CONFIG: undefined };
const PG_BIN = '/usr/lib/postgresql/15/bin';

/** pg_restore's script for an archive, without the per-run random \restrict key lines. */
function script(archive: string): string {
  return execFileSync('pg_restore', ['--file=-', archive], { encoding: 'utf8', maxBuffer: 256 * 1024 * 1024 })
    .split('\n')
    .filter((line) => !/^\\(un)?restrict /.test(line))
    .join('\n');
}

function entriesIn(dir: string): string[] {
  try {
    return readdirSync(dir).filter((n) => !n.startsWith('.lock'));
  } catch {
    return [];
  }
}

describe('gzip levels 4-9: compressed by Lifeline on several cores, the archive pg_dump would write', () => {
  let db: Awaited<ReturnType<typeof createSampleDatabase>>;
  const store = tempDir('lifeline-lcompress-');
  const work = tempDir('lifeline-lcompress-work-');
  const restored: string[] = [];
  const args = () => ['--store', store.path, '--database-url', db.url, '--json'];

  beforeAll(async () => {
    db = await createSampleDatabase(2, 'lcompress');
    // A table over several 1 MiB segments, an odd name, an empty table and two large objects (one of them over two segments).
    await sql(
      [
        `CREATE TABLE "Odd ""name"" ü" (id int PRIMARY KEY, body text)`,
        `INSERT INTO "Odd ""name"" ü" SELECT g, repeat(md5(g::text), 3) || ' ü\\ttab' FROM generate_series(1, 40000) g`,
        `CREATE TABLE empty_one (x int)`,
        `SELECT lo_from_bytea(424242, decode(repeat('00ff17', 800000), 'hex'))`,
        `SELECT lo_from_bytea(424243, 'small object')`,
      ].join(';\n'),
      db.name,
    );
  }, 120_000);
  afterAll(async () => {
    await dropDatabase(db.name);
    for (const name of restored) await dropDatabase(name);
    store.cleanup();
    work.cleanup();
  });

  it('--compress gzip:6: recorded, level 6 in the header, the same script as pg_dump -Z0 gives, and a restore with every row and large object', async () => {
    const run = await lifeline(['backup', ...args(), '--compress', 'gzip:6'], { env: noEnv });
    expect(run.code, run.stderr).toBe(0);
    expect(run.stderr).toMatch(/gzip:6 on all cores/);
    const out = JSON.parse(run.stdout) as { id: string; path: string };
    const metadata = JSON.parse(readFileSync(join(out.path, BACKUP_METADATA_FILE), 'utf8')) as BackupMetadata;
    expect(metadata.compression).toEqual({ method: 'gzip', level: 6 });
    expect(metadata.verified?.ok).toBe(true);
    const archive = join(out.path, 'postgres.dump');
    expect(execFileSync('pg_restore', ['--list', archive], { encoding: 'utf8' })).toMatch(/Compression: 6\n/);
    // The standard tool checks the stored checksum.
    execFileSync('sha256sum', ['--check', '--strict', 'SHA256SUMS'], { cwd: out.path });

    // pg_dump's own uncompressed archive of the same (idle) database reads back as the same script.
    const plain = join(work.path, 'plain.dump');
    execFileSync('pg_dump', ['--format=custom', '--compress=0', '--file', plain], { env: { ...process.env, ...(pgEnv(db.conn) as NodeJS.ProcessEnv) } });
    expect(script(archive)).toBe(script(plain));
    // And it is compressed: smaller than a third of pg_dump's uncompressed archive.
    expect(metadata.files.postgres.bytes).toBeLessThan(readFileSync(plain).length / 3);

    const target = `${db.name}_r6`;
    restored.push(target);
    const restore = await lifeline(['restore', '--store', store.path, '--backup', out.id, '--target', formatPgUrl({ ...adminConn(), database: target })], { env: noEnv });
    expect(restore.code, restore.stderr).toBe(0);
    expect(await tableCounts(target)).toEqual(await tableCounts(db.name));
    const digest = `SELECT md5(string_agg(id || body, ',' ORDER BY id)) AS d FROM "Odd ""name"" ü"`;
    expect(await query(digest, target)).toEqual(await query(digest, db.name));
    const objects = `SELECT oid::text, md5(lo_get(oid)) AS d FROM pg_largeobject_metadata ORDER BY oid`;
    expect(await query(objects, target)).toEqual(await query(objects, db.name));
    expect((await query(objects, target)).length).toBe(2);
  });

  it('gzip:1 stays with pg_dump (levels 1-3), and is larger than gzip:6', async () => {
    const run = await lifeline(['backup', ...args(), '--compress', 'gzip:1'], { env: noEnv });
    expect(run.code, run.stderr).toBe(0);
    expect(run.stderr).not.toMatch(/on all cores/);
    const sizes = readdirSync(join(store.path, 'default', 'backups'))
      .filter((n) => !n.startsWith('.'))
      .map((d) => JSON.parse(readFileSync(join(store.path, 'default', 'backups', d, BACKUP_METADATA_FILE), 'utf8')) as BackupMetadata)
      .map((m) => [m.compression!.level, m.files.postgres.bytes]);
    const byLevel = Object.fromEntries(sizes);
    expect(byLevel[6]).toBeLessThan(byLevel[1]!);
  });

  for (const [what, tail, code, says] of [
    ['a pg_dump whose archive is cut short though it exits 0', 'exit 0', 'ARCHIVE_FORMAT_UNEXPECTED', /ended inside a data block/],
    ['a pg_dump that fails half-way (exit 3)', 'exit 3', 'PG_DUMP_FAILED', /pg_dump failed \(exit 3\)/],
  ] as const) {
    it(`${what}: the backup fails (exit 1, ${code}), nothing lists, no staging is left`, async () => {
      const dir = join(work.path, code);
      const bin = join(dir, 'bin');
      mkdirSync(bin, { recursive: true });
      for (const tool of ['psql', 'pg_restore', 'pg_dumpall']) execFileSync('ln', ['-s', join(PG_BIN, tool), join(bin, tool)]);
      // The archive's first 300 KB (header, table of contents and part of the data), then the exit.
      writeFileSync(join(bin, 'pg_dump'), `#!/bin/bash\ncase " $* " in *" --format=custom "*) ${PG_BIN}/pg_dump "$@" | head -c 300000; ${tail};; *) exec ${PG_BIN}/pg_dump "$@";; esac\n`);
      chmodSync(join(bin, 'pg_dump'), 0o755);
      const config = join(dir, 'lifeline.yml');
      writeFileSync(config, `version: 1\nenvironments:\n  default:\n    postgres:\n      binDir: ${bin}\n`);
      const cutStore = join(dir, 'store');
      const run = await lifeline(['backup', '--store', cutStore, '--database-url', db.url, '--config', config, '--compress', 'gzip:6', '--json'], { env: noEnv });
      expect(run.code, run.stderr).toBe(1);
      expect(run.stdout + run.stderr).toContain(code);
      expect(run.stdout + run.stderr).toMatch(says);
      expect(entriesIn(join(cutStore, 'default', 'backups'))).toEqual([]);
    });
  }
});
