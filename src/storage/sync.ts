import { createHash } from 'node:crypto';
import { lstat, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { HashingTransform, sha256File } from '../catalog/files';
import type { Catalog, CatalogEntry, EntryKind, EntryMetadata } from '../catalog/store';
import { checkSums, parseSums, SUMS_FILE, type SumEntry } from '../catalog/sums';
import { entryFileNameProblem, entryFilePath, readEntryText } from '../catalog/confine';
import { failure, isLifelineError } from '../errors';
import type { Logger } from '../logger';
import type { Progress } from '../report/progress';
import { asEntryKind, listLocalEntries, metadataFileOf, RemoteLayout, type LocalEntry } from './entries';
import { filesNamedByMetadata, importEntry } from './import';
import type { ObjectStore } from './object-store';
import { S3RequestError, type RemoteObject } from './s3';

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
  /** Entries never copied, as `<kind>/<id>` (plaintext tenant exports in an environment that encrypts). */
  exclude?: ReadonlySet<string>;
  dryRun?: boolean;
  /** Shows bytes uploaded of the total the bucket lacks (src/report/progress.ts). */
  progress?: Progress;
}

/**
 * Uploads every complete local entry the bucket lacks. An entry is checked against its own
 * SHA256SUMS first (streaming re-hash); files go up before SHA256SUMS, and the metadata file
 * goes last, so a partially synced entry never looks complete remotely.
 */
export async function syncEnvironment(options: SyncOptions): Promise<SyncReport> {
  const { env, remote, logger } = options;
  const layout = new RemoteLayout(options.prefix, env);
  const local = filterKinds(await listLocalEntries(join(options.store, env)), options.kinds).filter((e) => !options.exclude?.has(`${e.kind}/${e.id}`));
  const remoteObjects = await listRemote(remote, layout.envPrefix());
  const results: SyncedEntry[] = [];
  options.progress?.phase('sync', { unit: 'bytes', total: await bytesToSync(local.filter((e) => !remoteObjects.has(layout.entryPrefix(e.kind, e.id) + e.metadataFile))) });
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
  options.progress?.end();
  return {
    location: remote.location,
    entries: results,
    uploaded: results.filter((r) => r.status === 'uploaded' || r.status === 'would-upload').length,
    present: results.filter((r) => r.status === 'present').length,
    failed: results.filter((r) => r.status === 'failed').length,
  };
}

/** The bytes of the entries to upload (sizes only, nothing read), for the progress total. */
async function bytesToSync(entries: LocalEntry[]): Promise<number | undefined> {
  let total = 0;
  for (const entry of entries) {
    for (const name of new Set([...entry.sums.map((s) => s.file), SUMS_FILE, entry.metadataFile])) {
      total += await lstat(join(entry.dir, name)).then(
        (st) => (st.isFile() ? st.size : 0),
        () => 0,
      );
    }
  }
  return total > 0 ? total : undefined;
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
    ...entry.sums.filter((s) => s.file !== entry.metadataFile).map((s) => ({ name: s.file, sha256: s.sha256 })),
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
      if (head?.metadata.sha256 === file.sha256) {
        options.progress?.add(size);
        continue;
      }
    }
    if (options.dryRun) {
      options.progress?.add(size);
      bytes += size;
      sent++;
      continue;
    }
    const base = options.progress?.snapshot().done ?? 0;
    const put = await remote.putFile(key, path, { sha256: file.sha256, bytes: size }, options.progress && ((sentSoFar) => options.progress!.update(base + sentSoFar)));
    const head = await remote.head(key);
    if (!head || head.size !== size || head.metadata.sha256 !== file.sha256) {
      throw failure(
        'REMOTE_CHECK_FAILED',
        `${key} reads back as ${head ? `${head.size} bytes, sha256 ${head.metadata.sha256 ?? 'missing'}` : 'missing'} after upload; expected ${size} bytes, sha256 ${file.sha256}`,
        {
          fix: 'run `lifeline sync` again; if it persists, check the provider for a proxy that rewrites objects',
        },
      );
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
  /**
   * Entries `sync` leaves on the host on purpose, as `<kind>/<id>` (plaintext in an environment
   * that encrypts): absent from the bucket they are `keptOnHost`, not missing.
   */
  keptOnHost?: ReadonlySet<string>;
}

export interface Mismatch extends EntryRef {
  file: string;
  reason: string;
}

export interface RemoteComparison {
  location: string;
  /** `listing`: sizes and the sha256 recorded at upload, no bytes read; `deep`: every remote file downloaded and hashed. */
  mode: 'listing' | 'deep';
  inSync: EntryRef[];
  missingRemotely: EntryRef[];
  /** Local entries that sync never copies (plaintext in an encrypting environment) and the bucket does not hold: not a failure. */
  keptOnHost: EntryRef[];
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
  const result: RemoteComparison = {
    location: options.remote.location,
    mode: options.deep ? 'deep' : 'listing',
    inSync: [],
    missingRemotely: [],
    keptOnHost: [],
    incompleteRemotely: [],
    missingLocally: [],
    mismatched: [],
  };
  const localKeys = new Set<string>();
  for (const entry of local) {
    const ref = { kind: entry.kind, id: entry.id };
    const entryPrefix = layout.entryPrefix(entry.kind, entry.id);
    localKeys.add(entryPrefix);
    if (!remoteEntries.has(entryPrefix)) {
      // A kept-on-host entry that IS in the bucket (uploaded before encryption) is compared below like any other.
      (options.keptOnHost?.has(`${entry.kind}/${entry.id}`) ? result.keptOnHost : result.missingRemotely).push(ref);
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
  /** With `latest`: newer entries passed over, each with why (missing objects, a checksum that does not match). */
  skipped: Array<{ id: string; reason: string }>;
}

/**
 * Downloads one remote entry into the local catalog through `catalog.begin`, hashing every
 * file on the way and comparing with the entry's SHA256SUMS; on any mismatch nothing appears
 * locally. `latest` takes the newest entry whose every file is present and verifies, falling
 * back past incomplete or damaged ones (each named in `skipped` and the log). Restores and
 * drills then read it like any local entry.
 */
export async function fetchEntry(options: FetchOptions): Promise<FetchResult> {
  const kind = asEntryKind(options.kind);
  const layout = new RemoteLayout(options.prefix, options.env);
  if (options.id !== 'latest') return { ...(await fetchOne(options, layout, kind, options.id)), skipped: [] };
  const candidates = await remoteCandidates(options, layout);
  if (!candidates.length) {
    throw failure('REMOTE_ENTRY_NOT_FOUND', `no ${kind} entry of environment ${options.env} in ${options.remote.location} has its metadata (every upload there is unfinished, or there is none)`, {
      fix: 'run `lifeline sync` on the host that holds the entries, or check storage.bucket and storage.prefix',
    });
  }
  const skipped: FetchResult['skipped'] = [];
  for (const id of candidates) {
    try {
      const result = await fetchOne(options, layout, kind, id);
      if (skipped.length) options.logger.warn(`using ${kind}/${id}, the newest complete entry that verifies (passed over: ${skipped.map((s) => s.id).join(', ')})`);
      return { ...result, skipped };
    } catch (error) {
      if (!(isLifelineError(error) && FALL_BACK_ON.has(error.code))) throw error;
      skipped.push({ id, reason: error.message });
      options.logger.warn(`${kind}/${id} cannot be used: ${error.message}; falling back to the previous complete entry`);
    }
  }
  throw failure(
    'REMOTE_NO_USABLE_ENTRY',
    `no ${kind} entry of environment ${options.env} in ${options.remote.location} is complete and verifies:\n${skipped.map((s) => `  ${s.id}: ${s.reason}`).join('\n')}`,
    {
      fix: 'run `lifeline sync` from a host whose local entries verify; the copies listed above are damaged or incomplete',
    },
  );
}

/** Failures of one remote entry that make `latest` try the previous one. */
const FALL_BACK_ON = new Set(['REMOTE_OBJECT_MISSING', 'REMOTE_CHECKSUM_MISMATCH', 'REMOTE_ENTRY_INCOMPLETE', 'REMOTE_ENTRY_UNSAFE', 'REMOTE_OBJECT_TOO_LARGE', 'REMOTE_METADATA_UNREADABLE']);

async function fetchOne(options: FetchOptions, layout: RemoteLayout, kind: EntryKind, id: string): Promise<Omit<FetchResult, 'skipped'>> {
  const remoteEntry = await readRemoteEntry(options.remote, layout, kind, id, options.env);
  const missing = remoteEntry.sums.filter((s) => !remoteEntry.objects.has(s.file));
  if (missing.length)
    throw missingObjects(
      options.remote,
      `${kind}/${id}`,
      missing.map((s) => remoteEntry.entryPrefix + s.file),
    );
  const unnamed = namedFileProblems(remoteEntry.metadataFile, remoteEntry.metadata, remoteEntry.sums, remoteEntry.objects);
  if (unnamed.length) {
    throw failure('REMOTE_ENTRY_INCOMPLETE', `${kind}/${id} in ${options.remote.location} is incomplete: ${unnamed.map((p) => p.detail).join('; ')}; nothing was fetched`, {
      fix: 'that copy was altered or damaged: run `lifeline sync` from a host whose local entry verifies, or use an older entry',
      details: { problems: unnamed },
    });
  }
  const result = await importEntry({
    catalog: options.catalog,
    env: options.env,
    kind,
    id,
    metadataFile: remoteEntry.metadataFile,
    metadata: remoteEntry.metadata,
    sums: remoteEntry.sums,
    source: options.remote.location,
    open: async (file) => (await getObjectOrMissing(options.remote, `${kind}/${id}`, remoteEntry.entryPrefix + file)).body,
  });
  if (result.fetched) options.logger.info(`fetched ${kind}/${id} from ${options.remote.location}: ${remoteEntry.sums.length} file(s), ${result.bytes} bytes, every sha256 matched`);
  return result;
}

interface RemoteEntry {
  entryPrefix: string;
  /** File name -> listed object. */
  objects: Map<string, RemoteObject>;
  sumsText: string;
  sums: SumEntry[];
  metadataFile: string;
  metadata: EntryMetadata;
}

/** A remote entry's listing, SHA256SUMS and metadata; throws (exit 1) naming what is missing or unreadable. */
async function readRemoteEntry(remote: ObjectStore, layout: RemoteLayout, kind: string, id: string, env: string): Promise<RemoteEntry> {
  const entryPrefix = layout.entryPrefix(kind, id);
  const objects = new Map<string, RemoteObject>();
  for (const [key, object] of await listRemote(remote, entryPrefix)) {
    const name = key.slice(entryPrefix.length);
    if (!name.includes('/')) objects.set(name, object);
  }
  if (objects.size === 0) {
    throw failure('REMOTE_ENTRY_MISSING', `${kind}/${id} is not in ${remote.location} for environment ${env}: no object under ${entryPrefix}`, {
      fix: 'run `lifeline sync` on the host that holds it; `lifeline verify --remote --all` lists what the bucket holds',
    });
  }
  if (!objects.has(SUMS_FILE)) throw missingObjects(remote, `${kind}/${id}`, [entryPrefix + SUMS_FILE]);
  const sumsText = await readSmallObject(remote, entryPrefix + SUMS_FILE);
  let sums: SumEntry[];
  try {
    sums = parseSums(sumsText);
  } catch (error) {
    throw failure('REMOTE_METADATA_UNREADABLE', `${entryPrefix}${SUMS_FILE} is not a SHA256SUMS file (${(error as Error).message})`, {
      fix: 'that copy was not written by Lifeline, or is damaged: sync it again from a host whose entry verifies',
    });
  }
  for (const s of sums) {
    const problem = entryFileNameProblem(s.file);
    if (problem)
      throw failure('REMOTE_ENTRY_UNSAFE', `${entryPrefix}${SUMS_FILE} names the file ${JSON.stringify(s.file)}, which ${problem}; nothing was read`, {
        fix: 'that copy was not written by Lifeline: inspect and remove it',
      });
  }
  const metadataFile = metadataFileOf([...objects.keys()], sums);
  if (!metadataFile) {
    throw failure('REMOTE_ENTRY_INCOMPLETE', `${kind}/${id} in ${remote.location} has no metadata file: its upload never finished`, {
      fix: 'run `lifeline sync` on the host that holds it, or use another entry',
    });
  }
  let metadata: EntryMetadata;
  try {
    metadata = JSON.parse(await readSmallObject(remote, entryPrefix + metadataFile)) as EntryMetadata;
  } catch (error) {
    if (isLifelineError(error)) throw error;
    throw failure('REMOTE_METADATA_UNREADABLE', `${entryPrefix}${metadataFile} is not valid JSON`, { fix: 'sync the entry again from a host whose copy verifies' });
  }
  return { entryPrefix, objects, sumsText, sums, metadataFile, metadata };
}

/** Remote entry ids of a kind that have their metadata, newest first (by the metadata's createdAt). */
async function remoteCandidates(options: FetchOptions, layout: RemoteLayout): Promise<string[]> {
  const entries = groupRemoteEntries(layout, await listRemote(options.remote, `${layout.envPrefix()}${options.kind}/`));
  const candidates: Array<{ id: string; createdAt: string }> = [];
  for (const [entryPrefix, files] of entries) {
    const parsed = layout.parse(entryPrefix + SUMS_FILE)!;
    if (parsed.kind !== options.kind || !files.includes(SUMS_FILE)) continue;
    try {
      const metadataFile = metadataFileOf(files, parseSums(await readSmallObject(options.remote, entryPrefix + SUMS_FILE)));
      if (!metadataFile) continue;
      const metadata = JSON.parse(await readSmallObject(options.remote, entryPrefix + metadataFile)) as EntryMetadata;
      candidates.push({ id: parsed.id, createdAt: typeof metadata.createdAt === 'string' ? metadata.createdAt : '' });
    } catch (error) {
      // An unreadable entry is passed over here; a named fetch of it says why.
      if (isLifelineError(error) && error.kind === 'usage') throw error;
      options.logger.warn(`${parsed.kind}/${parsed.id} in ${options.remote.location} cannot be read (${(error as Error).message}); passed over`);
    }
  }
  candidates.sort((a, b) => (a.createdAt === b.createdAt ? b.id.localeCompare(a.id) : b.createdAt.localeCompare(a.createdAt)));
  return candidates.map((c) => c.id);
}

function missingObjects(remote: ObjectStore, ref: string, keys: string[]) {
  return failure(
    'REMOTE_OBJECT_MISSING',
    `${ref} in ${remote.location} is missing ${keys.length === 1 ? 'the object' : `${keys.length} objects`} ${keys.join(', ')} (listed in its ${SUMS_FILE} or required for the entry)`,
    {
      fix: 'the copy is incomplete: run `lifeline sync` from a host that holds the entry (it uploads what is missing), or use an older entry',
      details: { missing: keys },
    },
  );
}

/** GET that reports a vanished object as a missing object, not as a bucket or configuration problem. */
async function getObjectOrMissing(remote: ObjectStore, ref: string, key: string) {
  try {
    return await remote.get(key);
  } catch (error) {
    if (error instanceof S3RequestError && error.status === 404) throw missingObjects(remote, ref, [key]);
    throw error;
  }
}

export interface RemoteFileCheck {
  file: string;
  key: string;
  status: 'ok' | 'missing' | 'mismatch';
  /** How its bytes were checked: the provider's own SHA-256, or a streamed download and hash. */
  method: 'server-side sha256' | 'downloaded and hashed' | 'recorded sha256 (metadata file)' | 'none';
  detail: string;
}

export interface RemoteEntryVerification {
  location: string;
  kind: string;
  id: string;
  /** What the remote bytes were compared with. */
  against: 'the local SHA256SUMS' | "the bucket's own SHA256SUMS (no local copy)";
  files: RemoteFileCheck[];
  ok: boolean;
}

export interface VerifyRemoteOptions {
  env: string;
  kind: string;
  /** An entry id, or `latest` (the newest remote entry with its metadata). */
  id: string;
  catalog: Catalog;
  remote: ObjectStore;
  prefix: string;
  logger: Logger;
}

/**
 * Verifies one remote entry's objects: every file its SHA256SUMS lists must be there and hash to
 * the listed sha256 (the provider's full-object SHA-256 where it keeps one, else a streamed
 * download and hash; never the sha256 Lifeline itself recorded at upload). When the local
 * catalog holds the entry, the bucket's SHA256SUMS must equal the local one byte for byte. Every
 * file the metadata names must be listed there with the sha256 the metadata records, and present.
 */
export async function verifyRemoteEntry(options: VerifyRemoteOptions): Promise<RemoteEntryVerification> {
  const kind = asEntryKind(options.kind);
  const layout = new RemoteLayout(options.prefix, options.env);
  let id = options.id;
  if (id === 'latest') {
    const [newest] = await remoteCandidates({ ...options, kind, id }, layout);
    if (!newest)
      throw failure('REMOTE_ENTRY_NOT_FOUND', `no ${kind} entry of environment ${options.env} in ${options.remote.location} has its metadata`, {
        fix: 'run `lifeline sync` first, or check storage.bucket and storage.prefix',
      });
    id = newest;
  }
  const ref = `${kind}/${id}`;
  const files: RemoteFileCheck[] = [];
  let remoteEntry: RemoteEntry;
  try {
    remoteEntry = await readRemoteEntry(options.remote, layout, kind, id, options.env);
  } catch (error) {
    if (!(isLifelineError(error) && error.kind === 'failed')) throw error;
    const missingKeys = (error.details as { missing?: string[] } | undefined)?.missing ?? [];
    return {
      location: options.remote.location,
      kind,
      id,
      against: "the bucket's own SHA256SUMS (no local copy)",
      files: missingKeys.length
        ? missingKeys.map((key) => ({ file: key.slice(layout.entryPrefix(kind, id).length), key, status: 'missing' as const, method: 'none' as const, detail: 'missing in the bucket' }))
        : [{ file: '(entry)', key: layout.entryPrefix(kind, id), status: 'missing', method: 'none', detail: error.message }],
      ok: false,
    };
  }
  const local = await options.catalog.get(options.env, kind, id, remoteEntry.metadataFile).catch(() => undefined);
  let expected = remoteEntry.sums;
  if (local) {
    const localSums = await readEntryText(local.dir, SUMS_FILE);
    const sumsKey = remoteEntry.entryPrefix + SUMS_FILE;
    if (localSums !== remoteEntry.sumsText) {
      files.push({ file: SUMS_FILE, key: sumsKey, status: 'mismatch', method: 'downloaded and hashed', detail: 'differs from the local SHA256SUMS (the bucket copy was replaced or damaged)' });
    } else {
      files.push({ file: SUMS_FILE, key: sumsKey, status: 'ok', method: 'downloaded and hashed', detail: 'equals the local SHA256SUMS' });
    }
    expected = parseSums(localSums);
  } else {
    files.push({ file: SUMS_FILE, key: remoteEntry.entryPrefix + SUMS_FILE, status: 'ok', method: 'none', detail: 'read from the bucket (no local copy to compare with)' });
  }
  for (const { file, sha256 } of expected) {
    const key = remoteEntry.entryPrefix + file;
    if (!remoteEntry.objects.has(file)) {
      files.push({ file, key, status: 'missing', method: 'none', detail: `missing in the bucket (listed in ${SUMS_FILE})` });
      continue;
    }
    files.push(await checkObjectBytes(options.remote, file, key, sha256));
  }
  // Every file the metadata names must be listed with the sha256 it records: a SHA256SUMS with a
  // line removed (and its upload hash rewritten) would otherwise verify without the dump.
  for (const problem of namedFileProblems(remoteEntry.metadataFile, remoteEntry.metadata, expected, remoteEntry.objects)) {
    files.push({ file: problem.file, key: remoteEntry.entryPrefix + problem.file, status: problem.status, method: 'none', detail: problem.detail });
  }
  if (local) {
    const differs = metadataFieldsDiffer(local.metadata, remoteEntry.metadata);
    if (differs.length) {
      files.push({
        file: remoteEntry.metadataFile,
        key: remoteEntry.entryPrefix + remoteEntry.metadataFile,
        status: 'mismatch',
        method: 'downloaded and hashed',
        detail: `differs from the local ${remoteEntry.metadataFile} in ${differs.join(', ')}`,
      });
    }
  }
  if (!expected.some((s) => s.file === remoteEntry.metadataFile)) {
    // backup.json and the like change locally (a verification is recorded in them), so only their presence and upload hash are checked.
    files.push({
      file: remoteEntry.metadataFile,
      key: remoteEntry.entryPrefix + remoteEntry.metadataFile,
      status: 'ok',
      method: 'recorded sha256 (metadata file)',
      detail: `present; not covered by ${SUMS_FILE}`,
    });
  }
  const ok = files.every((f) => f.status === 'ok');
  for (const f of files) if (f.status !== 'ok') options.logger.error(`${ref} ${f.file}: ${f.detail}`);
  return { location: options.remote.location, kind, id, against: local ? 'the local SHA256SUMS' : "the bucket's own SHA256SUMS (no local copy)", files, ok };
}

interface NamedFileProblem {
  file: string;
  status: 'missing' | 'mismatch';
  detail: string;
}

/**
 * The files the metadata names that SHA256SUMS does not list with the same sha256, or that the
 * bucket lacks. An entry with any of these is incomplete, whatever its SHA256SUMS says.
 */
function namedFileProblems(metadataFile: string, metadata: EntryMetadata, sums: readonly SumEntry[], objects: ReadonlyMap<string, RemoteObject>): NamedFileProblem[] {
  const listed = new Map(sums.map((s) => [s.file, s.sha256]));
  const problems: NamedFileProblem[] = [];
  for (const { name, sha256 } of filesNamedByMetadata(metadata)) {
    if (typeof name !== 'string') {
      problems.push({ file: metadataFile, status: 'mismatch', detail: `${metadataFile} names a file without a usable name (${JSON.stringify(name) ?? 'undefined'})` });
      continue;
    }
    const problem = entryFileNameProblem(name);
    if (problem) {
      problems.push({ file: metadataFile, status: 'mismatch', detail: `${metadataFile} names the file ${JSON.stringify(name)}, which ${problem}` });
      continue;
    }
    const listedSha = listed.get(name);
    if (listedSha === undefined) problems.push({ file: name, status: 'missing', detail: `${metadataFile} names ${name} but ${SUMS_FILE} does not list it` });
    else if (listedSha !== sha256) problems.push({ file: name, status: 'mismatch', detail: `${metadataFile} records sha256 ${String(sha256)} for ${name}, ${SUMS_FILE} lists ${listedSha}` });
    else if (!objects.has(name)) problems.push({ file: name, status: 'missing', detail: `${metadataFile} names ${name} but it is missing in the bucket` });
  }
  return problems;
}

/** The metadata fields that matter for a restore; the rest (a recorded verification) legitimately changes locally. */
const COMPARED_METADATA_FIELDS = ['files', 'database', 'createdAt', 'rowCounts', 'schemaFingerprint', 'collections', 'archive'];

function metadataFieldsDiffer(local: EntryMetadata, remote: EntryMetadata): string[] {
  return COMPARED_METADATA_FIELDS.filter((field) => stableJson(local[field]) !== stableJson(remote[field]));
}

function stableJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(stableJson).join(',')}]`;
  if (value && typeof value === 'object') {
    return `{${Object.keys(value as object)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${stableJson((value as Record<string, unknown>)[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(value) ?? 'undefined';
}

/** One object's bytes against the expected sha256: the provider's full-object SHA-256 when it keeps one, else download and hash. */
async function checkObjectBytes(remote: ObjectStore, file: string, key: string, sha256: string): Promise<RemoteFileCheck> {
  const head = await remote.head(key);
  if (!head) return { file, key, status: 'missing', method: 'none', detail: 'missing in the bucket' };
  const serverSide = fullObjectSha256(head.checksumSha256);
  if (serverSide) {
    return serverSide === sha256
      ? { file, key, status: 'ok', method: 'server-side sha256', detail: `the provider's SHA-256 matches (${sha256.slice(0, 12)}...)` }
      : { file, key, status: 'mismatch', method: 'server-side sha256', detail: `the provider's SHA-256 is ${serverSide}, expected ${sha256}` };
  }
  let actual: string;
  try {
    actual = await hashRemote(remote, key);
  } catch (error) {
    if (error instanceof S3RequestError && error.status === 404) return { file, key, status: 'missing', method: 'none', detail: 'missing in the bucket' };
    throw error;
  }
  return actual === sha256
    ? { file, key, status: 'ok', method: 'downloaded and hashed', detail: `sha256 matches (${sha256.slice(0, 12)}...)` }
    : { file, key, status: 'mismatch', method: 'downloaded and hashed', detail: `sha256 ${actual} in the bucket, ${sha256} expected` };
}

/** A full-object SHA-256 (hex) from `x-amz-checksum-sha256`; undefined for none or a multipart checksum-of-checksums ("...-3"). */
function fullObjectSha256(base64: string | undefined): string | undefined {
  if (!base64 || base64.includes('-')) return undefined;
  const bytes = Buffer.from(base64, 'base64');
  return bytes.length === 32 ? bytes.toString('hex') : undefined;
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
    throw failure('REMOTE_OBJECT_TOO_LARGE', `${key} is ${head.size} bytes; Lifeline's ${SUMS_FILE} and metadata files are small`, {
      fix: 'check storage.prefix: the bucket holds something that is not a Lifeline entry',
    });
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
