import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMemoryLogger } from '../../src/logger';
import { restoreIntoFreshDatabase } from '../../src/backup/restore';
import { findBackup } from '../../src/backup/metadata';
import { Catalog } from '../../src/catalog/store';
import { formatPgUrl, type PgConnection } from '../../src/runner/postgres-env';
import { PsqlSession } from '../../src/runner/psql';
import { lifeline, type CliRun } from '../helpers/cli';
import { adminConn, createDatabase, createSampleDatabase, dropDatabase, query, runner, sql, tableCounts, tempDir } from '../helpers/db';

const noEnv = { DATABASE_URL: undefined, REDIS_URL: undefined, LIFELINE_STORE: undefined, LIFELINE_ENV: undefined, LIFELINE_CONFIG: undefined };

/** Scratch and replaced copies of `database` (other test files restore on the same server meanwhile). */
async function lifelineDatabases(database: string): Promise<string[]> {
  const rows = await query<{ datname: string }>(`SELECT datname FROM pg_database WHERE starts_with(datname, '${database}_lifeline_') ORDER BY 1`, 'postgres');
  return rows.map((r) => r.datname);
}

function jsonError(run: CliRun): { code: string; message: string; fix: string } {
  return JSON.parse(run.stdout).error;
}

async function waitFor(condition: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await condition()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what}`);
}

/** A psql session kept open by the test (idle, or holding a lock), ended by its pid. */
function openSession(conn: PgConnection, statements: string): { child: ChildProcess; end: () => void } {
  const child = spawn('psql', ['-X', '-q', '-v', 'ON_ERROR_STOP=1'], {
    env: { ...process.env, PGHOST: conn.host, PGPORT: String(conn.port), PGUSER: conn.user ?? '', PGPASSWORD: conn.password ?? '', PGDATABASE: conn.database },
    stdio: ['pipe', 'ignore', 'ignore'],
  });
  child.stdin!.write(`${statements}\n`);
  return {
    child,
    end: () => {
      if (child.exitCode === null) child.kill('SIGKILL');
    },
  };
}

async function databaseLevel(database: string) {
  const [row] = await query<{ acl: string[] | null; settings: string[] | null; connlimit: number; comment: string | null; roles: Record<string, string[]> | null }>(
    `SELECT (SELECT array_agg(a ORDER BY a) FROM unnest(d.datacl::text[]) a) AS acl,
            (SELECT setconfig FROM pg_db_role_setting s WHERE s.setdatabase = d.oid AND s.setrole = 0) AS settings,
            (SELECT json_object_agg(pg_get_userbyid(s.setrole), s.setconfig) FROM pg_db_role_setting s WHERE s.setdatabase = d.oid AND s.setrole <> 0) AS roles,
            d.datconnlimit AS connlimit, shobj_description(d.oid, 'pg_database') AS comment
       FROM pg_database d WHERE datname = '${database}'`,
    'postgres',
  );
  return row!;
}

describe('restore safety', () => {
  const store = tempDir('lifeline-restore-safety-');
  const drops: string[] = [];
  const roles: string[] = [];
  let source: Awaited<ReturnType<typeof createSampleDatabase>>;
  let backupId: string;
  let sourceCounts: Record<string, number>;

  const cli = (args: string[], env: Record<string, string | undefined> = {}) => lifeline([...args, '--store', store.path], { env: { ...noEnv, ...env } });
  const restore = (target: string, extra: string[] = [], env: Record<string, string | undefined> = {}) =>
    cli(['restore', '--database-url', source.url, '--backup', backupId, '--target', target, '--json', ...extra], env);

  beforeAll(async () => {
    source = await createSampleDatabase(2, 'safesrc');
    drops.push(source.name);
    sourceCounts = await tableCounts(source.name);
    const run = await cli(['backup', '--database-url', source.url, '--json']);
    expect(run.code, run.stderr).toBe(0);
    backupId = JSON.parse(run.stdout).id;
  });
  afterAll(async () => {
    for (const name of drops) await dropDatabase(name);
    for (const role of roles) await sql(`DROP ROLE IF EXISTS "${role}"`).catch(() => {});
    store.cleanup();
  });

  describe('the destructive decision is taken under the lock and looked at again before the swap', () => {
    it('rows written into an empty target while the restore waits for the lock: refused (exit 3), the rows are kept', async () => {
      const target = await createDatabase('safewait');
      drops.push(target.name);
      // Another run holds the environment lock: a live process on this host.
      const holder = spawn('sleep', ['120'], { stdio: 'ignore' });
      const envDir = join(store.path, 'default');
      mkdirSync(envDir, { recursive: true });
      writeFileSync(join(envDir, '.lock'), JSON.stringify({ owner: 'test', pid: holder.pid, host: hostname(), command: 'backup (test)', acquiredAt: new Date().toISOString() }));
      try {
        const running = restore(target.url);
        // The restore has checked the connection and now waits for the lock; the target is empty.
        await new Promise((r) => setTimeout(r, 4000));
        await sql('CREATE TABLE orders_written_meanwhile (id int); INSERT INTO orders_written_meanwhile SELECT generate_series(1, 25)', target.name);
        rmSync(join(envDir, '.lock'));
        const run = await running;
        expect(run.code, run.stderr).toBe(3);
        const error = jsonError(run);
        expect(error.code).toBe('CONFIRMATION_REQUIRED');
        expect(error.message).toContain(`${target.conn.host}:${target.conn.port}/${target.name}`);
        expect(error.message).toContain('orders_written_meanwhile');
      } finally {
        holder.kill('SIGKILL');
        rmSync(join(envDir, '.lock'), { force: true });
      }
      expect(await tableCounts(target.name)).toEqual({ 'public.orders_written_meanwhile': 25 });
      expect(await lifelineDatabases(target.name)).toEqual([]);
    }, 480_000);

    it('rows written into an empty target while pg_restore runs: refused before the swap (exit 3), the rows are kept', async () => {
      const target = await createDatabase('saferace');
      drops.push(target.name);
      const running = restore(target.url, ['--jobs', '1']);
      await waitFor(async () => (await lifelineDatabases(target.name)).some((d) => d.includes('_lifeline_restore_')), 60_000, 'the scratch database');
      await sql('CREATE TABLE late_orders (id int); INSERT INTO late_orders VALUES (1), (2), (3)', target.name);
      const run = await running;
      expect(run.code, run.stderr).toBe(3);
      expect(jsonError(run).code).toBe('TARGET_CHANGED');
      expect(jsonError(run).message).toContain('late_orders');
      expect(await tableCounts(target.name)).toEqual({ 'public.late_orders': 3 });
      expect(await lifelineDatabases(target.name)).toEqual([]);
    });

    it('with --confirm, what was written while pg_restore ran is in the pre-restore backup; a failed restore log is a warning, the undo is printed', async () => {
      const target = await createDatabase('safeconfirm');
      drops.push(target.name);
      // The restore log cannot be appended (a directory in its place): the restore still succeeded.
      const log = join(store.path, 'default', 'restores.jsonl');
      mkdirSync(log, { recursive: true });
      const idle = openSession(target.conn, 'SELECT 1;');
      try {
        const running = restore(target.url, ['--confirm', target.name, '--jobs', '1']);
        await waitFor(async () => (await lifelineDatabases(target.name)).some((d) => d.includes('_lifeline_restore_')), 60_000, 'the scratch database');
        await sql('CREATE TABLE late_orders (id int); INSERT INTO late_orders SELECT generate_series(1, 7)', target.name);
        const run = await running;
        expect(run.code, run.stderr).toBe(0);
        const result = JSON.parse(run.stdout);
        expect(result.preRestoreBackupId).toMatch(/^\d{8}T/);
        expect(result.undoCommand).toContain(`--backup ${result.preRestoreBackupId}`);
        expect(result.undoCommand).toContain(`--confirm ${target.name}`);
        expect(result.warnings.join('\n')).toMatch(/restores\.jsonl/);
        expect(result.sessionsTerminated).toBeGreaterThanOrEqual(1);
        const pre = await findBackup(new Catalog(store.path), 'default', result.preRestoreBackupId);
        expect(pre.metadata.rowCounts).toEqual({ 'public.late_orders': 7 });
        expect(pre.metadata.database).toBe(target.name);
        expect(await tableCounts(target.name)).toEqual(sourceCounts);
        // Text mode prints the same result with the undo command.
      } finally {
        idle.end();
        rmSync(log, { recursive: true, force: true });
      }
      expect(await lifelineDatabases(target.name)).toEqual([]);
    }, 480_000);
  });

  describe('every kind of user object counts as data', () => {
    const kinds: [string, string, string][] = [
      ['a large object', `SELECT lo_from_bytea(0, 'receipt scan')`, 'large object'],
      ['a materialized view', 'CREATE MATERIALIZED VIEW daily AS SELECT 1 AS n', 'materialized view'],
      ['a view', 'CREATE VIEW v AS SELECT 1 AS n', 'view'],
      ['a sequence', 'CREATE SEQUENCE invoice_numbers START 1000', 'sequence'],
      ['a function', 'CREATE FUNCTION add_tax(numeric) RETURNS numeric LANGUAGE sql AS $$ SELECT $1 * 1.2 $$', 'function'],
      ['an enum type', `CREATE TYPE order_state AS ENUM ('open', 'paid')`, 'type'],
      ['an extension', 'CREATE EXTENSION pg_trgm', 'extension'],
      ['a schema', 'CREATE SCHEMA archive', 'schema'],
    ];
    for (const [what, statement, kind] of kinds) {
      it(`a database holding only ${what} needs --confirm (exit 3 without, nothing touched)`, async () => {
        const target = await createDatabase('safeobj');
        drops.push(target.name);
        await sql(statement, target.name);
        const counts = await tableCounts(target.name);
        const run = await restore(target.url);
        expect(run.code, run.stderr).toBe(3);
        expect(jsonError(run).code).toBe('CONFIRMATION_REQUIRED');
        expect(jsonError(run).message).toContain(kind);
        expect(await tableCounts(target.name)).toEqual(counts);
        const objects = await query<{ n: number }>(
          `SELECT (SELECT count(*) FROM pg_largeobject_metadata) + (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public') + (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public') + (SELECT count(*) FROM pg_namespace WHERE nspname = 'archive') + (SELECT count(*) FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE n.nspname = 'public') AS n`,
          target.name,
        );
        expect(Number(objects[0]!.n)).toBeGreaterThan(0);
      });
    }

    it('with --confirm, a database holding only a large object gets a pre-restore backup that holds it', async () => {
      const target = await createDatabase('safelo');
      drops.push(target.name);
      await sql(`SELECT lo_from_bytea(4242, 'receipt scan')`, target.name);
      const run = await restore(target.url, ['--confirm', target.name]);
      expect(run.code, run.stderr).toBe(0);
      const result = JSON.parse(run.stdout);
      expect(result.destructive).toBe(true);
      const pre = await findBackup(new Catalog(store.path), 'default', result.preRestoreBackupId);
      const restored = await createDatabase('safelo_undo');
      drops.push(restored.name);
      await restoreIntoFreshDatabase({ backup: pre, runner, logger: createMemoryLogger(), target: restored.conn });
      expect(await query<{ data: string }>(`SELECT convert_from(lo_get(4242), 'UTF8') AS data`, restored.name)).toEqual([{ data: 'receipt scan' }]);
    });

    it('a drill refuses a target that holds only a materialized view (exit 3), and leaves it as it was', async () => {
      const target = await createDatabase('safedrill');
      drops.push(target.name);
      await sql('CREATE MATERIALIZED VIEW daily AS SELECT 1 AS n', target.name);
      const run = await cli(['drill', '--database-url', source.url, '--target', target.url, '--json']);
      expect(run.code, run.stderr).toBe(3);
      expect(jsonError(run).code).toBe('TARGET_NOT_EMPTY');
      expect(jsonError(run).message).toContain('materialized view');
      expect(await query(`SELECT n FROM daily`, target.name)).toEqual([{ n: 1 }]);
      expect(await query(`SELECT count(*)::int AS n FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace WHERE s.nspname = 'public'`, target.name)).toEqual([{ n: 1 }]);
    });
  });

  describe('any object created after initdb counts as data, and a template database is never a target', () => {
    // [what, statement, the kind the refusal names, a query counting the object afterwards]
    const kinds: [string, string, string, string][] = [
      [
        'a user-defined cast',
        'CREATE CAST (date AS int4) WITHOUT FUNCTION',
        'cast from date to integer',
        `SELECT count(*)::int AS n FROM pg_cast WHERE castsource = 'date'::regtype AND casttarget = 'int4'::regtype`,
      ],
      ['default privileges', 'ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO PUBLIC', 'default privileges', 'SELECT count(*)::int AS n FROM pg_default_acl'],
      ['a table access method', 'CREATE ACCESS METHOD myheap TYPE TABLE HANDLER heap_tableam_handler', 'access method myheap', `SELECT count(*)::int AS n FROM pg_am WHERE amname = 'myheap'`],
      [
        'a comment on schema public',
        `COMMENT ON SCHEMA public IS 'tenant data lives here'`,
        'schema public (its comment)',
        `SELECT count(*)::int AS n FROM pg_description WHERE objoid = 'public'::regnamespace AND description = 'tenant data lives here'`,
      ],
      [
        'a grant on schema public',
        'GRANT CREATE ON SCHEMA public TO PUBLIC',
        'schema public (its privileges)',
        `SELECT count(*)::int AS n FROM pg_namespace WHERE nspname = 'public' AND has_schema_privilege('public', oid, 'CREATE')`,
      ],
      [
        'a text search dictionary',
        'CREATE TEXT SEARCH DICTIONARY public.mydict (TEMPLATE = simple, STOPWORDS = english)',
        'text search dictionary mydict',
        `SELECT count(*)::int AS n FROM pg_ts_dict WHERE dictname = 'mydict'`,
      ],
      ['an operator family', 'CREATE OPERATOR FAMILY public.f USING btree', 'operator family f', `SELECT count(*)::int AS n FROM pg_opfamily WHERE opfname = 'f'`],
      ['a conversion', `CREATE CONVERSION public.c FOR 'LATIN1' TO 'UTF8' FROM iso8859_1_to_utf8`, 'conversion c', `SELECT count(*)::int AS n FROM pg_conversion WHERE conname = 'c'`],
      [
        'an operator class',
        'CREATE OPERATOR CLASS public.oc FOR TYPE int4 USING btree AS OPERATOR 1 <, OPERATOR 3 =, FUNCTION 1 btint4cmp(int4, int4)',
        'operator family oc',
        `SELECT count(*)::int AS n FROM pg_opclass WHERE opcname = 'oc'`,
      ],
      ['a procedural language', 'CREATE LANGUAGE l HANDLER plpgsql_call_handler', 'language l', `SELECT count(*)::int AS n FROM pg_language WHERE lanname = 'l'`],
      ['a foreign data wrapper with no server', 'CREATE FOREIGN DATA WRAPPER w', 'foreign-data wrapper w', `SELECT count(*)::int AS n FROM pg_foreign_data_wrapper WHERE fdwname = 'w'`],
    ];
    for (const [what, statement, named, still] of kinds) {
      it(`a database holding only ${what} needs --confirm (exit 3 without, named, the object kept)`, async () => {
        const target = await createDatabase('safeoid');
        drops.push(target.name);
        expect(await query<{ n: number }>(still, target.name)).toEqual([{ n: 0 }]);
        await sql(statement, target.name);
        const run = await restore(target.url);
        expect(run.code, run.stderr).toBe(3);
        expect(jsonError(run).code).toBe('CONFIRMATION_REQUIRED');
        expect(jsonError(run).message).toContain(named);
        expect(await query<{ n: number }>(still, target.name)).toEqual([{ n: 1 }]);
        expect(await tableCounts(target.name)).toEqual({});
        expect(await lifelineDatabases(target.name)).toEqual([]);
      });
    }

    it('a fresh database (a copy of template1, oids and all) and one where a session used temporary tables are still empty: restored without --confirm', async () => {
      for (const prefix of ['safefresh', 'safetemp']) {
        const target = await createDatabase(prefix);
        drops.push(target.name);
        // A temporary table leaves pg_temp_N / pg_toast_temp_N schemas (oids above 16384) behind.
        if (prefix === 'safetemp') await sql('CREATE TEMP TABLE scratch (id int PRIMARY KEY DEFAULT 1); INSERT INTO scratch DEFAULT VALUES', target.name);
        const run = await restore(target.url);
        expect(run.code, run.stderr).toBe(0);
        expect(JSON.parse(run.stdout).destructive).toBe(false);
        expect(await tableCounts(target.name)).toEqual(sourceCounts);
      }
    }, 240_000);

    const templateTables = () =>
      query<{ name: string }>(
        `SELECT format('%I.%I', n.nspname, c.relname) AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') ORDER BY 1`,
        'template1',
      );

    it('template1 is refused with and without --confirm (exit 3, nothing changed), by restore and by a drill', async () => {
      const before = await templateTables();
      const url = formatPgUrl({ ...adminConn(), database: 'template1' });
      for (const extra of [[], ['--confirm', 'template1']]) {
        const run = await restore(url, extra);
        expect(run.code, run.stderr).toBe(3);
        expect(jsonError(run).code).toBe('TARGET_IS_TEMPLATE');
        expect(jsonError(run).message).toContain('/template1 is a template database');
        expect(jsonError(run).fix).toContain('application database');
      }
      const drill = await cli(['drill', '--database-url', source.url, '--target', url, '--json']);
      expect(drill.code, drill.stderr).toBe(3);
      expect(jsonError(drill).code).toBe('TARGET_IS_TEMPLATE');
      expect(await templateTables()).toEqual(before);
      expect(await lifelineDatabases('template1')).toEqual([]);
      expect(await query(`SELECT datistemplate FROM pg_database WHERE datname = 'template1'`, 'postgres')).toEqual([{ datistemplate: true }]);
    }, 240_000);

    it('any database marked as a template is refused even with --confirm (exit 3), its tables kept', async () => {
      const target = await createDatabase('safetpl');
      await sql('CREATE TABLE kept (id int); INSERT INTO kept VALUES (1)', target.name);
      await sql(`ALTER DATABASE "${target.name}" IS_TEMPLATE true`);
      try {
        const run = await restore(target.url, ['--confirm', target.name]);
        expect(run.code, run.stderr).toBe(3);
        expect(jsonError(run).code).toBe('TARGET_IS_TEMPLATE');
        expect(await tableCounts(target.name)).toEqual({ 'public.kept': 1 });
        expect(await lifelineDatabases(target.name)).toEqual([]);
      } finally {
        await sql(`ALTER DATABASE "${target.name}" IS_TEMPLATE false`);
        drops.push(target.name);
      }
    });
  });

  describe('database-level state survives a restore', () => {
    it('privileges, settings, role settings, connection limit and comment are restored, and the pre-restore backup carries the old ones', async () => {
      const role = `safe_role_${Date.now()}`;
      roles.push(role);
      await sql(`CREATE ROLE "${role}"`);
      const db = await createSampleDatabase(1, 'safestate');
      drops.push(db.name);
      await sql(`REVOKE CONNECT, TEMPORARY ON DATABASE "${db.name}" FROM PUBLIC; GRANT CONNECT ON DATABASE "${db.name}" TO "${role}"`);
      await sql(`ALTER DATABASE "${db.name}" SET search_path = "$user", app, public; ALTER DATABASE "${db.name}" SET statement_timeout = '5min'`);
      await sql(`ALTER ROLE "${role}" IN DATABASE "${db.name}" SET work_mem = '8MB'; ALTER DATABASE "${db.name}" CONNECTION LIMIT 42; COMMENT ON DATABASE "${db.name}" IS 'orders of the restaurants'`);
      const expected = await databaseLevel(db.name);
      expect(expected.acl).not.toBeNull();
      const run = await cli(['backup', '--database-url', db.url, '--json']);
      expect(run.code, run.stderr).toBe(0);
      const id = JSON.parse(run.stdout).id;
      const backupJson = JSON.parse(readFileSync(join(store.path, 'default', 'backups', id, 'backup.json'), 'utf8'));
      expect(backupJson.databaseState.acl).toContain(`${role} CONNECT`);

      // The database drifts: privileges back to the defaults, settings gone, another limit and comment.
      await sql(
        `GRANT CONNECT, TEMPORARY ON DATABASE "${db.name}" TO PUBLIC; REVOKE ALL ON DATABASE "${db.name}" FROM "${role}"; ALTER DATABASE "${db.name}" RESET ALL; ALTER ROLE "${role}" IN DATABASE "${db.name}" RESET ALL; ALTER DATABASE "${db.name}" CONNECTION LIMIT -1; COMMENT ON DATABASE "${db.name}" IS 'drifted'`,
      );
      const drifted = await databaseLevel(db.name);
      const restored = await cli(['restore', '--database-url', db.url, '--backup', id, '--target', db.url, '--confirm', db.name, '--json']);
      expect(restored.code, restored.stderr).toBe(0);
      const result = JSON.parse(restored.stdout);
      expect(result.databaseState).toMatchObject({ recorded: true, ok: true, privileges: true, differences: [] });
      expect(await databaseLevel(db.name)).toEqual(expected);
      const pre = JSON.parse(readFileSync(join(store.path, 'default', 'backups', result.preRestoreBackupId, 'backup.json'), 'utf8'));
      expect(pre.databaseState.comment).toBe('drifted');
      expect(pre.databaseState.connectionLimit).toBe(-1);
      expect(drifted.comment).toBe('drifted');
    }, 480_000);

    it('a privilege that cannot be applied (its role is gone) fails the checks, named, and the target is untouched', async () => {
      const role = `safe_gone_${Date.now()}`;
      await sql(`CREATE ROLE "${role}"`);
      const db = await createSampleDatabase(1, 'safegone');
      drops.push(db.name);
      await sql(`GRANT CONNECT ON DATABASE "${db.name}" TO "${role}"`);
      const run = await cli(['backup', '--database-url', db.url, '--json']);
      expect(run.code, run.stderr).toBe(0);
      const id = JSON.parse(run.stdout).id;
      await sql(`REVOKE ALL ON DATABASE "${db.name}" FROM "${role}"; DROP ROLE "${role}"`);
      // Written after the backup: a restore that went ahead would lose it.
      await sql('CREATE TABLE marker (id int); INSERT INTO marker VALUES (1)', db.name);
      const before = await tableCounts(db.name);
      const restored = await cli(['restore', '--database-url', db.url, '--backup', id, '--target', db.url, '--confirm', db.name, '--json']);
      expect(restored.code, restored.stderr).toBe(1);
      const error = jsonError(restored);
      expect(error.code).toBe('RESTORE_CHECK_FAILED');
      expect(error.message).toContain(role);
      expect(await tableCounts(db.name)).toEqual(before);
      expect(await lifelineDatabases(db.name)).toEqual([]);
    }, 480_000);
  });

  describe('a backup belongs to a database', () => {
    it('"latest" is the newest backup of the target\'s database; another database\'s needs its id; backups lists database and server', async () => {
      const envStore = tempDir('lifeline-latest-');
      try {
        const other = await createDatabase('safeother');
        drops.push(other.name);
        await sql('CREATE TABLE one_off (id int); INSERT INTO one_off VALUES (1)', other.name);
        const run = (args: string[]) => lifeline([...args, '--store', envStore.path, '--env', 'production'], { env: noEnv });
        const own = await run(['backup', '--database-url', source.url, '--json']);
        expect(own.code, own.stderr).toBe(0);
        const ownId = JSON.parse(own.stdout).id;
        // A one-off backup of another database, taken later.
        const oneOff = await run(['backup', '--database-url', other.url, '--json']);
        expect(oneOff.code, oneOff.stderr).toBe(0);
        const oneOffId = JSON.parse(oneOff.stdout).id;

        const [sysid] = await query<{ id: string }>('SELECT system_identifier::text AS id FROM pg_control_system()', 'postgres');
        const listing = await run(['backups', '--json']);
        expect(listing.code, listing.stderr).toBe(0);
        const rows = JSON.parse(listing.stdout);
        expect(rows.map((r: { id: string; database: string; server: string }) => [r.id, r.database, r.server])).toEqual([
          [oneOffId, other.name, sysid!.id],
          [ownId, source.name, sysid!.id],
        ]);
        const text = await run(['backups']);
        expect(text.stdout).toMatch(new RegExp(`${oneOffId}\\s+manual\\s+${other.name}\\s+${sysid!.id}`));

        // latest into the source database picks its own backup, not the newer one-off.
        const copy = await createDatabase('safelatest');
        drops.push(copy.name);
        const intoFresh = await run(['restore', '--database-url', source.url, '--target', copy.url, '--json']);
        expect(intoFresh.code).toBe(2);
        expect(jsonError(intoFresh).code).toBe('NO_BACKUP_OF_TARGET');
        expect(jsonError(intoFresh).message).toContain(oneOffId);
        expect(jsonError(intoFresh).fix).toContain('--backup <id>');
        expect(await tableCounts(copy.name)).toEqual({});

        // By id, another database's backup is restored and the result says whose it is.
        const byId = await run(['restore', '--database-url', source.url, '--backup', ownId, '--target', copy.url, '--json']);
        expect(byId.code, byId.stderr).toBe(0);
        expect(JSON.parse(byId.stdout)).toMatchObject({ backupId: ownId, sourceDatabase: source.name, database: copy.name });
        expect(byId.stderr).toContain(`backup ${ownId} is of database ${source.name}`);

        // A backup recorded on another server is not "latest" for this one.
        const ownJson = join(envStore.path, 'production', 'backups', ownId, 'backup.json');
        const meta = JSON.parse(readFileSync(ownJson, 'utf8'));
        const sumsBefore = readFileSync(join(envStore.path, 'production', 'backups', ownId, 'SHA256SUMS'), 'utf8');
        writeFileSync(ownJson, JSON.stringify({ ...meta, systemIdentifier: '1234567890123456789' }));
        const elsewhere = await run(['restore', '--database-url', source.url, '--target', source.url, '--confirm', source.name, '--json']);
        expect(elsewhere.code).toBe(2);
        expect(jsonError(elsewhere).message).toContain('another server');
        expect(readFileSync(join(envStore.path, 'production', 'backups', ownId, 'SHA256SUMS'), 'utf8')).toBe(sumsBefore);
        expect(await tableCounts(source.name)).toEqual(sourceCounts);
      } finally {
        envStore.cleanup();
      }
    }, 480_000);
  });

  describe('inherited libpq variables never redirect a child tool', () => {
    it('backup and restore go exactly where the URLs say, whatever PG* variables the shell has', async () => {
      const target = await createDatabase('safeenv');
      drops.push(target.name);
      const hostile = {
        PGHOST: '127.0.0.2',
        PGHOSTADDR: '127.0.0.3',
        PGPORT: '1',
        PGDATABASE: 'postgres',
        PGUSER: 'nobody_here',
        PGPASSWORD: 'not-the-password',
        PGSERVICE: 'no_such_service',
        PGSERVICEFILE: '/nonexistent/pg_service.conf',
        PGOPTIONS: '-c default_transaction_read_only=on',
        PGTARGETSESSIONATTRS: 'standby',
        PGSSLMODE: 'require',
        PGCONNECT_TIMEOUT: '1',
      };
      const backup = await cli(['backup', '--database-url', source.url, '--json'], hostile);
      expect(backup.code, backup.stderr).toBe(0);
      const id = JSON.parse(backup.stdout).id;
      const run = await cli(['restore', '--database-url', source.url, '--backup', id, '--target', target.url, '--json'], hostile);
      expect(run.code, run.stderr).toBe(0);
      expect(await tableCounts(target.name)).toEqual(sourceCounts);
      // The refusal names the server, not only the database.
      const again = await cli(['restore', '--database-url', source.url, '--backup', id, '--target', target.url, '--json'], hostile);
      expect(again.code).toBe(3);
      expect(jsonError(again).message).toContain(`${target.conn.host}:${target.conn.port}/${target.name}`);
    }, 480_000);
  });

  describe('post-restore hooks and the drill decide "live database" the same way', () => {
    it('a restore into the live database under another loopback spelling runs the hooks; into another database it does not', async () => {
      const live = await createSampleDatabase(1, 'safelive');
      drops.push(live.name);
      const marker = join(store.path, 'hook-ran');
      const config = join(store.path, 'hooks-live.yml');
      writeFileSync(config, `version: 1\nenvironments:\n  default:\n    hooks:\n      postRestore:\n        - { command: ["touch", "${marker}"] }\n`);
      const liveUrl = formatPgUrl({ ...live.conn, host: 'localhost' });
      const other = await createDatabase('safenotlive');
      drops.push(other.name);
      const elsewhere = await cli(['restore', '--config', config, '--database-url', liveUrl, '--backup', backupId, '--target', other.url, '--json']);
      expect(elsewhere.code, elsewhere.stderr).toBe(0);
      expect(existsSync(marker)).toBe(false);
      const intoLive = await cli([
        'restore',
        '--config',
        config,
        '--database-url',
        liveUrl,
        '--backup',
        backupId,
        '--target',
        formatPgUrl({ ...live.conn, host: '127.0.0.1' }),
        '--confirm',
        live.name,
        '--json',
      ]);
      expect(intoLive.code, intoLive.stderr).toBe(0);
      expect(JSON.parse(intoLive.stdout).hooks).toHaveLength(1);
      expect(existsSync(marker)).toBe(true);
    }, 480_000);
  });

  describe('nothing hangs', () => {
    it('a table locked by a migration fails backup and restore within the lock timeout, naming the lock; nothing is touched and the lock is free', async () => {
      const db = await createSampleDatabase(1, 'safelock');
      drops.push(db.name);
      const before = await tableCounts(db.name);
      const migration = openSession({ ...db.conn }, `BEGIN; LOCK TABLE payments IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(600);`);
      let lockerPid: number | undefined;
      try {
        await waitFor(
          async () => (await query<{ n: number }>(`SELECT count(*)::int AS n FROM pg_locks WHERE mode = 'AccessExclusiveLock' AND relation = 'payments'::regclass`, db.name))[0]!.n > 0,
          20_000,
          'the migration lock',
        );
        const [{ pid }] = (await query<{ pid: number }>(`SELECT pid FROM pg_locks WHERE mode = 'AccessExclusiveLock' AND relation = 'payments'::regclass`, db.name)) as [{ pid: number }];
        lockerPid = pid;
        const started = Date.now();
        const backup = await cli(['backup', '--database-url', db.url, '--lock-timeout', '2s', '--json']);
        expect(backup.code, backup.stderr).toBe(1);
        expect(Date.now() - started).toBeLessThan(60_000);
        const error = jsonError(backup);
        expect(error.code).toBe('LOCK_TIMEOUT');
        expect(error.message).toContain(`pid ${pid}`);
        expect(error.message).toContain('payments');
        expect(error.message).toContain('AccessExclusiveLock');
        expect((await cli(['backups', '--json'])).stdout).not.toContain(db.name);

        const restore = await cli(['restore', '--database-url', db.url, '--backup', backupId, '--target', db.url, '--confirm', db.name, '--lock-timeout', '2s', '--json']);
        expect(restore.code, restore.stderr).toBe(1);
        expect(jsonError(restore).code).toBe('LOCK_TIMEOUT');
        expect(jsonError(restore).message).toContain(`pid ${pid}`);
        const status = await cli(['lock', 'status', '--json']);
        expect(JSON.parse(status.stdout).held).toBe(false);
      } finally {
        migration.end();
        // The server side of the killed psql sleeps on, holding the lock, until it is ended.
        if (lockerPid) await sql(`SELECT pg_terminate_backend(${lockerPid})`);
      }
      expect(await tableCounts(db.name)).toEqual(before);
      expect(await lifelineDatabases(db.name)).toEqual([]);
    }, 480_000);

    it('doctor lists leftovers of killed runs with the command to remove them (exit 1), and exit 0 once clean', async () => {
      const doctorStore = tempDir('lifeline-doctor-');
      const scratch = `${source.name}_lifeline_restore_abc123`;
      try {
        const clean = await lifeline(['doctor', '--store', doctorStore.path, '--database-url', source.url, '--json'], { env: noEnv });
        expect(clean.code, clean.stderr).toBe(0);
        expect(JSON.parse(clean.stdout).clean).toBe(true);
        const staging = join(doctorStore.path, 'default', 'backups', '.staging-20260101T000000Z-1-999999');
        mkdirSync(staging, { recursive: true });
        await sql(`CREATE DATABASE "${scratch}"`);
        const dirty = await lifeline(['doctor', '--store', doctorStore.path, '--database-url', source.url, '--json'], { env: noEnv });
        expect(dirty.code).toBe(1);
        const report = JSON.parse(dirty.stdout);
        expect(report.directories).toEqual([{ path: staging, kind: 'staging', remove: `rm -rf -- '${staging}'` }]);
        expect(report.databases).toHaveLength(1);
        expect(report.databases[0]).toMatchObject({ database: scratch, kind: 'scratch' });
        expect(report.databases[0].remove).toContain(`DROP DATABASE "${scratch}" WITH (FORCE)`);
        const text = await lifeline(['doctor', '--store', doctorStore.path, '--database-url', source.url], { env: noEnv });
        expect(text.code).toBe(1);
        expect(text.stdout + text.stderr).toContain(scratch);
        rmSync(staging, { recursive: true });
        await dropDatabase(scratch);
        const again = await lifeline(['doctor', '--store', doctorStore.path, '--database-url', source.url, '--json'], { env: noEnv });
        expect(again.code, again.stderr).toBe(0);
      } finally {
        await dropDatabase(scratch);
        doctorStore.cleanup();
      }
    }, 480_000);
  });
});
