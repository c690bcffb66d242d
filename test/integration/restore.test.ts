import { createServer, type Server } from 'node:http';
import { openSync, readSync, writeSync, closeSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Catalog } from '../../src/catalog/store';
import { createMemoryLogger } from '../../src/logger';
import { listBackups } from '../../src/backup/metadata';
import { restoreIntoFreshDatabase } from '../../src/backup/restore';
import { PsqlSession } from '../../src/runner/psql';
import { schemaFingerprint } from '../../src/postgres/inspect';
import { LocalRunner } from '../../src/runner/runner';
import { formatPgUrl, type PgConnection } from '../../src/runner/postgres-env';
import { findBackup } from '../../src/backup/metadata';
import { lifeline } from '../helpers/cli';
import { adminConn, createDatabase, createSampleDatabase, dropDatabase, query, sql, tableCounts, tempDir } from '../helpers/db';

const noEnv = { DATABASE_URL: undefined, REDIS_URL: undefined, LIFELINE_STORE: undefined, LIFELINE_ENV: undefined, LIFELINE_CONFIG: undefined };

async function fingerprintOf(conn: PgConnection): Promise<string> {
  const session = PsqlSession.open(new LocalRunner(), conn);
  try {
    return await schemaFingerprint(session);
  } finally {
    await session.close();
  }
}

/** What a user would compare: every table's exact row count and the schema. */
async function contentOf(conn: PgConnection) {
  return { counts: await tableCounts(conn.database), fingerprint: await fingerprintOf(conn) };
}

/** Leftover copies of this file's databases (all named r...): other files restore on the same server at the same time. */
async function databasesLike(pattern: string): Promise<string[]> {
  const rows = await query<{ datname: string }>(`SELECT datname FROM pg_database WHERE datname LIKE '${pattern}' ORDER BY 1`, 'postgres');
  return rows.map((r) => r.datname);
}

describe('lifeline restore', () => {
  let source: Awaited<ReturnType<typeof createSampleDatabase>>;
  let target: Awaited<ReturnType<typeof createSampleDatabase>>;
  const store = tempDir('lifeline-restore-');
  const created: string[] = [];
  let backupId: string;
  let sourceContent: Awaited<ReturnType<typeof contentOf>>;

  beforeAll(async () => {
    source = await createSampleDatabase(2, 'rsrc');
    // The target holds different data: a restore must visibly replace it.
    target = await createSampleDatabase(2, 'rtgt');
    await sql("DELETE FROM payments WHERE id % 3 = 0; CREATE TABLE scratch_notes (note text); INSERT INTO scratch_notes VALUES ('local only')", target.name);
    sourceContent = await contentOf(source.conn);
    const run = await lifeline(['backup', '--store', store.path, '--database-url', source.url, '--json'], { env: noEnv });
    expect(run.code, run.stderr).toBe(0);
    backupId = JSON.parse(run.stdout).id;
  });
  afterAll(async () => {
    for (const name of [source.name, target.name, ...created]) await dropDatabase(name);
    store.cleanup();
  });

  const restore = (extra: string[]) => lifeline(['restore', '--store', store.path, '--database-url', source.url, '--backup', backupId, ...extra], { env: noEnv });

  it('restores into a database that does not exist yet without confirmation, checked row for row', async () => {
    const fresh = { ...adminConn(), database: `rnew_${Date.now()}` };
    created.push(fresh.database);
    const run = await restore(['--target', formatPgUrl(fresh), '--json']);
    expect(run.code, run.stderr).toBe(0);
    const result = JSON.parse(run.stdout);
    expect(result).toMatchObject({ backupId, destructive: false, checksumsVerified: true, checks: { ok: true, analyzed: true } });
    expect(result.preRestoreBackupId).toBeUndefined();
    expect(await contentOf(fresh)).toEqual(sourceContent);
    expect(await databasesLike('r%\\_lifeline\\_%')).toEqual([]);
  });

  for (const [name, confirm] of [
    ['missing', undefined],
    ['another name', 'shop'],
    ['different case', 'UPPER'],
    ['trailing space', 'SPACE'],
  ] as const) {
    it(`refuses a destructive restore when the confirmation is ${name} (exit 3, target untouched, no pre-restore backup)`, async () => {
      const before = await contentOf(target.conn);
      const value = confirm === 'UPPER' ? target.name.toUpperCase() : confirm === 'SPACE' ? `${target.name} ` : confirm;
      const run = await restore(['--target', target.url, ...(value !== undefined ? ['--confirm', value] : [])]);
      expect(run.code, run.stderr).toBe(3);
      expect(run.stderr).toContain(`--confirm ${target.name}`);
      expect(run.stderr).not.toContain(target.conn.password!);
      expect(await contentOf(target.conn)).toEqual(before);
      expect((await listBackups(new Catalog(store.path), 'default')).map((b) => b.metadata.label)).toEqual(['manual']);
      expect(await databasesLike('r%\\_lifeline\\_%')).toEqual([]);
    });
  }

  it('with --confirm equal to the name: takes a pre-restore backup, restores through a scratch database and swaps', async () => {
    const before = await contentOf(target.conn);
    expect(before).not.toEqual(sourceContent);
    const run = await restore(['--target', target.url, '--confirm', target.name, '--jobs', '2', '--json']);
    expect(run.code, run.stderr).toBe(0);
    const result = JSON.parse(run.stdout);
    expect(result.destructive).toBe(true);
    expect(await contentOf(target.conn)).toEqual(sourceContent);
    expect(await databasesLike('r%\\_lifeline\\_%')).toEqual([]);
    // The pre-restore backup holds the replaced data, so the restore can be undone.
    const pre = await findBackup(new Catalog(store.path), 'default', result.preRestoreBackupId);
    expect(pre.metadata.label).toBe('pre-restore');
    expect(pre.metadata.rowCounts).toEqual(before.counts);
    // It holds the target's data, not the environment's: "latest" never picks it.
    expect((await findBackup(new Catalog(store.path), 'default', 'latest')).id).toBe(backupId);
    // An application session on the target does not block the swap: it is ended, and reconnects to the restored data.
    const application = PsqlSession.open(new LocalRunner(), target.conn);
    expect(await application.queryValue('SELECT 1')).toBe(1);
    const undo = await lifeline(['restore', '--store', store.path, '--backup', pre.id, '--target', target.url, '--confirm', target.name], { env: noEnv });
    expect(undo.code, undo.stderr).toBe(0);
    expect(await contentOf(target.conn)).toEqual(before);
    await expect(application.queryValue('SELECT 1')).rejects.toThrow();
    await application.close();
  });

  describe('a corrupted archive (one byte flipped)', () => {
    let corruptStore: ReturnType<typeof tempDir>;
    let corruptId: string;
    beforeAll(async () => {
      corruptStore = tempDir('lifeline-corrupt-');
      const run = await lifeline(['backup', '--store', corruptStore.path, '--database-url', source.url, '--no-verify', '--json'], { env: noEnv });
      expect(run.code, run.stderr).toBe(0);
      const { id, path } = JSON.parse(run.stdout);
      corruptId = id;
      const file = join(path, 'postgres.dump');
      const fd = openSync(file, 'r+');
      const byte = Buffer.alloc(1);
      readSync(fd, byte, 0, 1, 4000);
      byte[0] = byte[0]! ^ 0xff;
      writeSync(fd, byte, 0, 1, 4000);
      closeSync(fd);
    });
    afterAll(() => corruptStore.cleanup());

    it('fails verify with exit 1 and names the file', async () => {
      const run = await lifeline(['verify', corruptId, '--store', corruptStore.path], { env: noEnv });
      expect(run.code).toBe(1);
      expect(run.stdout).toMatch(/FAIL\s+postgres\.dump checksum/);
    });

    it('is refused by restore (exit 3) and the target is untouched', async () => {
      const before = await contentOf(target.conn);
      const run = await lifeline(['restore', '--store', corruptStore.path, '--backup', corruptId, '--target', target.url, '--confirm', target.name], { env: noEnv });
      expect(run.code).toBe(3);
      expect(run.stderr).toContain('fails its checksums');
      expect(await contentOf(target.conn)).toEqual(before);
      expect((await listBackups(new Catalog(corruptStore.path), 'default')).length).toBe(1);
      // The scratch database, created while the checksums were read, was dropped again.
      expect(await databasesLike('r%\\_lifeline\\_%')).toEqual([]);
    });

    it('with --skip-verify pg_restore fails half-way and the target is still exactly as it was', async () => {
      const before = await contentOf(target.conn);
      const run = await lifeline(['restore', '--store', corruptStore.path, '--backup', corruptId, '--target', target.url, '--confirm', target.name, '--skip-verify'], { env: noEnv });
      expect(run.code).toBe(1);
      expect(run.stderr).toMatch(/pg_restore|does not match/);
      expect(await contentOf(target.conn)).toEqual(before);
      expect(await databasesLike('r%\\_lifeline\\_%')).toEqual([]);
    });
  });

  it('--skip-verify is written into the restore record; a restore into the live database runs the post-restore hooks', async () => {
    const requests: string[] = [];
    const server: Server = createServer((req, res) => {
      requests.push(`${req.method} ${req.url}`);
      res.statusCode = req.url === '/api/revalidate' ? 500 : 200;
      res.end();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as { port: number }).port;
    const live = { ...adminConn(), database: `rlive_${Date.now()}` };
    created.push(live.database);
    const config = join(store.path, 'hooks.yml');
    writeFileSync(
      config,
      `version: 1\nenvironments:\n  default:\n    hooks:\n      postRestore:\n        - { http: "http://127.0.0.1:${port}/readyz", expectStatus: 200 }\n        - { http: "http://127.0.0.1:${port}/api/revalidate", method: POST }\n`,
    );
    try {
      const run = await lifeline(
        ['restore', '--config', config, '--store', store.path, '--database-url', formatPgUrl(live), '--backup', backupId, '--target', formatPgUrl(live), '--skip-verify', '--json'],
        { env: noEnv },
      );
      // The data is restored; the failing cache revalidation hook makes the command fail visibly.
      expect(run.code, run.stderr).toBe(1);
      expect(run.stderr).toContain('post-restore hook POST http://127.0.0.1');
      expect(requests).toEqual(['GET /readyz', 'POST /api/revalidate']);
      expect(await contentOf(live)).toEqual(sourceContent);
      const records = readFileSync(join(store.path, 'default', 'restores.jsonl'), 'utf8')
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l));
      expect(records.at(-1)).toMatchObject({ backupId, database: live.database, checksumsVerified: false });
      expect(JSON.stringify(records)).not.toContain(live.password!);
    } finally {
      server.close();
    }
  });

  it('restoreIntoFreshDatabase (the isolated drill restore) creates the database and checks it', async () => {
    const catalog = new Catalog(store.path);
    const backup = await findBackup(catalog, 'default', backupId);
    const fresh = { ...adminConn(), database: `rdrill_${Date.now()}` };
    created.push(fresh.database);
    const report = await restoreIntoFreshDatabase({ backup, runner: new LocalRunner(), target: fresh, jobs: 2, logger: createMemoryLogger() });
    expect(report.ok).toBe(true);
    expect(report.rowCounts.mismatches).toEqual([]);
    expect(await contentOf(fresh)).toEqual(sourceContent);
    // A second isolated restore into the same, now filled, database is refused.
    await expect(restoreIntoFreshDatabase({ backup, runner: new LocalRunner(), target: fresh, logger: createMemoryLogger() })).rejects.toMatchObject({ code: 'TARGET_NOT_EMPTY', exitCode: 3 });
  });
});
