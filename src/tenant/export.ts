import { join } from 'node:path';
import { Readable } from 'node:stream';
import { createGzip } from 'node:zlib';
import { failure, refusal, usageError } from '../errors';
import type { Logger } from '../logger';
import { sha256File } from '../catalog/files';
import { withLock } from '../catalog/lock';
import { CATALOG_SCHEMA_VERSION, newEntryId, type Catalog, type CatalogEntry, type EntryMetadata, type StagedEntry } from '../catalog/store';
import { formatSums, SUMS_FILE } from '../catalog/sums';
import { quoteLiteral, type PgConnection } from '../runner/postgres-env';
import { lastLines, describeExit, type Runner } from '../runner/runner';
import { collectionCopyStatement, describeCollection, resolveCollections, type CollectionSpec, type ResolvedCollection } from './collections';
import { crossTenantRefusal, findCrossTenantRows, type CrossTenantPolicy, type CrossTenantRows } from './cross-tenant';
import { ByteCapExceeded, ExportMeter, FILE_EXTENSION, type ExportFormat } from './rows';
import { countInSnapshot, inParallel, openSnapshotSession, ROW_ENCODING, startInSnapshot } from './session';
import { tarStream, type TarMember } from '../catalog/tar';
import { tenantExportsKind } from './tenant-id';
import { verifyTenantExport } from './verify';
import type { PayloadEncryption } from '../crypto/age';
import type { StoredFile } from '../catalog/store';

export const EXPORT_MANIFEST = 'export.json';
export const ARCHIVE_FILE = 'export.tar.gz';

export interface ExportedCollection {
  name: string;
  table: string;
  /** How rows are tied to the tenant, e.g. `payments -> orders.tenant_id`. */
  path: string;
  /** The stored file (`<name>.ndjson.age` when encrypted). */
  file: string;
  rows: number;
  /** Size and sha256 of the stored file (the ciphertext when encrypted, as SHA256SUMS lists it). */
  bytes: number;
  sha256: string;
  /** When stored as an age file: its recipients, and the plaintext's sha256 and size. */
  encryption?: PayloadEncryption;
  cap: number;
  truncated: boolean;
  /** The tenant's rows in the snapshot; more than `rows` only when truncated. */
  trueCount: number;
  orderedBy: string[];
  /**
   * sha256 of the tenant's rows in the manifest's `rowEncoding` (the file's bytes when complete):
   * a deletion plan recomputes it from the database to prove the rows it would delete are these.
   */
  contentDigest: string;
  /** Rows the `via` join reached whose own tenant column names another tenant, left out (tenants.crossTenantRows: exclude). */
  crossTenantExcluded?: number;
}

export interface TenantExportManifest extends EntryMetadata {
  kind: 'tenant-export';
  tenant: string;
  /** The database clock when the snapshot was taken; every collection shows the data as of then. */
  snapshotAt: string;
  database: { host: string; port: number; name: string };
  format: ExportFormat;
  byteCap: number;
  truncated: boolean;
  totals: { rows: number; bytes: number };
  collections: ExportedCollection[];
  /** With encryption, a tar of the stored `.age` files (the archive itself is not encrypted again). */
  archive?: { file: string; bytes: number; sha256: string };
  /** How rows were encoded for `contentDigest` (session settings pinned, ordering, format); absent on exports made before digests. */
  rowEncoding?: string;
  crossTenantRows?: CrossTenantPolicy;
}

export interface TenantExportOptions {
  catalog: Catalog;
  env: string;
  tenant: string;
  runner: Runner;
  conn: PgConnection;
  collections: readonly CollectionSpec[];
  format: ExportFormat;
  /** Cap for collections without their own. */
  rowCap: number;
  /** When set, the cap of every collection for this run (the `--row-cap` flag). */
  rowCapOverride?: number;
  byteCap: number;
  allowTruncation: boolean;
  archive: boolean;
  /** Exports kept per tenant; older ones are pruned once the new one verifies. */
  keep: number;
  logger: Logger;
  /** Who runs it, recorded in the environment lock. */
  owner?: string;
  /** A `via` row naming another tenant fails the export (default) or is left out and counted. */
  crossTenantRows?: CrossTenantPolicy;
  /** age recipients (encryption.recipients): every collection file is stored as `<file>.age`, encrypted while it streams. */
  encryptTo?: readonly string[];
}

/** Whether every collection file of an export is stored encrypted (an export made before encryption was configured is not). */
export function exportIsEncrypted(manifest: TenantExportManifest): boolean {
  return (manifest.collections ?? []).length > 0 && manifest.collections.every((c) => Boolean(c.encryption));
}

/** The plaintext sha256 and size of a collection (what a decrypting verify and a deletion plan compare). */
export function plaintextOf(collection: ExportedCollection): { sha256: string; bytes: number } {
  return collection.encryption ? { sha256: collection.encryption.plaintextSha256, bytes: collection.encryption.plaintextBytes } : { sha256: collection.sha256, bytes: collection.bytes };
}

export interface TenantExportResult {
  entry: CatalogEntry<TenantExportManifest>;
  manifestSha256: string;
  pruned: string[];
}

/**
 * Exports one tenant's rows, collection by collection, from one repeatable-read snapshot into a
 * new catalog entry. A collection over its cap refuses the export before the entry is complete
 * (unless truncation is allowed); the entry becomes visible only once complete, and is removed
 * again if it does not verify.
 */
export async function exportTenant(options: TenantExportOptions): Promise<TenantExportResult> {
  const { catalog, env, tenant, logger } = options;
  const kind = tenantExportsKind(tenant);
  if (options.rowCapOverride !== undefined && (!Number.isInteger(options.rowCapOverride) || options.rowCapOverride < 1)) {
    throw usageError('BAD_ROW_CAP', `--row-cap must be a positive whole number (got ${options.rowCapOverride})`, 'pass e.g. --row-cap 500000');
  }
  // Wait like a backup does: a scheduled backup holding the lock briefly is no reason to refuse.
  return withLock(catalog.envDir(env), env, { command: `tenant export ${tenant}`, owner: options.owner, waitSeconds: 30 }, async () => {
    await catalog.sweepStaging(env, kind);
    const started = Date.now();
    const elapsed = () => `${((Date.now() - started) / 1000).toFixed(2)}s`;
    const { session, snapshotId, snapshotAt } = await openSnapshotSession(options.runner, options.conn);
    let staged: StagedEntry | undefined;
    const id = newEntryId();
    try {
      const collections = await resolveCollections(session, options.collections);
      const crossTenantPolicy = options.crossTenantRows ?? 'fail';
      const crossTenant = await findCrossTenantRows(session, collections, tenant);
      if (crossTenant.length && crossTenantPolicy === 'fail') throw crossTenantRefusal(tenant, crossTenant, 'nothing was exported');
      for (const found of crossTenant) {
        logger.warn(
          found.kind === 'foreign'
            ? `${found.collection}: left out ${found.rows} rows joined through ${found.path} whose own tenant column names another tenant (tenants.crossTenantRows: exclude)`
            : `${found.collection}: ${found.rows} rows name ${tenant} in their own tenant column but join to another tenant: they are not in this export`,
        );
      }
      const excludedIn = (name: string): CrossTenantRows | undefined => crossTenant.find((f) => f.collection === name && f.kind === 'foreign');
      // With truncation allowed, exact counts come first: they decide what to cut and give the true
      // counts. Otherwise each COPY reads at most cap + 1 rows, and one row too many refuses the
      // export before its entry is complete: the same guarantee without a second pass over the data.
      const counts = options.allowTruncation ? await inParallel(collections, PARALLELISM, (collection) => countInSnapshot(options.runner, options.conn, snapshotId, collection, tenant)) : undefined;
      logger.debug(`planned after ${elapsed()}`);
      const plan = collections.map((collection, index) => {
        const cap = options.rowCapOverride ?? collection.rowCap ?? options.rowCap;
        const trueCount = counts?.[index];
        return { collection, cap, trueCount, truncated: trueCount !== undefined && trueCount > cap };
      });
      if (counts?.every((n) => n === 0)) throw unknownTenant(tenant, collections);
      staged = await catalog.begin(env, kind, id, EXPORT_MANIFEST, { encryptTo: options.encryptTo });
      const budget = { used: 0, cap: options.byteCap };
      const stagedEntry = staged;
      const exported = await inParallel(plan, PARALLELISM, async (p, signal) => {
        const file = `${p.collection.name}.${FILE_EXTENSION[options.format]}`;
        const expected = p.trueCount === undefined ? undefined : Math.min(p.trueCount, p.cap);
        logger.info(`${p.collection.name}: exporting ${expected === undefined ? `up to ${p.cap}` : `${expected} of ${p.trueCount}`} rows (${describeCollection(p.collection)})`);
        const written = await copyCollection(options, stagedEntry, file, snapshotId, p.collection, p.trueCount === undefined ? p.cap + 1 : p.truncated ? p.cap : undefined, budget, signal);
        if (p.trueCount === undefined && written.rows > p.cap) throw new RowCapExceeded(p.collection, p.cap);
        if (expected !== undefined && written.rows !== expected) {
          throw failure('EXPORT_COUNT_MISMATCH', `${p.collection.name}: wrote ${written.rows} rows, but the snapshot counted ${expected}`, {
            fix: 'this should not happen inside one snapshot; re-run the export and report it if it repeats',
          });
        }
        logger.debug(`${p.collection.name}: ${written.stored.bytes} bytes after ${elapsed()}`);
        return {
          name: p.collection.name,
          table: `${p.collection.table.schema}.${p.collection.table.name}`,
          path: describeCollection(p.collection),
          file: written.stored.name,
          rows: written.rows,
          bytes: written.stored.bytes,
          sha256: written.stored.sha256,
          ...(written.stored.encryption ? { encryption: written.stored.encryption } : {}),
          cap: p.cap,
          truncated: p.truncated,
          trueCount: p.trueCount ?? written.rows,
          orderedBy: p.collection.orderBy.length ? p.collection.orderBy : ['ctid'],
          // The digest of the rows is the plaintext's, whether or not the file is encrypted.
          contentDigest: written.stored.encryption?.plaintextSha256 ?? written.stored.sha256,
          ...(excludedIn(p.collection.name) ? { crossTenantExcluded: excludedIn(p.collection.name)!.rows } : {}),
        } satisfies ExportedCollection;
      });
      if (exported.every((c) => c.rows === 0)) throw unknownTenant(tenant, collections);
      const manifest: TenantExportManifest = {
        schemaVersion: CATALOG_SCHEMA_VERSION,
        id,
        createdAt: new Date().toISOString(),
        kind: 'tenant-export',
        tenant,
        snapshotAt,
        database: { host: options.conn.host, port: options.conn.port, name: options.conn.database },
        format: options.format,
        byteCap: options.byteCap,
        truncated: exported.some((c) => c.truncated),
        totals: { rows: exported.reduce((n, c) => n + c.rows, 0), bytes: exported.reduce((n, c) => n + plaintextOf(c).bytes, 0) },
        collections: exported,
        rowEncoding: ROW_ENCODING,
        crossTenantRows: crossTenantPolicy,
      };
      if (options.archive) manifest.archive = await addArchive(staged, manifest);
      await staged.commit(manifest);
      staged = undefined;
    } catch (error) {
      await staged?.abort();
      if (error instanceof RowCapExceeded) {
        // The snapshot is still open: name the true count, as counting first would have.
        const count = await countInSnapshot(options.runner, options.conn, snapshotId, error.collection, tenant);
        throw refusal(
          'ROW_CAP_EXCEEDED',
          `tenant ${JSON.stringify(tenant)}: ${error.collection.name} has ${count} rows, over its cap of ${error.cap}; nothing was kept`,
          "raise the cap (tenants.rowCap, the collection's rowCap, or --row-cap) after checking the size is expected, or pass --allow-truncation to export the first rows by primary key and mark the collection truncated",
          { collection: error.collection.name, count, cap: error.cap },
        );
      }
      if (error instanceof ByteCapExceeded) {
        throw refusal(
          'BYTE_CAP_EXCEEDED',
          `tenant ${JSON.stringify(tenant)}: the export grew past its byte cap of ${options.byteCap} bytes; nothing was kept`,
          'raise tenants.byteCap after checking the size is expected (the byte cap cannot be truncated around)',
          { byteCap: options.byteCap },
        );
      }
      throw error;
    } finally {
      await session.close();
    }
    const newest = await catalog.get<TenantExportManifest>(env, kind, id, EXPORT_MANIFEST);
    if (!newest) throw failure('EXPORT_MISSING', `the export ${id} of ${JSON.stringify(tenant)} vanished right after it was written`, { fix: 'check what else writes to the catalog directory' });
    const verification = await verifyTenantExport(newest);
    logger.debug(`verified the new export after ${elapsed()}`);
    if (!verification.ok) {
      await catalog.remove(newest);
      throw failure('EXPORT_VERIFY_FAILED', `the new export of ${JSON.stringify(tenant)} did not verify and was removed: ${verification.problems.join('; ')}`, {
        fix: 'check the disk holding the catalog, then re-run the export',
      });
    }
    const pruned = await pruneTenantExports(catalog, env, tenant, options.keep, newest.id);
    for (const id of pruned) logger.info(`pruned export ${id} (keeping ${options.keep})`);
    return { entry: newest, manifestSha256: (await sha256File(join(newest.dir, EXPORT_MANIFEST))).sha256, pruned };
  });
}

/** Streams one collection from a psql process that joins the exported snapshot. */
async function copyCollection(
  options: TenantExportOptions,
  staged: StagedEntry,
  file: string,
  snapshotId: string,
  collection: ResolvedCollection,
  limit: number | undefined,
  budget: { used: number; cap: number },
  signal: AbortSignal,
): Promise<{ rows: number; stored: StoredFile }> {
  const copy = collectionCopyStatement(collection, quoteLiteral(options.tenant), options.format, limit);
  const running = startInSnapshot(options.runner, options.conn, snapshotId, copy);
  const meter = new ExportMeter(options.format, budget);
  running.stdout.on('error', (error) => meter.destroy(error));
  // A sibling collection failed: stop this one too; its psql then exits by signal, reported below.
  const stop = () => running.kill();
  signal.addEventListener('abort', stop, { once: true });
  let hashed;
  try {
    hashed = await staged.addStream(file, running.stdout.pipe(meter));
  } catch (error) {
    running.kill();
    await running.done.catch(() => undefined);
    throw error;
  } finally {
    signal.removeEventListener('abort', stop);
  }
  const result = await running.done;
  if (result.exitCode !== 0) {
    throw failure('EXPORT_COPY_FAILED', `exporting ${collection.name} failed (psql ${describeExit(result)}): ${lastLines(result.stderr)}`);
  }
  return { rows: meter.records - (options.format === 'csv' ? 1 : 0), stored: hashed };
}

class RowCapExceeded extends Error {
  constructor(
    readonly collection: ResolvedCollection,
    readonly cap: number,
  ) {
    super(`${collection.name} is over its row cap of ${cap}`);
  }
}

function unknownTenant(tenant: string, collections: readonly ResolvedCollection[]) {
  return usageError(
    'UNKNOWN_TENANT',
    `tenant ${JSON.stringify(tenant)} has no rows in any collection (${collections.map((c) => c.name).join(', ')})`,
    'check the id (it is matched exactly, case included) and the environment; nothing was written',
  );
}

/** Collections counted or exported at once, each by its own psql joining the snapshot (as pg_dump -j does). */
const PARALLELISM = 2;

/**
 * Packs the collections, their SHA256SUMS and the manifest into one gzip'd tar inside the entry,
 * with a `.sha256` file beside it for whoever receives the handoff. In an encrypted export the
 * members are the stored `.age` files (the receiver decrypts each with `age -d`), so the archive
 * holds no plaintext row and is stored as it is.
 */
export async function addArchive(staged: StagedEntry, manifest: TenantExportManifest): Promise<{ file: string; bytes: number; sha256: string }> {
  const folder = `${manifest.tenant.replace(/[^A-Za-z0-9._-]/g, '_')}-${manifest.id}`.slice(0, 80);
  const members: TarMember[] = [
    ...manifest.collections.map((c) => ({ name: `${folder}/${c.file}`, path: staged.path(c.file), size: c.bytes })),
    { name: `${folder}/${SUMS_FILE}`, text: formatSums(manifest.collections.map((c) => ({ file: c.file, sha256: c.sha256 }))) },
    { name: `${folder}/${EXPORT_MANIFEST}`, text: `${JSON.stringify(manifest, null, 2)}\n` },
  ];
  const tar = tarStream(members);
  const gzip = createGzip({ level: 6 });
  tar.on('error', (error) => gzip.destroy(error));
  const hashed = await staged.addUnencrypted(ARCHIVE_FILE, tar.pipe(gzip));
  await staged.addUnencrypted(`${ARCHIVE_FILE}.sha256`, Readable.from([Buffer.from(`${hashed.sha256}  ${ARCHIVE_FILE}\n`)]));
  return { file: ARCHIVE_FILE, bytes: hashed.bytes, sha256: hashed.sha256 };
}

/** Removes a tenant's exports beyond the newest `keep`, never the one just written. */
async function pruneTenantExports(catalog: Catalog, env: string, tenant: string, keep: number, justWritten: string): Promise<string[]> {
  const entries = await catalog.list<TenantExportManifest>(env, tenantExportsKind(tenant), EXPORT_MANIFEST);
  const pruned: string[] = [];
  for (const entry of entries.slice(Math.max(1, keep))) {
    if (entry.id === justWritten) continue;
    await catalog.remove(entry);
    pruned.push(entry.id);
  }
  return pruned;
}
