import { createHash } from 'node:crypto';
import { failure } from '../errors';
import { runText, type Runner } from '../runner/runner';
import { quoteLiteral } from '../runner/postgres-env';
import type { PsqlSession } from '../runner/psql';

/** User schemas only: the system catalogs differ between servers and are not part of a backup. */
const USER_SCHEMA_FILTER = `n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'`;

/** Every ordinary table of the user's schemas, as `schema.table` (quoted where needed). */
export async function userTables(session: PsqlSession): Promise<string[]> {
  const rows = await session.query<{ name: string }>(
    `SELECT format('%I.%I', n.nspname, c.relname) AS name
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relkind = 'r' AND ${USER_SCHEMA_FILTER}
        AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
      ORDER BY 1`,
  );
  return rows.map((r) => r.name);
}

/**
 * Exact `count(*)` of every user table, in the session's current transaction (so inside the
 * dump's snapshot when called after `pg_export_snapshot()`).
 */
export async function exactRowCounts(session: PsqlSession, options: { known?: Record<string, number> } = {}): Promise<Record<string, number>> {
  const tables = await userTables(session);
  const counts: Record<string, number> = {};
  // Counts taken earlier (during a restore) are used as they are; only user tables are reported.
  const todo = tables.filter((t) => {
    const known = options.known?.[t];
    if (known === undefined) return true;
    counts[t] = known;
    return false;
  });
  // One statement per batch keeps round trips few without building a huge query.
  for (let i = 0; i < todo.length; i += 50) {
    const batch = todo.slice(i, i + 50);
    const sql = batch.map((t) => `SELECT ${quoteLiteral(t)} AS name, count(*)::bigint AS n FROM ${t}`).join(' UNION ALL ');
    for (const row of await session.query<{ name: string; n: number | string }>(sql)) counts[row.name] = Number(row.n);
  }
  return counts;
}

/**
 * A sha256 over the normalized user catalog: tables, columns with types, nullability and defaults,
 * constraints, indexes, sequences and views. Two databases with the same schema give the same
 * value whatever their name or OIDs.
 */
export async function schemaFingerprint(session: PsqlSession): Promise<string> {
  const lines = await session.query<{ line: string }>(
    `SELECT line FROM (
       SELECT format('relation %I.%I %s', n.nspname, c.relname, c.relkind) AS line
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND ${USER_SCHEMA_FILTER}
       UNION ALL
       SELECT format('column %I.%I %s %s not_null=%s default=%s', n.nspname, c.relname, lpad(rank() OVER (PARTITION BY c.oid ORDER BY a.attnum)::text, 4, '0'),
                     a.attname || ' ' || format_type(a.atttypid, a.atttypmod), a.attnotnull, coalesce(pg_get_expr(d.adbin, d.adrelid), ''))
         FROM pg_attribute a
         JOIN pg_class c ON c.oid = a.attrelid
         JOIN pg_namespace n ON n.oid = c.relnamespace
         LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'v', 'm', 'f') AND ${USER_SCHEMA_FILTER}
       UNION ALL
       SELECT format('constraint %I.%I %I %s', n.nspname, c.relname, con.conname, pg_get_constraintdef(con.oid))
         FROM pg_constraint con
         JOIN pg_class c ON c.oid = con.conrelid
         JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE ${USER_SCHEMA_FILTER}
       UNION ALL
       SELECT format('index %I.%I %s', n.nspname, ic.relname, pg_get_indexdef(i.indexrelid))
         FROM pg_index i
         JOIN pg_class ic ON ic.oid = i.indexrelid
         JOIN pg_namespace n ON n.oid = ic.relnamespace
        WHERE ${USER_SCHEMA_FILTER}
     ) lines ORDER BY line COLLATE "C"`,
  );
  const hash = createHash('sha256');
  for (const { line } of lines) hash.update(`${line}\n`);
  return `sha256:${hash.digest('hex')}`;
}

/**
 * The schema migration head: the configured query's first value, or Alembic's
 * `alembic_version` when that table exists; null when there is neither.
 */
export async function migrationHead(session: PsqlSession, query?: string): Promise<string | null> {
  if (query) {
    let rows: Record<string, unknown>[];
    try {
      rows = await session.query(query);
    } catch (error) {
      throw failure('MIGRATION_HEAD_QUERY', `the migration head query failed: ${(error as Error).message}`, {
        fix: 'check postgres.migrationHeadQuery in lifeline.yml (it must return one value, e.g. SELECT version_num FROM alembic_version)',
        cause: error,
      });
    }
    const values = rows.map((r) => Object.values(r)[0]).filter((v) => v !== null && v !== undefined);
    return values.length ? values.map(String).join(',') : null;
  }
  const exists = await session.queryValue<string | null>(`SELECT to_regclass('alembic_version')::text`);
  if (!exists) return null;
  const heads = await session.query<{ v: string }>(`SELECT version_num AS v FROM alembic_version ORDER BY 1`);
  return heads.length ? heads.map((h) => h.v).join(',') : null;
}

export interface ServerVersion {
  /** e.g. `15.20 (Debian 15.20-0+deb12u1)` */
  version: string;
  major: number;
}

export async function serverVersion(session: PsqlSession): Promise<ServerVersion> {
  const [row] = await session.query<{ version: string; num: string }>(`SELECT current_setting('server_version') AS version, current_setting('server_version_num') AS num`);
  if (!row) throw failure('SERVER_VERSION', 'the server did not report its version');
  return { version: row.version, major: Math.floor(Number(row.num) / 10000) };
}

/** The version of a client tool (`pg_dump --version` → `15.20`), with its major. */
export async function toolVersion(runner: Runner, tool: 'pg_dump' | 'pg_restore'): Promise<ServerVersion> {
  const result = await runText(runner, { tool, args: ['--version'] });
  const match = /\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?\S*/.exec(result.stdout);
  if (result.exitCode !== 0 || !match) {
    throw failure('TOOL_VERSION', `could not read ${tool}'s version (${runner.where}): ${result.stderr || result.stdout}`, {
      fix: `install the PostgreSQL client tools (Debian: postgresql-client) or set postgres.binDir`,
    });
  }
  return { version: match[0].replace(/^\(PostgreSQL\)\s+/, ''), major: Number(match[1]) };
}

/**
 * ANALYZE of every user table, spread over `parallel` sessions (largest first, each table to the
 * least loaded session): the restored data gets planner statistics in about half the time of one
 * database-wide ANALYZE, which also re-analyzes every system catalog (autovacuum does those).
 */
export async function analyzeUserTables(open: () => PsqlSession, parallel = 2): Promise<void> {
  const first = open();
  try {
    const tables = await first.query<{ name: string; bytes: number | string }>(
      `SELECT format('%I.%I', n.nspname, c.relname) AS name, pg_table_size(c.oid) AS bytes
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'm', 'p') AND ${USER_SCHEMA_FILTER}
        ORDER BY 2 DESC, 1`,
    );
    await inSessions(
      first,
      open,
      spreadBySize(tables, parallel, (t) => Number(t.bytes)),
      async (session, group) => {
        // One statement per table: a failure names its table, and each finishes its own transaction.
        for (const table of group) await session.exec(`ANALYZE ${table.name}`);
      },
    );
  } finally {
    await first.close();
  }
}

/**
 * Runs each group of work on a session of its own: the first group on `first` (the caller's, left
 * open), the others on sessions opened here and closed once all groups are done.
 */
export async function inSessions<G, R>(first: PsqlSession, open: () => PsqlSession, groups: G[], work: (session: PsqlSession, group: G) => Promise<R>): Promise<R[]> {
  const opened: PsqlSession[] = [];
  try {
    return await Promise.all(
      groups.map((group, i) => {
        const session = i === 0 ? first : open();
        if (i > 0) opened.push(session);
        return work(session, group);
      }),
    );
  } finally {
    await Promise.all(opened.map((s) => s.close()));
  }
}

/**
 * Splits work over `parallel` workers: largest first, each item to the least loaded worker, so
 * the biggest table or index does not end up last on a busy one. Never more groups than items.
 */
export function spreadBySize<T>(items: T[], parallel: number, size: (item: T) => number): T[][] {
  const groups = Array.from({ length: Math.max(1, Math.min(parallel, items.length)) }, () => ({ items: [] as T[], load: 0 }));
  for (const item of [...items].sort((a, b) => size(b) - size(a))) {
    const lightest = groups.reduce((a, b) => (b.load < a.load ? b : a));
    lightest.items.push(item);
    lightest.load += size(item);
  }
  return groups.map((g) => g.items);
}

/** One kind of user object found in a database, e.g. `{ kind: 'large object', count: 3, examples: ['16401'] }`. */
export interface UserObjects {
  kind: string;
  count: number;
  examples: string[];
}

/**
 * Catalogs of the connected database whose rows have oids and can be created by a user. initdb's
 * own rows are below FirstNormalObjectId (16384, plpgsql included), so any row at or above it was
 * created later: by a user or an extension, both data a restore would destroy. Listed as
 * [catalog, kind, SQL condition excluding other sessions' temporary objects].
 */
const FIRST_NORMAL_OBJECT_ID = 16384;
const TEMP_NAMESPACES = `(SELECT oid FROM pg_namespace WHERE nspname LIKE 'pg\\_temp\\_%' OR nspname LIKE 'pg\\_toast\\_temp\\_%')`;
const notTemp = (column: string) => `${column} NOT IN ${TEMP_NAMESPACES}`;
const relNotTemp = (column: string) => `${column} NOT IN (SELECT oid FROM pg_class WHERE ${notTemp('relnamespace')} IS NOT TRUE)`;
const OID_CATALOGS: [catalog: string, kind: string, keep: string][] = [
  ['pg_class', 'relation', notTemp('relnamespace')],
  ['pg_proc', 'function', notTemp('pronamespace')],
  ['pg_type', 'type', notTemp('typnamespace')],
  ['pg_namespace', 'schema', `nspname NOT LIKE 'pg\\_temp\\_%' AND nspname NOT LIKE 'pg\\_toast\\_temp\\_%'`],
  ['pg_constraint', 'constraint', notTemp('connamespace')],
  ['pg_attrdef', 'column default', relNotTemp('adrelid')],
  ['pg_trigger', 'trigger', relNotTemp('tgrelid')],
  ['pg_rewrite', 'rule', relNotTemp('ev_class')],
  ['pg_policy', 'policy', relNotTemp('polrelid')],
  ['pg_statistic_ext', 'extended statistics', notTemp('stxnamespace')],
  ['pg_cast', 'cast', 'true'],
  ['pg_am', 'access method', 'true'],
  ['pg_opfamily', 'operator family', 'true'],
  ['pg_opclass', 'operator class', 'true'],
  ['pg_amop', 'operator family member', 'true'],
  ['pg_amproc', 'operator family member', 'true'],
  ['pg_operator', 'operator', 'true'],
  ['pg_conversion', 'conversion', 'true'],
  ['pg_language', 'language', 'true'],
  ['pg_foreign_data_wrapper', 'foreign data wrapper', 'true'],
  ['pg_foreign_server', 'foreign server', 'true'],
  ['pg_user_mapping', 'user mapping', 'true'],
  ['pg_ts_dict', 'text search dictionary', 'true'],
  ['pg_ts_config', 'text search configuration', 'true'],
  ['pg_ts_parser', 'text search parser', 'true'],
  ['pg_ts_template', 'text search template', 'true'],
  ['pg_collation', 'collation', 'true'],
  ['pg_extension', 'extension', 'true'],
  ['pg_event_trigger', 'event trigger', 'true'],
  ['pg_publication', 'publication', 'true'],
  ['pg_publication_rel', 'publication member', 'true'],
  ['pg_publication_namespace', 'publication member', 'true'],
  ['pg_default_acl', 'default privileges', 'true'],
  ['pg_transform', 'transform', 'true'],
];

/**
 * Every user object of the connected database, by kind: relations of every kind (tables, views,
 * materialized views, sequences, foreign and partitioned tables, extension-owned ones too), large
 * objects (whatever their oid), functions and procedures, types and domains, schemas other than
 * `public`, extensions other than `plpgsql`, then every other row created after initdb in any
 * per-database catalog (casts, access methods, operator classes and families, languages, foreign
 * data wrappers, text search objects, default privileges, ...), and a `public` schema whose
 * comment, privileges or owner differ from initdb's. The one answer to "does this database hold
 * anything a restore would destroy?": empty means nothing to lose. Each object is named once, by
 * its most specific kind; parts of an object counted itself (a table's indexes, row type,
 * constraints) are not listed again.
 */
export async function userObjects(session: PsqlSession): Promise<UserObjects[]> {
  const schema = (column: string) => `${column} NOT IN (SELECT oid FROM pg_namespace n WHERE NOT (${USER_SCHEMA_FILTER}))`;
  const generic = OID_CATALOGS.map(
    ([catalog, kind, keep]) =>
      `UNION ALL SELECT 9, ${quoteLiteral(kind)}, pg_describe_object('${catalog}'::regclass, oid, 0), '${catalog}'::regclass::oid, oid FROM ${catalog} WHERE oid >= ${FIRST_NORMAL_OBJECT_ID} AND ${keep}`,
  ).join('\n       ');
  const rows = await session.query<{ kind: string; count: number; examples: string[] }>(
    `WITH found(priority, kind, name, classid, objid) AS (
       SELECT 1, CASE c.relkind WHEN 'r' THEN 'table' WHEN 'p' THEN 'table' WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view'
                             WHEN 'S' THEN 'sequence' WHEN 'f' THEN 'foreign table' ELSE 'type' END,
              format('%I.%I', n.nspname, c.relname), 'pg_class'::regclass::oid, c.oid
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f', 'c') AND ${USER_SCHEMA_FILTER}
       UNION ALL SELECT 1, 'large object', oid::text, 'pg_largeobject_metadata'::regclass::oid, oid FROM pg_largeobject_metadata
       UNION ALL SELECT 1, 'function', p.oid::regprocedure::text, 'pg_proc'::regclass::oid, p.oid FROM pg_proc p WHERE ${schema('p.pronamespace')}
       UNION ALL SELECT 1, 'type', t.oid::regtype::text, 'pg_type'::regclass::oid, t.oid FROM pg_type t
                  WHERE ${schema('t.typnamespace')} AND t.typrelid = 0 AND NOT (t.typcategory = 'A' AND t.typelem <> 0)
       UNION ALL SELECT 1, 'schema', quote_ident(nspname), 'pg_namespace'::regclass::oid, oid FROM pg_namespace n WHERE ${USER_SCHEMA_FILTER} AND nspname <> 'public'
       UNION ALL SELECT 1, 'extension', quote_ident(extname), 'pg_extension'::regclass::oid, oid FROM pg_extension WHERE extname <> 'plpgsql'
       UNION ALL SELECT 1, 'operator', o.oid::regoperator::text, 'pg_operator'::regclass::oid, o.oid FROM pg_operator o WHERE ${schema('o.oprnamespace')}
       UNION ALL SELECT 1, 'collation', quote_ident(collname), 'pg_collation'::regclass::oid, oid FROM pg_collation WHERE ${schema('collnamespace')}
       UNION ALL SELECT 1, 'text search configuration', quote_ident(cfgname), 'pg_ts_config'::regclass::oid, oid FROM pg_ts_config WHERE ${schema('cfgnamespace')}
       UNION ALL SELECT 1, 'foreign server', quote_ident(srvname), 'pg_foreign_server'::regclass::oid, oid FROM pg_foreign_server
       UNION ALL SELECT 1, 'event trigger', quote_ident(evtname), 'pg_event_trigger'::regclass::oid, oid FROM pg_event_trigger
       UNION ALL SELECT 1, 'publication', quote_ident(pubname), 'pg_publication'::regclass::oid, oid FROM pg_publication
       -- The public schema initdb made: a comment, a grant or an owner of the user's is data too.
       UNION ALL SELECT 1, 'change to schema public', concat_ws(' and ',
                  CASE WHEN d.description IS NOT NULL AND d.description <> 'standard public schema' THEN 'its comment' END,
                  CASE WHEN n.nspacl IS DISTINCT FROM coalesce(
                         (SELECT ip.initprivs FROM pg_init_privs ip WHERE ip.objoid = n.oid AND ip.classoid = 'pg_namespace'::regclass AND ip.objsubid = 0),
                         '{pg_database_owner=UC/pg_database_owner,=U/pg_database_owner}'::aclitem[]) THEN 'its privileges' END,
                  CASE WHEN n.nspowner <> coalesce(to_regrole('pg_database_owner')::oid, 10) THEN 'its owner' END),
                  'pg_namespace'::regclass::oid, n.oid
             FROM pg_namespace n LEFT JOIN pg_description d ON d.objoid = n.oid AND d.classoid = 'pg_namespace'::regclass AND d.objsubid = 0
            WHERE n.nspname = 'public' AND n.oid < ${FIRST_NORMAL_OBJECT_ID}
              AND ((d.description IS NOT NULL AND d.description <> 'standard public schema')
                   OR n.nspacl IS DISTINCT FROM coalesce(
                        (SELECT ip.initprivs FROM pg_init_privs ip WHERE ip.objoid = n.oid AND ip.classoid = 'pg_namespace'::regclass AND ip.objsubid = 0),
                        '{pg_database_owner=UC/pg_database_owner,=U/pg_database_owner}'::aclitem[])
                   OR n.nspowner <> coalesce(to_regrole('pg_database_owner')::oid, 10))
       ${generic}
     ), named AS (
       SELECT DISTINCT ON (classid, objid) kind, name, classid, objid FROM found ORDER BY classid, objid, priority
     ), shown AS (
       -- A part of another object found here (index, row type, constraint, rule, opclass member)
       -- is not named again; a part of a built-in object (a function added to a built-in operator
       -- family) is.
       SELECT kind, name FROM named o
        WHERE NOT EXISTS (SELECT 1 FROM pg_depend dep
                           WHERE dep.classid = o.classid AND dep.objid = o.objid AND dep.objsubid = 0 AND dep.deptype IN ('i', 'a')
                             AND EXISTS (SELECT 1 FROM named p WHERE p.classid = dep.refclassid AND p.objid = dep.refobjid))
     )
     SELECT kind, count(*)::int AS count, (array_agg(name ORDER BY name))[1:3] AS examples FROM (
       SELECT kind, name FROM shown
       -- Never empty when something was found, whatever the dependencies look like.
       UNION ALL SELECT kind, name FROM named WHERE NOT EXISTS (SELECT 1 FROM shown)
     ) objects GROUP BY kind ORDER BY kind`,
  );
  return rows.map((r) => ({ kind: r.kind, count: Number(r.count), examples: r.examples ?? [] }));
}

/** "3 tables (public.a, public.b, ...), 1 large object (16401)": what a refusal names. */
export function describeUserObjects(objects: UserObjects[]): string {
  const plural = (kind: string) => (/(privileges|statistics|schema public)$/.test(kind) ? kind : kind.endsWith('y') ? `${kind.slice(0, -1)}ies` : `${kind}s`);
  return objects.map((o) => `${o.count} ${o.count === 1 ? o.kind : plural(o.kind)} (${o.examples.join(', ')}${o.count > o.examples.length ? ', ...' : ''})`).join(', ');
}

/**
 * Database-level state that lives outside any dump of the database's contents: the database's
 * privileges (`GRANT/REVOKE ... ON DATABASE`; null when never changed), its own settings
 * (`ALTER DATABASE ... SET`) and per-role settings (`ALTER ROLE ... IN DATABASE ... SET`), its
 * connection limit and its comment.
 */
export interface DatabaseLevelState {
  /** `grantee privilege` (with ` WITH GRANT OPTION`), grantee `PUBLIC` for everyone; null = the defaults. */
  acl: string[] | null;
  /** `name=value` as PostgreSQL stores them, in their order. */
  settings: string[];
  /** Per role: `name=value` settings, for this database only. */
  roleSettings: Record<string, string[]>;
  connectionLimit: number;
  comment: string | null;
}

export async function databaseLevelState(session: PsqlSession, database: string): Promise<DatabaseLevelState | undefined> {
  const [row] = await session.query<{ acl: string[] | null; settings: string[] | null; roles: Record<string, string[]> | null; connlimit: number; comment: string | null }>(
    `SELECT CASE WHEN d.datacl IS NULL THEN NULL ELSE
              (SELECT coalesce(array_agg(format('%s %s%s', CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END,
                                                 a.privilege_type, CASE WHEN a.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END) ORDER BY 1), '{}')
                 FROM aclexplode(d.datacl) a) END AS acl,
            (SELECT s.setconfig FROM pg_db_role_setting s WHERE s.setdatabase = d.oid AND s.setrole = 0) AS settings,
            (SELECT json_object_agg(pg_get_userbyid(s.setrole), s.setconfig) FROM pg_db_role_setting s WHERE s.setdatabase = d.oid AND s.setrole <> 0) AS roles,
            d.datconnlimit AS connlimit,
            shobj_description(d.oid, 'pg_database') AS comment
       FROM pg_database d WHERE d.datname = ${quoteLiteral(database)}`,
  );
  if (!row) return undefined;
  const roleSettings: Record<string, string[]> = {};
  for (const role of Object.keys(row.roles ?? {}).sort()) roleSettings[role] = row.roles![role]!;
  return { acl: row.acl, settings: row.settings ?? [], roleSettings, connectionLimit: Number(row.connlimit), comment: row.comment };
}

/** The differences between two database-level states, one line each; empty when they match. */
export function compareDatabaseLevelState(expected: DatabaseLevelState, actual: DatabaseLevelState, options: { privileges: boolean }): string[] {
  const diffs: string[] = [];
  const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);
  if (options.privileges && !same(expected.acl, actual.acl))
    diffs.push(`privileges: expected ${expected.acl ? expected.acl.join(', ') || '(none)' : 'defaults'}, found ${actual.acl ? actual.acl.join(', ') || '(none)' : 'defaults'}`);
  if (!same(expected.settings, actual.settings)) diffs.push(`settings: expected ${expected.settings.join(', ') || '(none)'}, found ${actual.settings.join(', ') || '(none)'}`);
  if (options.privileges && !same(expected.roleSettings, actual.roleSettings))
    diffs.push(`role settings: expected ${JSON.stringify(expected.roleSettings)}, found ${JSON.stringify(actual.roleSettings)}`);
  if (expected.connectionLimit !== actual.connectionLimit) diffs.push(`connection limit: expected ${expected.connectionLimit}, found ${actual.connectionLimit}`);
  if (expected.comment !== actual.comment) diffs.push(`comment: expected ${JSON.stringify(expected.comment)}, found ${JSON.stringify(actual.comment)}`);
  return diffs;
}

export interface HeldLock {
  pid: number;
  relation: string;
  mode: string;
  user: string | null;
  application: string | null;
  state: string | null;
  since: string | null;
  query: string | null;
}

/**
 * Relation locks other sessions hold in the connected database that block reads (ACCESS
 * EXCLUSIVE: a migration's ALTER TABLE, a LOCK TABLE, a VACUUM FULL), from pg_locks and
 * pg_stat_activity. Reading pg_locks takes no lock, so this answers while the table is locked.
 */
export async function readBlockingLocks(session: PsqlSession): Promise<HeldLock[]> {
  return session.query<HeldLock>(
    `SELECT l.pid, coalesce(l.relation::regclass::text, l.relation::text) AS relation, l.mode, a.usename AS user, a.application_name AS application,
            a.state, to_char(a.xact_start AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS since, left(a.query, 200) AS query
       FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
      WHERE l.locktype = 'relation' AND l.granted AND l.mode = 'AccessExclusiveLock' AND l.pid <> pg_backend_pid()
        AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
      ORDER BY a.xact_start NULLS LAST, l.pid LIMIT 20`,
  );
}

/** "pid 4242 (user app, application alembic, idle in transaction since ..., query: ALTER TABLE ...) holds AccessExclusiveLock on public.orders" */
export function describeHeldLocks(locks: HeldLock[]): string {
  const byPid = new Map<number, HeldLock[]>();
  for (const l of locks) byPid.set(l.pid, [...(byPid.get(l.pid) ?? []), l]);
  return [...byPid.values()]
    .map((held) => {
      const l = held[0]!;
      const who = [
        l.user ? `user ${l.user}` : '',
        l.application ? `application ${l.application}` : '',
        l.state ? `${l.state}${l.since ? ` since ${l.since}` : ''}` : '',
        l.query ? `query: ${l.query.replace(/\s+/g, ' ').trim()}` : '',
      ]
        .filter(Boolean)
        .join(', ');
      return `pid ${l.pid}${who ? ` (${who})` : ''} holds ${l.mode} on ${held.map((h) => h.relation).join(', ')}`;
    })
    .join('; ');
}

/** A lock_timeout / statement_timeout cancellation, or pg_dump's --lock-wait-timeout giving up. */
export function isLockTimeout(error: unknown): boolean {
  return /canceling statement due to (lock|statement) timeout|could not obtain lock on relation/i.test((error as Error)?.message ?? String(error));
}
