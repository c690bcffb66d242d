import { refusal } from '../errors';
import { quoteIdent, quoteLiteral } from '../runner/postgres-env';
import type { PsqlSession } from '../runner/psql';
import { describeCollection, tenantRowsSource, type ResolvedCollection } from './collections';

/** What to do with a `via` row whose own tenant column names another tenant than its parent's. */
export type CrossTenantPolicy = 'fail' | 'exclude';

export interface CrossTenantRows {
  collection: string;
  path: string;
  /** `foreign`: reached from this tenant, naming another; `stranded`: naming this tenant, under another tenant's parent. */
  kind: 'foreign' | 'stranded';
  rows: number;
  /** A few of the rows, by primary key and own tenant column, to find them. */
  examples: string[];
}

/**
 * Rows a `via` join reaches from this tenant although a table on the path names another tenant
 * in its own tenant column, counted in the session's snapshot. Such rows are never exported nor
 * planned for deletion; the policy decides whether their presence fails the command.
 */
export async function findCrossTenantRows(session: PsqlSession, collections: readonly ResolvedCollection[], tenant: string): Promise<CrossTenantRows[]> {
  const literal = quoteLiteral(tenant);
  const found: CrossTenantRows[] = [];
  for (const collection of collections) {
    if (collection.ownTenantColumns.length === 0) continue;
    for (const kind of ['foreign', 'stranded'] as const) {
      if (kind === 'stranded' && !collection.ownTenantColumns.some((c) => c.depth === 0)) continue;
      const source = tenantRowsSource(collection, literal, kind === 'foreign' ? 'only' : 'stranded');
      const rows = Number((await session.queryValue<number | string>(`SELECT count(*)::bigint AS n ${source}`)) ?? 0);
      if (rows === 0) continue;
      const keyColumns = [...collection.orderBy, ...collection.ownTenantColumns.filter((c) => c.depth === 0).map((c) => c.column)];
      const fields = keyColumns.length ? keyColumns.map((c) => `${quoteLiteral(c)}, t0.${quoteIdent(c)}`).join(', ') : `'ctid', t0.ctid::text`;
      const order = collection.orderBy.length ? collection.orderBy.map((c) => `t0.${quoteIdent(c)}`).join(', ') : 't0.ctid';
      const examples = await session.query<{ example: string }>(`SELECT json_build_object(${fields})::text AS example ${source} ORDER BY ${order} LIMIT 3`);
      found.push({ collection: collection.name, path: describeCollection(collection), kind, rows, examples: examples.map((e) => e.example) });
    }
  }
  return found;
}

/** Exit 3 before anything is written: the fix is in the data or in tenants.crossTenantRows. */
export function crossTenantRefusal(tenant: string, found: readonly CrossTenantRows[], what: string) {
  const described = found.map((f) =>
    f.kind === 'foreign'
      ? `${f.collection}: ${f.rows} row${f.rows === 1 ? '' : 's'} joined through ${f.path} name another tenant in their own tenant column (e.g. ${f.examples.join(', ')})`
      : `${f.collection}: ${f.rows} row${f.rows === 1 ? '' : 's'} name this tenant in their own tenant column but join through ${f.path} to another tenant, so no export or deletion of this tenant would hold them (e.g. ${f.examples.join(', ')})`,
  );
  return refusal(
    'CROSS_TENANT_ROWS',
    `tenant ${JSON.stringify(tenant)}: ${described.join('; ')}; ${what}`,
    "correct those rows (a child's tenant column must name its parent's tenant), or set tenants.crossTenantRows: exclude to leave such rows out of exports and deletion plans (each export records how many it left out)",
    { crossTenant: found },
  );
}
