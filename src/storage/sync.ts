import { createHash } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { HashingTransform, sha256File } from '../catalog/files';
import type { Catalog, CatalogEntry, EntryMetadata } from '../catalog/store';
import { checkSums, parseSums, SUMS_FILE } from '../catalog/sums';
import { entryFilePath } from '../catalog/confine';
import { failure, isLifelineError, usageError } from '../errors';
import type { Logger } from '../logger';
import { asEntryKind, listLocalEntries, metadataFileOf, RemoteLayout, type LocalEntry } from './entries';
import { importEntry } from './import';
import type { ObjectStore } from './object-store';
import type { RemoteObject } from './s3';

/** Small files (SHA256SUMS, metadata) are read whole; anything bigger than this is refused as not ours. */
const MAX_SMALL_OBJECT = 4 * 1024 * 1024;

export interface EntryRef {
  kind: string;
  id: string;
}

export interface SyncedEntry extends EntryRef {
  status: 'uploaded' | 'present' | 'would-upload' | 'failed';
  files: number;
  bytes: number;
  resumedParts: number;
  reason?: string;
}

export interface SyncReport {
  location: string;
  entries: SyncedEntry[];
  uploaded: number;
  present: number;
  failed: number;
}

export interface SyncOptions {
  env: string;
  /** The catalog root (`settings.store`). */
  store: string;
  remote: ObjectStore;
  prefix: string;
  logger: Logger;
  /** Only these kinds (`backups`, `releases`, `drills`, `tenants`); all when empty. */
  kinds?: string[];
  dryRun?: boolean;
}

/**
 * Uploads every complete local entry the bucket lacks. An entry is checked against its own
 * SHA256SUMS first (streaming re-hash); files go up before SHA256SUMS, and the metadata file
 * goes last, so a partially synced entry never looks complete remotely.
 */
export async function syncEnvironment(options: SyncOptions): Promise<SyncReport> {
  const { env, remote, logger } = options;
  const layout = new RemoteLayout(options.prefix, env);
  const local = filterKinds(await listLocalEntries(join(options.store, env)), options.kinds);
  const remoteObjects = await listRemote(remote, layout.envPrefix());
  const results: SyncedEntry[] = [];
  for (const entry of local) {
    const entryPrefix = layout.entryPrefix(entry.kind, entry.id);
    if (remoteObjects.has(entryPrefix + entry.metadataFile)) {
      results.push({ kind: entry.kind, id: entry.id, status: 'present', files: 0, bytes: 0, resumedParts: 0 });
      continue;
    }
    try {
      results.push(await syncEntry(entry, entryPrefix, remote, remoteObjects, options));
    } catch (error) {
      if (isLifelineError(error) && error.kind !== 'failed') throw error;
      const reason = (error as Error).message;
      logger.error(`${entry.kind}/${entry.id}: ${reason}`);
      results.push({ kind: entry.kind, id: entry.id, status: 'failed', files: 0, bytes: 0, resumedParts: 0, reason });
    }
  }
  return {
    location: remote.location,
    entries: results,
    uploaded: results.filter((r) => r.status === 'uploaded' || r.status === 'would-upload').length,
    present: results.filter((r) => r.status === 'present').length,
    failed: results.filter((r) => r.status === 'failed').length,
  };
}

async function syncEntry(entry: LocalEntry, entryPrefix: string, remote: ObjectStore, remoteObjects: Map<string, RemoteObject>, options: SyncOptions): Promise<SyncedEntry> {
  const ref = `${entry.kind}/${entry.id}`;
  const unverified = await verificationFailure(entry);
  if (unverified) return { kind: entry.kind, id: entry.id, status: 'failed', files: 0, bytes: 0, resumedParts: 0, reason: unverified };
  const checks = await checkSums(entry.dir);
  const bad = checks.filter((c) => !c.ok);
  if (bad.length > 0) {
    const reason = `local SHA256SUMS check failed for ${bad.map((c) => c.file).join(', ')}; not uploaded`;
    options.logger.error(`${ref}: ${reason}`);
    return { kind: entry.kind, id: entry.id, status: 'failed', files: 0, bytes: 0, resumedParts: 0, reason };
  }
  const files: Array<{ name: string; sha256: string }> = [
    ...entry.sums.map((s) => ({ name: s.file, sha256: s.sha256 })),
    { name: SUMS_FILE, sha256: await sha256OfFile(join(entry.dir, SUMS_FILE)) },
    { name: entry.metadataFile, sha256: await sha256OfFile(join(entry.dir, entry.metadataFile)) },
  ];
  let bytes = 0;
  let resumedParts = 0;
  let sent = 0;
  for (const file of files) {
    // Names came from SHA256SUMS and the listing: confined to the entry (no '..', symlink or FIFO).
    const path = await entryFilePath(entry.dir, file.name);
    const size = (await stat(path)).size;
    const key = entryPrefix + file.name;
    const existing = remoteObjects.get(key);
    if (existing && existing.size === size) {
      const head = await remote.head(key);
      if (head?.metadata.sha256 === file.sha256) continue;
    }
    if (options.dryRun) {
      bytes += size;
      sent++;
      continue;
    }
    const put = await remote.putFile(key, path, { sha256: file.sha256, bytes: size });
    const head = await remote.head(key);
    if (!head || head.size !== size || head.metadata.sha256 !== file.sha256) {
      throw failure('REMOTE_CHECK_FAILED', `${key} reads back as ${head ? `${head.size} bytes, sha256 ${head.metadata.sha256 ?? 'missing'}` : 'missing'} after upload; expected ${size} bytes, sha256 ${file.sha256}`, {
        fix: 'run `lifeline sync` again; if it persists, check the provider for a proxy that rewrites objects',
      });
    }
    bytes += put.bytes;
    resumedParts += put.resumedParts;
    sent++;
  }
  options.logger.info(`${options.dryRun ? 'would upload' : 'uploaded'} ${ref}: ${sent} file(s), ${bytes} bytes${resumedParts ? ` (${resumedParts} part(s) resumed)` : ''}`);
  return { kind: entry.kind, id: entry.id, status: options.dryRun ? 'would-upload' : 'uploaded', files: sent, bytes, resumedParts };
}

/** A backup whose own verification failed is not shipped off-host as if it were good. */
async function verificationFailure(entry: LocalEntry): Promise<string | undefined> {
  const metadata = JSON.parse(await readFile(join(entry.dir, entry.metadataFile), 'utf8')) as { verified?: { ok?: boolean } };
  if (metadata.verified && metadata.verified.ok === false) return 'its last verification failed; run `lifeline verify` and fix it before it is copied off-host';
  return undefined;
}

export interface CompareOptions {
  env: string;
  store: string;
  remote: ObjectStore;
  prefix: string;
  /** Download every remote file and hash it (catches corruption behind the API); otherwise compare sizes and recorded checksums. */
  deep?: boolean;
  kinds?: string[];
}

export interface Mismatch extends EntryRef {
  file: string;
  reason: string;
}

export interface RemoteComparison {
  location: string;
  inSync: EntryRef[];
  missingRemotely: EntryRef[];
  /** Entries whose upload started but whose metadata is not there yet (a rerun of sync completes them). */
  incompleteRemotely: EntryRef[];
  missingLocally: EntryRef[];
  mismatched: Mismatch[];
}

/** Local catalog against the bucket: what is missing on either side and what differs. */
export async function compareRemote(options: CompareOptions): Promise<RemoteComparison> {
  const layout = new RemoteLayout(options.prefix, options.env);
  const local = filterKinds(await listLocalEntries(join(options.store, options.env)), options.kinds);
  const remoteObjects = await listRemote(options.remote, layout.envPrefix());
  const remoteEntries = groupRemoteEntries(layout, remoteObjects);
  const result: RemoteComparison = { location: options.remote.location, inSync: [], missingRemotely: [], incompleteRemotely: [], missingLocally: [], mismatched: [] };
  const localKeys = new Set<string>();
  for (const entry of local) {
    const ref = { kind: entry.kind, id: entry.id };
    const entryPrefix = layout.entryPrefix(entry.kind, entry.id);
    localKeys.add(entryPrefix);
    if (!remoteEntries.has(entryPrefix)) {
      result.missingRemotely.push(ref);
      continue;
    }
    if (!remoteObjects.has(entryPrefix + entry.metadataFile)) {
      result.incompleteRemotely.push(ref);
      continue;
    }
    const expected = [...entry.sums, { file: SUMS_FILE, sha256: await sha256OfFile(join(entry.dir, SUMS_FILE)) }];
    const mismatches: Mismatch[] = [];
    for (const { file, sha256 } of expected) {
      const reason = await checkRemoteFile(options.remote, entryPrefix + file, remoteObjects.get(entryPrefix + file), sha256, (await stat(join(entry.dir, file))).size, options.deep ?? false);
      if (reason) mismatches.push({ ...ref, file, reason });
    }
    if (mismatches.length) result.mismatched.push(...mismatches);
    else result.inSync.push(ref);
  }
  for (const [entryPrefix, files] of remoteEntries) {
    if (localKeys.has(entryPrefix)) continue;
    const parsed = layout.parse(entryPrefix + SUMS_FILE)!;
    if (options.kinds?.length && !options.kinds.includes(parsed.kind.split('/')[0]!)) continue;
    const complete = files.includes(SUMS_FILE) && metadataFileOf(files, parseSums(await readSmallObject(options.remote, entryPrefix + SUMS_FILE))) !== undefined;
    if (complete) result.missingLocally.push({ kind: parsed.kind, id: parsed.id });
  }
  return result;
}

async function checkRemoteFile(remote: ObjectStore, key: string, listed: RemoteObject | undefined, sha256: string, size: number, deep: boolean): Promise<string | undefined> {
  if (!listed) return 'missing in the bucket';
  if (listed.size !== size) return `size ${listed.size} in the bucket, ${size} locally`;
  if (deep) {
    const actual = await hashRemote(remote, key);
    return actual === sha256 ? undefined : `sha256 ${actual} in the bucket, ${sha256} expected`;
  }
  const head = await remote.head(key);
  if (head?.metadata.sha256 !== sha256) return `recorded sha256 ${head?.metadata.sha256 ?? 'missing'} in the bucket, ${sha256} expected`;
  return undefined;
}

export interface FetchOptions {
  env: string;
  kind: string;
  /** An entry id, or `latest` for the newest complete entry of the kind in the bucket. */
  id: string;
  catalog: Catalog;
  remote: ObjectStore;
  prefix: string;
  logger: Logger;
}

export interface FetchResult {
  entry: CatalogEntry;
  /** False when the entry was already in the local catalog (nothing was downloaded). */
  fetched: boolean;
  bytes: number;
}

/**
 * Downloads one remote entry into the local catalog through `catalog.begin`, hashing every
 * file on the way and comparing with the entry's SHA256SUMS; on any mismatch nothing appears
 * locally. Restores and drills then read it like any local entry.
 */
export async function fetchEntry(options: FetchOptions): Promise<FetchResult> {
  const kind = asEntryKind(options.kind);
  const layout = new RemoteLayout(options.prefix, options.env);
  const id = options.id === 'latest' ? await newestRemoteId(options, layout) : options.id;
  const entryPrefix = layout.entryPrefix(kind, id);
  const names = [...(await listRemote(options.remote, entryPrefix)).keys()].map((key) => key.slice(entryPrefix.length)).filter((name) => !name.includes('/'));
  if (!names.includes(SUMS_FILE)) {
    throw usageError('REMOTE_ENTRY_NOT_FOUND', `${kind}/${id} is not in ${options.remote.location} for environment ${options.env}`, 'list what is there with `lifeline sync --compare`');
  }
  const sumsText = await readSmallObject(options.remote, entryPrefix + SUMS_FILE);
  const sums = parseSums(sumsText);
  const metadataFile = metadataFileOf(names, sums);
  if (!metadataFile) {
    throw failure('REMOTE_ENTRY_INCOMPLETE', `${kind}/${id} in ${options.remote.location} has no metadata file: its upload never finished`, { fix: 'run `lifeline sync` on the host that holds it, or fetch another entry' });
  }
  const metadata = JSON.parse(await readSmallObject(options.remote, entryPrefix + metadataFile)) as EntryMetadata;
  const result = await importEntry({
    catalog: options.catalog,
    env: options.env,
    kind,
    id,
    metadataFile,
    metadata,
    sums,
    source: options.remote.location,
    open: async (file) => (await options.remote.get(entryPrefix + file)).body,
  });
  if (result.fetched) options.logger.info(`fetched ${kind}/${id} from ${options.remote.location}: ${sums.length} file(s), ${result.bytes} bytes, every sha256 matched`);
  return result;
}

async function newestRemoteId(options: FetchOptions, layout: RemoteLayout): Promise<string> {
  const entries = groupRemoteEntries(layout, await listRemote(options.remote, `${layout.envPrefix()}${options.kind}/`));
  const candidates: Array<{ id: string; createdAt: string }> = [];
  for (const [entryPrefix, files] of entries) {
    const parsed = layout.parse(entryPrefix + SUMS_FILE)!;
    if (parsed.kind !== options.kind || !files.includes(SUMS_FILE)) continue;
    const metadataFile = metadataFileOf(files, parseSums(await readSmallObject(options.remote, entryPrefix + SUMS_FILE)));
    if (!metadataFile) continue;
    const metadata = JSON.parse(await readSmallObject(options.remote, entryPrefix + metadataFile)) as EntryMetadata;
    candidates.push({ id: parsed.id, createdAt: metadata.createdAt ?? '' });
  }
  candidates.sort((a, b) => (a.createdAt === b.createdAt ? b.id.localeCompare(a.id) : b.createdAt.localeCompare(a.createdAt)));
  if (!candidates[0]) {
    throw usageError('REMOTE_ENTRY_NOT_FOUND', `no complete ${options.kind} entry for environment ${options.env} in ${options.remote.location}`, 'run `lifeline sync` first, or check storage.bucket and storage.prefix');
  }
  return candidates[0].id;
}

function filterKinds(entries: LocalEntry[], kinds: string[] | undefined): LocalEntry[] {
  if (!kinds?.length) return entries;
  return entries.filter((e) => kinds.includes(e.kind.split('/')[0]!));
}

async function listRemote(remote: ObjectStore, prefix: string): Promise<Map<string, RemoteObject>> {
  const objects = new Map<string, RemoteObject>();
  for await (const object of remote.list(prefix)) objects.set(object.key, object);
  return objects;
}

/** Remote objects grouped by entry prefix (`.../<kind>/<id>/`), each with its file names. */
function groupRemoteEntries(layout: RemoteLayout, objects: Map<string, RemoteObject>): Map<string, string[]> {
  const entries = new Map<string, string[]>();
  for (const key of objects.keys()) {
    const parsed = layout.parse(key);
    if (!parsed) continue;
    const entryPrefix = layout.entryPrefix(parsed.kind, parsed.id);
    entries.set(entryPrefix, [...(entries.get(entryPrefix) ?? []), parsed.file]);
  }
  return entries;
}

/** A small object (SHA256SUMS, metadata), verified against the sha256 recorded at upload when present. */
async function readSmallObject(remote: ObjectStore, key: string): Promise<string> {
  const { body, head } = await remote.get(key);
  if (head.size > MAX_SMALL_OBJECT) {
    body.destroy();
    throw failure('REMOTE_OBJECT_TOO_LARGE', `${key} is ${head.size} bytes; Lifeline's ${SUMS_FILE} and metadata files are small`, { fix: 'check storage.prefix: the bucket holds something that is not a Lifeline entry' });
  }
  const chunks: Buffer[] = [];
  for await (const chunk of body) chunks.push(chunk as Buffer);
  const data = Buffer.concat(chunks);
  const actual = createHash('sha256').update(data).digest('hex');
  if (head.metadata.sha256 && head.metadata.sha256 !== actual) throw checksumMismatch(key, actual, head.metadata.sha256);
  return data.toString('utf8');
}

async function hashRemote(remote: ObjectStore, key: string): Promise<string> {
  const { body } = await remote.get(key);
  const hasher = new HashingTransform();
  await pipeline(body, hasher, async function* (source) {
    for await (const _chunk of source) {
      // drain: only the hash is wanted
    }
  });
  return hasher.digest();
}

async function sha256OfFile(path: string): Promise<string> {
  return (await sha256File(path)).sha256;
}

function checksumMismatch(key: string, actual: string, expected: string) {
  return failure('REMOTE_CHECKSUM_MISMATCH', `${key} downloaded with sha256 ${actual}, expected ${expected}; it was not used`, {
    fix: 'the copy in the bucket is damaged: run `lifeline sync` from a host whose local entry verifies, or fetch an older entry',
    details: { key, actual, expected },
  });
}

