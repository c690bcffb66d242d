// Checks taken while a parallel pg_restore still runs: each table counted once pg_restore reports
// its data loaded, each index checked once built. The result must equal checking afterwards,
// including for names that the `pg_restore --list` and --verbose lines cannot spell unambiguously.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Catalog } from '../../src/catalog/store';
import { createMemoryLogger } from '../../src/logger';
import { findBackup } from '../../src/backup/metadata';
import { restoreIntoFreshDatabase } from '../../src/backup/restore';
import { BtreeIndexChecker, checkAllBtreeIndexes } from '../../src/postgres/amcheck';
import { finishedIds, finishedItems, isRestoreProgressLine, parseTocItems, tableGates } from '../../src/postgres/restore-pipeline';
import { PsqlSession } from '../../src/runner/psql';
import { LocalRunner } from '../../src/runner/runner';
import { lifeline } from '../helpers/cli';
import { adminConn, createDatabase, createSampleDatabase, dropDatabase, query, sql, tableCounts, tempDir } from '../helpers/db';

const noEnv = { DATABASE_URL: undefined, REDIS_URL: undefined, LIFELINE_STORE: undefined, LIFELINE_ENV: undefined, LIFELINE_CONFIG: undefined };

describe('checks during a parallel restore', () => {
  let source: Awaited<ReturnType<typeof createSampleDatabase>>;
  const store = tempDir('lifeline-early-');
  const created: string[] = [];
  let backupId: string;

  beforeAll(async () => {
    source = await createSampleDatabase(2, 'esrc');
    // Names with spaces, a table name used in two schemas, and an empty table.
    await sql(
      [
        'CREATE SCHEMA "odd schema"',
        'CREATE TABLE "odd schema"."order items" (id int PRIMARY KEY, note text)',
        'INSERT INTO "odd schema"."order items" SELECT g, \'n\' || g FROM generate_series(1, 1234) g',
        'CREATE INDEX "odd note idx" ON "odd schema"."order items" (note)',
        'CREATE SCHEMA archive',
        'CREATE TABLE archive.orders (id int PRIMARY KEY)',
        'INSERT INTO archive.orders SELECT generate_series(1, 77)',
        'CREATE TABLE public.empty_table (id int)',
      ].join('; '),
      source.name,
    );
    const run = await lifeline(['backup', '--store', store.path, '--database-url', source.url, '--json'], { env: noEnv });
    expect(run.code, run.stderr).toBe(0);
    backupId = JSON.parse(run.stdout).id;
  });
  afterAll(async () => {
    for (const name of [source.name, ...created]) await dropDatabase(name);
    store.cleanup();
  });

  const backup = () => findBackup(new Catalog(store.path), 'default', backupId);

  it('counts tables and checks indexes while pg_restore runs, with the same result as afterwards', async () => {
    const early = { ...adminConn(), database: `eearly_${Date.now()}` };
    const late = { ...adminConn(), database: `elate_${Date.now()}` };
    created.push(early.database, late.database);
    const logger = createMemoryLogger();
    const withEarly = await restoreIntoFreshDatabase({ backup: await backup(), runner: new LocalRunner(), target: early, jobs: 2, indexCheck: true, logger });
    const afterwards = await restoreIntoFreshDatabase({ backup: await backup(), runner: new LocalRunner(), target: late, jobs: 2, indexCheck: true, earlyChecks: false, logger: createMemoryLogger() });

    expect(withEarly.ok).toBe(true);
    expect(withEarly.rowCounts.mismatches).toEqual([]);
    // Every table with a TABLE DATA item was counted during the restore, the odd names included.
    const withData = Object.keys((await backup()).metadata.rowCounts).length;
    expect(withEarly.countedDuringRestore, logger.lines.join('\n')).toBe(withData);
    expect(afterwards.countedDuringRestore).toBe(0);
    expect(withEarly.rowCounts).toEqual(afterwards.rowCounts);
    expect(withEarly.schemaFingerprint).toEqual(afterwards.schemaFingerprint);
    const counts = await tableCounts(early.database);
    expect(counts['"odd schema"."order items"']).toBe(1234);
    expect(withEarly.indexes).toMatchObject({ passed: true, checked: afterwards.indexes!.checked });
    expect(withEarly.indexes!.checked).toBeGreaterThan(5);
    // ANALYZE ran on the restored tables (planner statistics exist), odd names included.
    const analyzed = await query<{ t: string }>(
      `SELECT DISTINCT schemaname || '.' || tablename AS t FROM pg_stats WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1`,
      early.database,
    );
    expect(analyzed.map((r) => r.t)).toEqual(expect.arrayContaining(['archive.orders', 'odd schema.order items', 'public.orders', 'public.order_items']));
  });

  it("refuses a fresh-database restore into a target that already holds one of the archive's schemas, before pg_restore runs", async () => {
    // This used to reach pg_restore and test how its error is reported; any user object now makes the
    // target non-empty, so the restore stops first. How a pg_restore error under --jobs 2 is reported
    // (the error, never the progress lines) is tested in restore-roles.test.ts (a missing owner role).
    const target = await createDatabase('efail');
    created.push(target.name);
    await sql('CREATE SCHEMA "odd schema"', target.name);
    const error = await restoreIntoFreshDatabase({ backup: await backup(), runner: new LocalRunner(), target: target.conn, jobs: 2, logger: createMemoryLogger() }).catch((e: Error) => e);
    expect(error).toMatchObject({ exitCode: 3 });
    expect((error as Error).message).toMatch(/odd schema/);
    expect((error as Error).message).not.toMatch(/launching item|finished item|processing item/);
  });

  it('amcheck finds an index whose order no longer holds, in every way the checks run', async () => {
    // The classic amcheck test: build an index with one comparison function, then reverse the function.
    const db = await createDatabase('ebad');
    created.push(db.name);
    await sql(
      [
        "CREATE FUNCTION lifeline_cmp(int4, int4) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT btint4cmp($1, $2)'",
        'CREATE OPERATOR CLASS lifeline_ops FOR TYPE int4 USING btree AS OPERATOR 1 <, OPERATOR 2 <=, OPERATOR 3 =, OPERATOR 4 >=, OPERATOR 5 >, FUNCTION 1 lifeline_cmp(int4, int4)',
        'CREATE TABLE t (x int PRIMARY KEY)',
        'INSERT INTO t SELECT generate_series(1, 2000)',
        'CREATE INDEX t_bad ON t (x lifeline_ops)',
        "CREATE OR REPLACE FUNCTION lifeline_cmp(int4, int4) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT btint4cmp($2, $1)'",
      ].join('; '),
      db.name,
    );
    const open = () => PsqlSession.open(new LocalRunner(), db.conn);
    for (const parallel of [1, 2]) {
      const outcome = await checkAllBtreeIndexes(open, parallel);
      expect(outcome.passed).toBe(false);
      expect(outcome.broken.map((b) => b.index)).toEqual(['t_bad']);
      expect(outcome.detail).toMatch(/^1 of \d+ indexes fail: t_bad \(.*order/);
      expect(outcome.checked).toBeGreaterThan(10);
    }
    for (const alone of [false, true]) {
      const session = open();
      try {
        const checker = new BtreeIndexChecker(session);
        await checker.sweep({ alone });
        await checker.sweep({ alone });
        expect(checker.outcome()).toMatchObject({ passed: false, broken: [{ index: 't_bad' }] });
      } finally {
        await session.close();
      }
    }
  });

  it('parses the table of contents with its dependencies, gates each count behind its exclusive locks, and tells progress from problems', () => {
    const items = parseTocItems(
      [
        '; Archive created at 2026-11-22',
        ';     Dump Version: 1.14-0',
        '214; 1259 16385 TABLE public tenants postgres',
        '217; 1259 16408 TABLE public orders postgres',
        '230; 1259 16500 TABLE odd schema order items postgres',
        '3389; 0 16390 TABLE DATA public tenants postgres',
        ';\tdepends on: 214',
        '3392; 0 16408 TABLE DATA public orders postgres',
        ';\tdepends on: 217',
        '3400; 0 16500 TABLE DATA odd schema order items postgres',
        ';\tdepends on: 230',
        '3224; 2606 16391 CONSTRAINT public tenants tenants_pkey postgres',
        ';\tdepends on: 214',
        '3230; 2606 16414 CONSTRAINT public orders orders_pkey postgres',
        ';\tdepends on: 217',
        '3231; 1259 16468 INDEX public orders_tenant_placed_idx postgres',
        ';\tdepends on: 217',
        '3243; 2606 16443 FK CONSTRAINT public orders orders_tenant_fk postgres',
        ';\tdepends on: 217 3224',
        '3250; 2618 16600 RULE public orders orders_no_delete postgres',
        ';\tdepends on: 217 3392',
        '3251; 0 0 COMMENT public CONSTRAINT orders_pkey ON orders postgres',
        ';\tdepends on: 3230',
      ].join('\n'),
    );
    expect(items.get(3392)).toEqual({ id: 3392, desc: 'TABLE DATA', rest: 'public orders postgres', deps: [217] });
    expect(items.get(3400)).toMatchObject({ desc: 'TABLE DATA', rest: 'odd schema order items postgres' });
    expect(items.get(3243)).toMatchObject({ desc: 'FK CONSTRAINT', deps: [217, 3224] });
    // A count waits for what locks its table exclusively (a key, a rule), never for an index or a foreign key.
    const gates = tableGates(items);
    expect([...gates.keys()]).toEqual([3389, 3392, 3400]);
    expect([...gates.get(3392)!.countAfter].sort()).toEqual([3230, 3250]);
    expect([...gates.get(3389)!.countAfter]).toEqual([3224]);
    expect([...gates.get(3400)!.countAfter]).toEqual([]);
    expect(finishedIds('pg_restore: finished item 3230 CONSTRAINT orders orders_pkeypg_restore: finished item 3243 FK CONSTRAINT orders orders_tenant_fk')).toEqual([3230, 3243]);
    expect(isRestoreProgressLine('pg_restore: finished item 3390 TABLE DATA locations')).toBe(true);
    expect(isRestoreProgressLine('pg_restore: error: could not execute query: ERROR:  schema "x" already exists')).toBe(false);
    expect(isRestoreProgressLine('Command was: CREATE SCHEMA x;')).toBe(false);
    expect(isRestoreProgressLine('pg_restore: warning: errors ignored on restore: 1')).toBe(false);
    // Two workers writing at once: one line can carry another's prefix.
    expect(isRestoreProgressLine('pg_restore: pg_restore: error: could not execute query')).toBe(false);
  });

  it('finds every finished item in interleaved worker output', () => {
    const seen: string[] = [];
    for (const line of [
      'pg_restore: pg_restore: finished item 3390 TABLE DATA locations',
      'finished item 3391 TABLE DATA menu_items',
      'pg_restore: finished item 3226 CONSTRAINT locations locations_pkeypg_restore: finished item 3232 INDEX order_items_order_idx',
      'pg_restore: launching item 3392 TABLE DATA orders',
      'pg_restore: finished item 3240 FK CONSTRAINT locations locations_tenant_fk',
    ]) {
      for (const item of finishedItems(line)) seen.push(`${item.id} ${item.kind}`);
    }
    expect(seen).toEqual(['3390 TABLE DATA', '3391 TABLE DATA', '3226 CONSTRAINT', '3232 INDEX']);
  });
});
