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
      throw failure('MIGRATION_HEAD_QUERY', `the migration head query failed: ${(error as Error).message}`, { fix: 'check postgres.migrationHeadQuery in lifeline.yml (it must return one value, e.g. SELECT version_num FROM alembic_version)', cause: error });
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
    throw failure('TOOL_VERSION', `could not read ${tool}'s version (${runner.where}): ${result.stderr || result.stdout}`, { fix: `install the PostgreSQL client tools (Debian: postgresql-client) or set postgres.binDir` });
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
    await inSessions(first, open, spreadBySize(tables, parallel, (t) => Number(t.bytes)), async (session, group) => {
      // One statement per table: a failure names its table, and each finishes its own transaction.
      for (const table of group) await session.exec(`ANALYZE ${table.name}`);
    });
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
