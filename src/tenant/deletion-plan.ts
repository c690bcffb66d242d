import { refusal, usageError } from '../errors';
import type { Catalog } from '../catalog/store';
import { quoteIdent, quoteLiteral, type PgConnection } from '../runner/postgres-env';
import type { PsqlSession } from '../runner/psql';
import type { Runner } from '../runner/runner';
import { describeCollection, resolveCollections, tenantRowsSource, type CollectionSpec, type ResolvedCollection } from './collections';
import { EXPORT_MANIFEST, type TenantExportManifest } from './export';
import { countTenantRows, openSnapshotSession } from './session';
import { tenantExportsKind } from './tenant-id';
import { verifyTenantExport } from './verify';

/** Where a lastWriteQuery takes the tenant id (as a quoted literal, never as SQL). */
export const TENANT_PLACEHOLDER = ":'tenant'";

export interface DeletionPlanOptions {
  catalog: Catalog;
  env: string;
  tenant: string;
  runner: Runner;
  conn: PgConnection;
  collections: readonly CollectionSpec[];
  /** SQL returning one timestamp: the tenant's last write; `:'tenant'` stands for the id. */
  lastWriteQuery?: string;
}

export interface DeletionPlan {
  tenant: string;
  /** In the order a deletion should go: the reverse of the configured order (children are listed after parents). */
  collections: { name: string; path: string; rows: number }[];
  totalRows: number;
  lastWriteAt: string | null;
  lastWriteSource: string;
  coveredBy: { exportId: string; snapshotAt: string; verifiedAt: string };
}

/**
 * What an offboarding deletion of a tenant would touch, for review. Lifeline never deletes tenant
 * data: this only counts, and refuses unless a verified, complete export taken after the tenant's
 * last detectable write holds exactly the rows that would go.
 */
export async function planTenantDeletion(options: DeletionPlanOptions): Promise<DeletionPlan> {
  const { tenant } = options;
  const kind = tenantExportsKind(tenant);
  if (options.lastWriteQuery !== undefined && !options.lastWriteQuery.includes(TENANT_PLACEHOLDER)) {
    throw usageError('BAD_LAST_WRITE_QUERY', `tenants.lastWriteQuery does not use ${TENANT_PLACEHOLDER}`, `write it for one tenant, e.g. SELECT max(updated_at) FROM orders WHERE tenant_id = ${TENANT_PLACEHOLDER}`);
  }
  const { session } = await openSnapshotSession(options.runner, options.conn);
  let collections: ResolvedCollection[];
  let counts: Map<string, number>;
  let lastWrite: { at: string | null; source: string };
  try {
    collections = await resolveCollections(session, options.collections);
    counts = await countTenantRows(session, collections, tenant);
    if ([...counts.values()].every((n) => n === 0)) {
      throw usageError('UNKNOWN_TENANT', `tenant ${JSON.stringify(tenant)} has no rows in any collection (${collections.map((c) => c.name).join(', ')})`, 'check the id (it is matched exactly, case included) and the environment');
    }
    lastWrite = await lastTenantWrite(session, collections, tenant, options.lastWriteQuery);
  } finally {
    await session.close();
  }
  const planned = [...collections].reverse().map((c) => ({ name: c.name, path: describeCollection(c), rows: counts.get(c.name)! }));
  const totalRows = planned.reduce((n, c) => n + c.rows, 0);
  const summary = planned.map((c) => `${c.name} ${c.rows}`).join(', ');

  const rejected: string[] = [];
  const exports = await options.catalog.list<TenantExportManifest>(options.env, kind, EXPORT_MANIFEST);
  for (const entry of exports) {
    const m = entry.metadata;
    const reason = staleReason(m, lastWrite.at, counts);
    if (reason) {
      rejected.push(`${entry.id}: ${reason}`);
      continue;
    }
    const verification = await verifyTenantExport(entry, { parseRecords: true });
    if (!verification.ok) {
      rejected.push(`${entry.id}: does not verify (${verification.problems.join('; ')})`);
      continue;
    }
    return { tenant, collections: planned, totalRows, lastWriteAt: lastWrite.at, lastWriteSource: lastWrite.source, coveredBy: { exportId: entry.id, snapshotAt: m.snapshotAt, verifiedAt: verification.checkedAt } };
  }
  throw refusal(
    'NO_CURRENT_EXPORT',
    `no verified export of tenant ${JSON.stringify(tenant)} covers its current data (a deletion would touch ${totalRows} rows: ${summary}; last write ${lastWrite.at ?? 'unknown'} from ${lastWrite.source})${rejected.length ? `. Considered: ${rejected.join('; ')}` : '; it has no exports'}`,
    `run: lifeline tenant export --env ${options.env} --tenant ${tenant}, then plan again`,
    { collections: planned, totalRows, lastWriteAt: lastWrite.at, rejected },
  );
}

function staleReason(manifest: TenantExportManifest, lastWriteAt: string | null, counts: Map<string, number>): string | undefined {
  if (manifest.truncated) return 'truncated, so incomplete';
  if (lastWriteAt !== null && Date.parse(manifest.snapshotAt) <= Date.parse(lastWriteAt)) return `taken at ${manifest.snapshotAt}, not after the last write at ${lastWriteAt}`;
  for (const [name, count] of counts) {
    const exported = manifest.collections.find((c) => c.name === name);
    if (!exported) return `does not include ${name}`;
    if (exported.trueCount !== count) return `${name} had ${exported.trueCount} rows then, ${count} now`;
  }
  return undefined;
}

/**
 * The tenant's last write: the configured query, or else the latest value of every timestamp
 * column over the tenant's rows in every collection (created, updated, placed, paid ...).
 */
async function lastTenantWrite(session: PsqlSession, collections: readonly ResolvedCollection[], tenant: string, lastWriteQuery: string | undefined): Promise<{ at: string | null; source: string }> {
  const literal = quoteLiteral(tenant);
  if (lastWriteQuery !== undefined) {
    const sql = lastWriteQuery.trim().replace(/;+$/, '').split(TENANT_PLACEHOLDER).join(literal);
    const value = await session.queryValue<string | null>(`SELECT (${sql})::timestamptz AS at`);
    return { at: value ? new Date(value).toISOString() : null, source: 'tenants.lastWriteQuery' };
  }
  let latest: number | undefined;
  const used: string[] = [];
  for (const collection of collections) {
    if (collection.timestampColumns.length === 0) continue;
    const columns = collection.timestampColumns.map((c) => `t0.${quoteIdent(c)}::timestamptz`);
    const value = await session.queryValue<string | null>(`SELECT max(greatest(${columns.join(', ')})) AS at ${tenantRowsSource(collection, literal)}`);
    used.push(...collection.timestampColumns.map((c) => `${collection.name}.${c}`));
    if (value) latest = Math.max(latest ?? -Infinity, Date.parse(value));
  }
  return { at: latest === undefined ? null : new Date(latest).toISOString(), source: used.length ? `max(${used.join(', ')})` : 'no timestamp columns (only row counts are compared)' };
}
