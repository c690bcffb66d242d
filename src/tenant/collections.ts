import { usageError } from '../errors';
import { assertSafeSegment } from '../catalog/store';
import { quoteIdent } from '../runner/postgres-env';
import type { PsqlSession } from '../runner/psql';

/** How a collection ties rows to a tenant, as written in lifeline.yml or on the command line. */
export interface CollectionSpec {
  table: string;
  /** The tenant column on the last table of the path (the table itself without `via`); default `tenant_id`. */
  column?: string;
  /** Join hops `LOCAL_COLUMN -> TABLE.COLUMN`, from `table` towards the table holding the tenant column. */
  via?: string[];
  rowCap?: number;
}

export const DEFAULT_TENANT_COLUMN = 'tenant_id';

interface TableRef {
  schema: string;
  name: string;
}

interface Hop {
  localColumn: string;
  target: TableRef;
  targetColumn: string;
}

/** A collection checked against the database's own catalog: every name exists, and is quoted. */
export interface ResolvedCollection {
  /** Unique within an export: the table name, schema-qualified outside `public`. */
  name: string;
  table: TableRef;
  hops: Hop[];
  tenantColumn: string;
  /** The primary key (or empty: rows are then ordered by their physical position in the snapshot). */
  orderBy: string[];
  rowCap?: number;
  /** Columns with a timestamp type, the default evidence of the tenant's last write. */
  timestampColumns: string[];
  /**
   * Tables on a `via` path that also hold a tenant column of their own (`depth` 0 is the
   * collection's table, `depth` i the i-th hop's source): a row there must name the same tenant
   * as its parent, else the join would carry another tenant's row.
   */
  ownTenantColumns: { depth: number; table: string; column: string }[];
}

/**
 * Parses `--collection` values: `TABLE:COLUMN`, or `TABLE:HOP[,HOP...][:COLUMN]` where a hop is
 * `LOCAL_COLUMN->TABLE.COLUMN` (e.g. `payments:order_id->orders.id`, tenant column `tenant_id`).
 */
export function parseCollectionFlag(value: string): CollectionSpec {
  const fix = 'write --collection TABLE:COLUMN (orders:tenant_id) or TABLE:LOCAL->TABLE.COLUMN[:TENANT_COLUMN] (payments:order_id->orders.id)';
  const parts = value.split(':').map((p) => p.trim());
  const [table, second, third] = parts;
  if (!table || !second || parts.length > 3) throw usageError('BAD_COLLECTION', `--collection ${JSON.stringify(value)} is not TABLE:COLUMN`, fix);
  if (second.includes('->')) {
    return { table, via: second.split(',').map((h) => h.trim()), ...(third ? { column: third } : {}) };
  }
  if (third !== undefined) throw usageError('BAD_COLLECTION', `--collection ${JSON.stringify(value)} has a third part but no join path`, fix);
  return { table, column: second };
}

function parseHop(text: string, collection: string): { localColumn: string; targetTable: string; targetColumn: string } {
  const match = /^\s*([^\s-][^\s]*?)\s*->\s*(\S+)\.([^.\s]+)\s*$/.exec(text);
  if (!match) {
    throw usageError('BAD_COLLECTION', `collection ${collection}: join hop ${JSON.stringify(text)} is not LOCAL_COLUMN -> TABLE.COLUMN`, 'write hops like "order_id -> orders.id"');
  }
  return { localColumn: match[1]!, targetTable: match[2]!, targetColumn: match[3]! };
}

interface DatabaseCatalog {
  columns: Map<string, { name: string; type: string }[]>;
  primaryKeys: Map<string, string[]>;
}

const key = (t: TableRef) => `${t.schema}.${t.name}`;

async function readDatabaseCatalog(session: PsqlSession): Promise<DatabaseCatalog> {
  const columns = await session.query<{ schema: string; table: string; column: string; type: string }>(`
    SELECT table_schema AS schema, table_name AS table, column_name AS column, data_type AS type
    FROM information_schema.columns
    WHERE table_schema NOT IN ('pg_catalog', 'information_schema')
    ORDER BY table_schema, table_name, ordinal_position`);
  const keys = await session.query<{ schema: string; table: string; column: string }>(`
    SELECT n.nspname AS schema, c.relname AS table, a.attname AS column
    FROM pg_index i
    JOIN pg_class c ON c.oid = i.indrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, position)
    JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
    WHERE i.indisprimary AND n.nspname NOT IN ('pg_catalog', 'information_schema')
    ORDER BY n.nspname, c.relname, k.position`);
  const catalog: DatabaseCatalog = { columns: new Map(), primaryKeys: new Map() };
  for (const row of columns) {
    const k = `${row.schema}.${row.table}`;
    catalog.columns.set(k, [...(catalog.columns.get(k) ?? []), { name: row.column, type: row.type }]);
  }
  for (const row of keys) {
    const k = `${row.schema}.${row.table}`;
    catalog.primaryKeys.set(k, [...(catalog.primaryKeys.get(k) ?? []), row.column]);
  }
  return catalog;
}

function findTable(catalog: DatabaseCatalog, written: string, collection: string): TableRef {
  const known = [...catalog.columns.keys()];
  let candidates: TableRef[];
  if (written.includes('.')) {
    const dot = written.indexOf('.');
    const ref = { schema: written.slice(0, dot), name: written.slice(dot + 1) };
    candidates = catalog.columns.has(key(ref)) ? [ref] : [];
  } else {
    candidates = known.filter((k) => k.slice(k.indexOf('.') + 1) === written).map((k) => ({ schema: k.slice(0, k.indexOf('.')), name: written }));
    const inPublic = candidates.find((c) => c.schema === 'public');
    if (inPublic) candidates = [inPublic];
  }
  if (candidates.length === 1) return candidates[0]!;
  if (candidates.length > 1) {
    throw usageError(
      'AMBIGUOUS_TABLE',
      `collection ${collection}: table ${JSON.stringify(written)} exists in several schemas (${candidates.map((c) => c.schema).join(', ')})`,
      `qualify it, e.g. ${candidates[0]!.schema}.${written}`,
    );
  }
  const listed = known.map((k) => (k.startsWith('public.') ? k.slice(7) : k)).sort();
  throw usageError('UNKNOWN_TABLE', `collection ${collection}: table ${JSON.stringify(written)} does not exist in the database`, `use one of: ${listed.join(', ') || '(the database has no tables)'}`);
}

function requireColumn(catalog: DatabaseCatalog, table: TableRef, column: string, collection: string, role: string): void {
  const columns = catalog.columns.get(key(table)) ?? [];
  if (!columns.some((c) => c.name === column)) {
    throw usageError('UNKNOWN_COLUMN', `collection ${collection}: ${role} ${JSON.stringify(column)} is not a column of ${key(table)}`, `use one of: ${columns.map((c) => c.name).join(', ')}`);
  }
}

/** Checks every table and column against the database and returns collections safe to build SQL from. */
export async function resolveCollections(session: PsqlSession, specs: readonly CollectionSpec[]): Promise<ResolvedCollection[]> {
  if (specs.length === 0) {
    throw usageError(
      'NO_COLLECTIONS',
      'no tenant collections are configured',
      'add tenants.collections to lifeline.yml (e.g. - { table: orders, column: tenant_id }) or pass --collection orders:tenant_id',
    );
  }
  const catalog = await readDatabaseCatalog(session);
  const resolved: ResolvedCollection[] = [];
  for (const spec of specs) {
    const label = spec.table;
    const table = findTable(catalog, spec.table, label);
    const hops: Hop[] = [];
    const path: TableRef[] = [];
    let current = table;
    for (const text of spec.via ?? []) {
      const hop = parseHop(text, label);
      requireColumn(catalog, current, hop.localColumn, label, 'join column');
      const target = findTable(catalog, hop.targetTable, label);
      requireColumn(catalog, target, hop.targetColumn, label, 'join target column');
      hops.push({ localColumn: hop.localColumn, target, targetColumn: hop.targetColumn });
      path.push(current);
      current = target;
    }
    const tenantColumn = spec.column ?? DEFAULT_TENANT_COLUMN;
    requireColumn(catalog, current, tenantColumn, label, 'tenant column');
    const ownTenantColumns = path.flatMap((ref, depth) => {
      const own = ownTenantColumn(catalog, ref, hops[depth]!.localColumn, tenantColumn);
      return own ? [{ depth, table: key(ref), column: own }] : [];
    });
    const name = table.schema === 'public' ? table.name : key(table);
    assertSafeSegment(name, `collection ${label} (as a file name)`);
    if (resolved.some((r) => r.name === name)) {
      throw usageError('DUPLICATE_COLLECTION', `table ${name} is listed twice as a collection`, 'list each table once');
    }
    const columns = catalog.columns.get(key(table)) ?? [];
    resolved.push({
      name,
      table,
      hops,
      tenantColumn,
      orderBy: catalog.primaryKeys.get(key(table)) ?? [],
      rowCap: spec.rowCap,
      timestampColumns: columns.filter((c) => c.type.startsWith('timestamp')).map((c) => c.name),
      ownTenantColumns,
    });
  }
  return resolved;
}

/**
 * A table's own tenant column on a join path: a column named like the path's tenant column (or
 * `tenant_id`) that is neither the join column itself nor part of the primary key (so `id` on a
 * path ending at `tenants.id` is not mistaken for one).
 */
function ownTenantColumn(catalog: DatabaseCatalog, table: TableRef, joinColumn: string, tenantColumn: string): string | undefined {
  const columns = new Set((catalog.columns.get(key(table)) ?? []).map((c) => c.name));
  const primaryKey = catalog.primaryKeys.get(key(table)) ?? [];
  return [tenantColumn, DEFAULT_TENANT_COLUMN].find((name) => columns.has(name) && name !== joinColumn && !primaryKey.includes(name));
}

const qualified = (t: TableRef) => `${quoteIdent(t.schema)}.${quoteIdent(t.name)}`;

/**
 * `FROM ... WHERE ...` selecting the tenant's rows of a collection, as `t0`. Each hop is a
 * semi-join (`IN (SELECT ...)`), so a row appears once even when a join target is not unique.
 * A row on the path whose own tenant column names another tenant is left out (its parent's
 * tenant does not make it this tenant's); `crossTenant: 'only'` selects exactly those rows
 * instead, to report them, and `'stranded'` the mirror case: rows whose own tenant column names
 * this tenant but whose parent belongs to another, which no export of this tenant would hold.
 * `tenantLiteral` must already be a quoted literal (quoteLiteral).
 */
export function tenantRowsSource(collection: ResolvedCollection, tenantLiteral: string, crossTenant: 'exclude' | 'only' | 'stranded' = 'exclude'): string {
  const own = (depth: number) => collection.ownTenantColumns.find((c) => c.depth === depth);
  const condition = (depth: number, consistent: boolean): string => {
    const alias = `t${depth}`;
    if (depth === collection.hops.length) return `${alias}.${quoteIdent(collection.tenantColumn)} = ${tenantLiteral}`;
    const hop = collection.hops[depth]!;
    const next = `t${depth + 1}`;
    const column = own(depth);
    const sameTenant = column && consistent ? ` AND (${alias}.${quoteIdent(column.column)} IS NULL OR ${alias}.${quoteIdent(column.column)} = ${tenantLiteral})` : '';
    return `${alias}.${quoteIdent(hop.localColumn)} IN (SELECT ${next}.${quoteIdent(hop.targetColumn)} FROM ${qualified(hop.target)} AS ${next} WHERE ${condition(depth + 1, consistent)})${sameTenant}`;
  };
  if (crossTenant === 'stranded') {
    const column = own(0);
    if (!column) return `FROM ${qualified(collection.table)} AS t0 WHERE false`;
    return `FROM ${qualified(collection.table)} AS t0 WHERE t0.${quoteIdent(column.column)} = ${tenantLiteral} AND (${condition(0, true)}) IS NOT TRUE`;
  }
  if (crossTenant === 'only') {
    // Reached by the plain join, but not by the join that insists on the same tenant at every step.
    return `FROM ${qualified(collection.table)} AS t0 WHERE ${condition(0, false)} AND (${condition(0, true)}) IS NOT TRUE`;
  }
  return `FROM ${qualified(collection.table)} AS t0 WHERE ${condition(0, true)}`;
}

/** The tenant's rows, deterministically ordered (primary key, else physical order within the snapshot). */
export function tenantRowsQuery(collection: ResolvedCollection, tenantLiteral: string, limit?: number): string {
  const order = collection.orderBy.length ? collection.orderBy.map((c) => `t0.${quoteIdent(c)}`).join(', ') : 't0.ctid';
  return `SELECT t0.* ${tenantRowsSource(collection, tenantLiteral)} ORDER BY ${order}${limit !== undefined ? ` LIMIT ${Math.trunc(limit)}` : ''}`;
}

/**
 * The COPY that writes a collection's export file, and that a deletion plan re-runs to compare
 * content: NDJSON through CSV with quote and delimiter bytes JSON text never holds, so COPY
 * writes each JSON document verbatim, with none of the text format's backslash escaping.
 */
export function collectionCopyStatement(collection: ResolvedCollection, tenantLiteral: string, format: 'ndjson' | 'csv', limit?: number): string {
  const select = tenantRowsQuery(collection, tenantLiteral, limit);
  return format === 'csv'
    ? `COPY (${select}) TO STDOUT WITH (FORMAT csv, HEADER)`
    : `COPY (SELECT row_to_json(r)::text FROM (${select}) AS r) TO STDOUT WITH (FORMAT csv, QUOTE E'\\x01', DELIMITER E'\\x02')`;
}

export function describeCollection(collection: ResolvedCollection): string {
  const path = collection.hops.map((h) => ` -> ${h.target.name}`).join('');
  return `${collection.name}${path}.${collection.tenantColumn}`;
}
