import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, rmdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Catalog } from '../../src/catalog/store';
import { createMemoryLogger } from '../../src/logger';
import { createBackup } from '../../src/backup/create';
import { listBackups, findBackup } from '../../src/backup/metadata';
import { restoreIntoFreshDatabase } from '../../src/backup/restore';
import { PsqlSession } from '../../src/runner/psql';
import { LocalRunner, type Runner, type RunningTool, type ToolInvocation } from '../../src/runner/runner';
import { adminConn, createSampleDatabase, dropDatabase, tempDir } from '../helpers/db';

/** A runner whose pg_dump is killed (SIGKILL) after its first chunk of output. */
class KillingRunner implements Runner {
  readonly where = 'local binaries (pg_dump killed mid-stream)';
  private readonly inner = new LocalRunner();
  killed = false;
  start(invocation: ToolInvocation): RunningTool {
    const running = this.inner.start(invocation);
    if (invocation.tool === 'pg_dump' && invocation.args.includes('--format=custom')) {
      running.stdout.once('data', () => {
        this.killed = true;
        running.kill('SIGKILL');
      });
    }
    return running;
  }
}

function entriesIn(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

describe('backup faults: nothing incomplete ever lists', () => {
  let db: Awaited<ReturnType<typeof createSampleDatabase>>;
  beforeAll(async () => {
    db = await createSampleDatabase(6, 'fault');
  });
  afterAll(async () => {
    await dropDatabase(db.name);
  });

  it('pg_dump killed mid-stream: the backup fails, nothing lists, the staging directory is gone', async () => {
    const store = tempDir('lifeline-killed-');
    try {
      const catalog = new Catalog(store.path);
      const runner = new KillingRunner();
      await expect(createBackup({ catalog, environment: 'default', runner, conn: db.conn, label: 'manual', compressLevel: 0, logger: createMemoryLogger() })).rejects.toMatchObject({
        code: 'PG_DUMP_FAILED',
        exitCode: 1,
        message: expect.stringContaining('SIGKILL'),
      });
      expect(runner.killed).toBe(true);
      expect(await listBackups(catalog, 'default')).toEqual([]);
      expect(entriesIn(join(store.path, 'default', 'backups'))).toEqual([]);
      // The environment lock was released: the next backup runs.
      const next = await createBackup({ catalog, environment: 'default', runner: new LocalRunner(), conn: db.conn, label: 'manual', logger: createMemoryLogger() });
      expect((await listBackups(catalog, 'default')).map((b) => b.id)).toEqual([next.id]);
    } finally {
      store.cleanup();
    }
  });

  it('disk full (a 2 MB tmpfs store): the backup fails with a fix, nothing lists, no partial file is left', async () => {
    const store = tempDir('lifeline-full-');
    const mount = join(store.path, 'small');
    mkdirSync(mount);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=2m', 'tmpfs', mount]);
    try {
      const catalog = new Catalog(mount);
      const error = await createBackup({ catalog, environment: 'default', runner: new LocalRunner(), conn: db.conn, label: 'manual', compressLevel: 0, logger: createMemoryLogger() }).catch(
        (e: unknown) => e,
      );
      // The catalog's one description of a full disk: the path, what was not written, the fix.
      expect(error).toMatchObject({ code: 'FS_ENOSPC', exitCode: 1 });
      expect((error as Error).message).toMatch(/no space left on the device.*nothing was added to the catalog/);
      expect((error as { fix: string }).fix).toContain('free space');
      expect(await listBackups(catalog, 'default')).toEqual([]);
      expect(entriesIn(join(mount, 'default', 'backups'))).toEqual([]);
      expect(entriesIn(join(mount, 'default'))).toEqual(['backups']);
    } finally {
      execFileSync('umount', [mount]);
      rmdirSync(mount);
      store.cleanup();
    }
  });

  it('row counts come from the dump snapshot even while orders are being written', async () => {
    const store = tempDir('lifeline-busy-');
    const writer = PsqlSession.open(new LocalRunner(), db.conn);
    let writing = true;
    const written = (async () => {
      let n = 0;
      while (writing) {
        await writer.exec(
          `INSERT INTO orders (id, tenant_id, location_id, status, placed_at, total_cents) SELECT max(id) + 1, (SELECT id FROM tenants LIMIT 1), (SELECT min(id) FROM locations), 'placed', now(), 100 FROM orders`,
        );
        n++;
      }
      return n;
    })();
    try {
      const catalog = new Catalog(store.path);
      const backup = await createBackup({ catalog, environment: 'default', runner: new LocalRunner(), conn: db.conn, label: 'manual', logger: createMemoryLogger() });
      writing = false;
      expect(await written).toBeGreaterThan(0);
      const fresh = { ...adminConn(), database: `busy_${Date.now()}` };
      try {
        const report = await restoreIntoFreshDatabase({ backup: await findBackup(catalog, 'default', backup.id), runner: new LocalRunner(), target: fresh, logger: createMemoryLogger() });
        expect(report.rowCounts.mismatches).toEqual([]);
        expect(report.ok).toBe(true);
      } finally {
        await dropDatabase(fresh.database);
      }
    } finally {
      writing = false;
      await written.catch(() => 0);
      await writer.close();
      store.cleanup();
    }
  });
});
