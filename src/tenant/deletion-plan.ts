import { refusal, usageError } from '../errors';
import type { Catalog } from '../catalog/store';
import { quoteIdent, quoteLiteral, type PgConnection } from '../runner/postgres-env';
import type { PsqlSession } from '../runner/psql';
import type { Runner } from '../runner/runner';
import { describeCollection, resolveCollections, tenantRowsSource, type CollectionSpec, type ResolvedCollection } from './collections';
import { crossTenantRefusal, findCrossTenantRows, type CrossTenantPolicy } from './cross-tenant';
import { EXPORT_MANIFEST, exportIsEncrypted, plaintextOf, type TenantExportManifest } from './export';
import { identityRequired, type AgeIdentity } from '../crypto/age';
import type { ExportFormat } from './rows';
import { countTenantRows, digestInSnapshot, inParallel, openSnapshotSession, ROW_ENCODING } from './session';
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
  /** A `via` row naming another tenant refuses the plan (default) or is left out of it. */
  crossTenantRows?: CrossTenantPolicy;
  /** The age identity: an encrypted export can only cover a deletion once its rows were decrypted and checked. */
  identity?: AgeIdentity;
}

export interface DeletionPlan {
  tenant: string;
  /** In the order a deletion should go: the reverse of the configured order (children are listed after parents). */
  collections: { name: string; path: string; rows: number; contentDigest: string; crossTenantExcluded?: number }[];
  totalRows: number;
  lastWriteAt: string | null;
  lastWriteSource: string;
  /** The export whose every collection holds exactly the rows above, byte for byte in its row encoding. */
  coveredBy: { exportId: string; snapshotAt: string; verifiedAt: string; rowEncoding: string; contentMatched: true };
  /** The database snapshot the rows were counted and hashed in. */
  plannedAt: string;
  /** Rows that name this tenant but join to another tenant's parent (tenants.crossTenantRows: exclude): this plan leaves them. */
  strandedRows: { collection: string; rows: number; examples: string[] }[];
}

/**
 * What an offboarding deletion of a tenant would touch, for review. Lifeline never deletes tenant
 * data: this only counts, and refuses unless a verified, complete export holds exactly the rows
 * that would go. "Exactly" is content, not counts: in one snapshot every collection's rows are
 * re-encoded as the export encoded them and hashed, and each hash must equal the export's.
 */
export async function planTenantDeletion(options: DeletionPlanOptions): Promise<DeletionPlan> {
  const { tenant } = options;
  const kind = tenantExportsKind(tenant);
  if (options.lastWriteQuery !== undefined && !options.lastWriteQuery.includes(TENANT_PLACEHOLDER)) {
    throw usageError(
      'BAD_LAST_WRITE_QUERY',
      `tenants.lastWriteQuery does not use ${TENANT_PLACEHOLDER}`,
      `write it for one tenant, e.g. SELECT max(updated_at) FROM orders WHERE tenant_id = ${TENANT_PLACEHOLDER}`,
    );
  }
  const { session, snapshotId, snapshotAt } = await openSnapshotSession(options.runner, options.conn);
  try {
    const collections = await resolveCollections(session, options.collections);
    const crossTenant = await findCrossTenantRows(session, collections, tenant);
    if (crossTenant.length && (options.crossTenantRows ?? 'fail') === 'fail') throw crossTenantRefusal(tenant, crossTenant, 'no deletion was planned');
    const counts = await countTenantRows(session, collections, tenant);
    if ([...counts.values()].every((n) => n === 0)) {
      throw usageError(
        'UNKNOWN_TENANT',
        `tenant ${JSON.stringify(tenant)} has no rows in any collection (${collections.map((c) => c.name).join(', ')})`,
        'check the id (it is matched exactly, case included) and the environment',
      );
    }
    const lastWrite = await lastTenantWrite(session, collections, tenant, options.lastWriteQuery);
    const excluded = (name: string) => crossTenant.find((f) => f.collection === name && f.kind === 'foreign')?.rows;
    const summary = [...collections]
      .reverse()
      .map((c) => `${c.name} ${counts.get(c.name)}`)
      .join(', ');
    const totalRows = [...counts.values()].reduce((n, c) => n + c, 0);

    // Digests of the rows now, per format, computed once and only for an export that passed the cheap checks.
    const digests = new Map<string, Promise<Map<string, string>>>();
    const digestsNow = (format: ExportFormat) => {
      if (!digests.has(format)) {
        digests.set(
          format,
          inParallel(collections, PARALLELISM, (c) => digestInSnapshot(options.runner, options.conn, snapshotId, c, tenant, format)).then(
            (values) => new Map(collections.map((c, i) => [c.name, values[i]!])),
          ),
        );
      }
      return digests.get(format)!;
    };

    const rejected: string[] = [];
    const exports = await options.catalog.list<TenantExportManifest>(options.env, kind, EXPORT_MANIFEST);
    for (const entry of exports) {
      const m = entry.metadata;
      // The timestamp columns are only reported: content decides. A configured lastWriteQuery can see
      // writes outside the collections (an audit table), so it still has to be older than the export.
      const reason = staleReason(m, options.lastWriteQuery !== undefined ? lastWrite.at : null, counts, collections);
      if (reason) {
        rejected.push(`${entry.id}: ${reason}`);
        continue;
      }
      // A deletion plan stands on the export being readable: an encrypted one must be decrypted and checked.
      if (exportIsEncrypted(m) && !options.identity)
        throw identityRequired(`export ${entry.id} of tenant ${JSON.stringify(tenant)}, which a deletion plan must read back before it can cover a deletion,`);
      const verification = await verifyTenantExport(entry, { parseRecords: true, identity: options.identity });
      if (!verification.ok) {
        rejected.push(`${entry.id}: does not verify (${verification.problems.join('; ')})`);
        continue;
      }
      const now = await digestsNow(m.format);
      const differing = collections.filter((c) => m.collections.find((e) => e.name === c.name)!.contentDigest !== now.get(c.name));
      if (differing.length) {
        rejected.push(
          `${entry.id}: the rows of ${differing.map((c) => c.name).join(', ')} differ from the exported ones (same counts, other content: rows were updated, or inserted and deleted, since ${m.snapshotAt})`,
        );
        continue;
      }
      const planned = [...collections].reverse().map((c) => ({
        name: c.name,
        path: describeCollection(c),
        rows: counts.get(c.name)!,
        contentDigest: now.get(c.name)!,
        ...(excluded(c.name) ? { crossTenantExcluded: excluded(c.name) } : {}),
      }));
      return {
        tenant,
        collections: planned,
        totalRows,
        lastWriteAt: lastWrite.at,
        lastWriteSource: lastWrite.source,
        coveredBy: { exportId: entry.id, snapshotAt: m.snapshotAt, verifiedAt: verification.checkedAt, rowEncoding: m.rowEncoding!, contentMatched: true },
        plannedAt: snapshotAt,
        strandedRows: crossTenant.filter((f) => f.kind === 'stranded').map((f) => ({ collection: f.collection, rows: f.rows, examples: f.examples })),
      };
    }
    throw refusal(
      'NO_CURRENT_EXPORT',
      `no verified export of tenant ${JSON.stringify(tenant)} holds exactly its current rows (a deletion would touch ${totalRows} rows: ${summary})${rejected.length ? `. Considered: ${rejected.join('; ')}` : '; it has no exports'}`,
      `export again: lifeline tenant export --env ${options.env} --tenant ${tenant}, then plan again (with writes stopped for the tenant, or the new export is stale as soon as it is taken)`,
      { totalRows, lastWriteAt: lastWrite.at, rejected },
    );
  } finally {
    await session.close();
  }
}

/** Reasons an export cannot cover the current rows that need no second read of the data. */
function staleReason(manifest: TenantExportManifest, lastWriteAt: string | null, counts: Map<string, number>, collections: readonly ResolvedCollection[]): string | undefined {
  if (manifest.truncated) return 'truncated, so incomplete';
  if (manifest.rowEncoding !== ROW_ENCODING)
    return `made ${manifest.rowEncoding ? `with the row encoding ${manifest.rowEncoding}` : 'before exports recorded content digests'}, so its content cannot be compared`;
  if (lastWriteAt !== null && Date.parse(manifest.snapshotAt) <= Date.parse(lastWriteAt)) return `taken at ${manifest.snapshotAt}, not after the last write at ${lastWriteAt}`;
  for (const collection of collections) {
    const exported = manifest.collections.find((c) => c.name === collection.name);
    if (!exported) return `does not include ${collection.name}`;
    const path = describeCollection(collection);
    if (exported.path !== path) return `exported ${collection.name} as ${exported.path}, configured now as ${path}`;
    const count = counts.get(collection.name)!;
    if (exported.trueCount !== count) return `${collection.name} had ${exported.trueCount} rows then, ${count} now`;
    if (typeof exported.contentDigest !== 'string' || exported.contentDigest !== plaintextOf(exported).sha256) return `${collection.name} has no content digest matching its file`;
  }
  return undefined;
}

/** Collections hashed at once, each by its own psql joining the snapshot. */
const PARALLELISM = 2;

/**
 * The tenant's last write: the configured query, or else the latest value of every timestamp
 * column over the tenant's rows in every collection (created, updated, placed, paid ...). Only
 * the configured query decides anything; the columns' value is shown for the reviewer.
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
  return { at: latest === undefined ? null : new Date(latest).toISOString(), source: used.length ? `max(${used.join(', ')}) (reported only: coverage is decided by content)` : 'no timestamp columns' };
}
