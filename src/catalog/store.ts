import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { appendFile, lstat, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { Readable, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { failure, usageError, type LifelineError } from '../errors';
import { fsyncPath, hashingFileWriter, HashingTransform, mkdirPrivate, PRIVATE_FILE_MODE, streamToFile, writeFileAtomic, type HashedFile } from './files';
import { assertCatalogDirs, assertEntryWritable, readEntryText, UnsafeEntryFileError, warnIfStoreShared } from './confine';
import { withWriteOutcome } from './fs-errors';
import { formatSums, SUMS_FILE, type SumEntry } from './sums';
import { AGE_SUFFIX, encryptingWriter, type PayloadEncryption } from '../crypto/age';

/** A payload as stored: its name in the entry (with `.age` when encrypted), the stored bytes' hash and size, and how it was encrypted. */
export interface StoredFile extends HashedFile {
  name: string;
  encryption?: PayloadEncryption;
}

export interface BeginOptions {
  /**
   * age recipients: every payload added to the entry (addStream, addWriter, addText) is stored as
   * `<name>.age`, encrypted while it streams; SHA256SUMS lists the encrypted files.
   */
  encryptTo?: readonly string[];
}

export const CATALOG_SCHEMA_VERSION = 1;

/** The kinds of entries the catalog holds under each environment. */
export type EntryKind = 'backups' | 'releases' | 'drills' | 'deployments' | 'redis-snapshots' | `tenants/${string}/exports`;

export interface EntryMetadata {
  schemaVersion: number;
  id: string;
  createdAt: string;
  [key: string]: unknown;
}

export interface CatalogEntry<M extends EntryMetadata = EntryMetadata> {
  id: string;
  dir: string;
  metadata: M;
}

const SAFE_SEGMENT = /^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$/;

/** Refuses anything that could escape the catalog's directory when used as a path segment. */
export function assertSafeSegment(value: string, what: string): void {
  if (!SAFE_SEGMENT.test(value) || value.includes('..')) {
    throw usageError(
      'UNSAFE_NAME',
      `${what} ${JSON.stringify(value)} cannot be used as a catalog name`,
      `use letters, digits, '.', '_', '+' and '-' only (no '/', '..', spaces or control characters), starting with a letter or digit`,
    );
  }
}

/** Sortable, collision-resistant ids: creation time in UTC plus randomness. */
export function newEntryId(now = new Date()): string {
  const stamp = now.toISOString().replace(/[-:]/g, '').replace('.', '');
  return `${stamp}-${randomBytes(3).toString('hex')}`;
}

/**
 * The backup catalog on the local filesystem. An entry is a directory; it is written under a
 * hidden staging name and renamed into place only once every file, `SHA256SUMS` and the
 * metadata are on disk, so an interrupted writer never leaves anything that lists as complete.
 */
export class Catalog {
  /** Paths of damaged entries already reported by this catalog (each is reported once). */
  private readonly reported = new Set<string>();

  constructor(
    readonly root: string,
    private readonly options: CatalogOptions = {},
  ) {}

  /** Reports an entry that is skipped because it cannot be read (once per path). */
  reportDamaged(path: string, reason: string): void {
    if (this.reported.has(path)) return;
    this.reported.add(path);
    this.options.warn?.(`skipped ${path}: ${reason}; the other entries are used (inspect it, restore it from an off-host copy or remove the entry)`);
  }

  // Every directory resolved under the root is checked here, once: a real directory of ours or
  // nothing (assertCatalogDirs), so a planted link or another user's directory is never used.
  envDir(env: string): string {
    assertSafeSegment(env, 'environment');
    assertCatalogDirs(this.root, [env]);
    return join(this.root, env);
  }

  kindDir(env: string, kind: EntryKind): string {
    assertSafeSegment(env, 'environment');
    assertCatalogDirs(this.root, [env, ...kind.split('/')]);
    return join(this.root, env, kind);
  }

  entryDir(env: string, kind: EntryKind, id: string): string {
    assertSafeSegment(env, 'environment');
    assertSafeSegment(id, 'id');
    assertCatalogDirs(this.root, [env, ...kind.split('/'), id]);
    return join(this.root, env, kind, id);
  }

  async begin(env: string, kind: EntryKind, id: string, metadataFile: string, options: BeginOptions = {}): Promise<StagedEntry> {
    const finalDir = this.entryDir(env, kind, id);
    if (await exists(finalDir)) {
      throw usageError('ENTRY_EXISTS', `${kind} entry ${id} already exists in environment ${env}`, 'choose another id; catalog entries are immutable once written');
    }
    warnIfStoreShared(this.root, env);
    const stagingDir = join(this.kindDir(env, kind), `.staging-${id}-${process.pid}`);
    await withWriteOutcome(`nothing was added to the catalog (${kind} entry ${id} was not started)`, () => mkdirPrivate(stagingDir));
    // Again after creating: a directory planted between the check and the mkdir is caught before a byte is written.
    assertCatalogDirs(this.root, [env, ...kind.split('/'), basename(stagingDir)]);
    return new StagedEntry(stagingDir, finalDir, metadataFile, `${kind} entry ${id}`, options.encryptTo?.length ? [...options.encryptTo] : undefined);
  }

  /** Complete entries, newest first. Staging directories and entries without metadata are skipped. */
  async list<M extends EntryMetadata>(env: string, kind: EntryKind, metadataFile: string): Promise<CatalogEntry<M>[]> {
    const dir = this.kindDir(env, kind);
    let names: string[];
    try {
      names = await readdir(dir);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw error;
    }
    const entries: CatalogEntry<M>[] = [];
    for (const name of names) {
      if (name.startsWith('.')) continue;
      // An entry that vanishes mid-listing (a concurrent prune renamed it away) is simply skipped.
      // lstat, not stat: a symlink planted as an entry would otherwise list, count for retention
      // and be written through, while every reader refuses it.
      const info = await lstat(join(dir, name)).catch(skipWhenGone);
      if (!info) continue;
      if (!info.isDirectory()) {
        this.reportDamaged(join(dir, name), `it is ${describeKind(info)}, not an entry directory`);
        continue;
      }
      const path = join(dir, name, metadataFile);
      let metadata: M | undefined;
      try {
        // The confined reader: O_NOFOLLOW | O_NONBLOCK, regular files only, bounded size, so a
        // FIFO, device or link named like the metadata is damage, never a hang.
        metadata = await readJsonIfExists<M>(join(dir, name), metadataFile);
      } catch (error) {
        if (isGone(error)) continue;
        // One damaged entry must not take the listing (and every restore, drill and gate) down with it.
        const reason = (error as LifelineError).code === 'CATALOG_CORRUPT' ? 'it is not valid JSON' : error instanceof UnsafeEntryFileError ? `it ${error.reason}` : (error as Error).message;
        this.reportDamaged(path, reason);
        continue;
      }
      if (!metadata) continue;
      const problem = metadataProblem(metadata);
      if (problem) {
        this.reportDamaged(path, problem);
        continue;
      }
      entries.push({ id: name, dir: join(dir, name), metadata });
    }
    return entries.sort((a, b) => (a.metadata.createdAt === b.metadata.createdAt ? b.id.localeCompare(a.id) : b.metadata.createdAt.localeCompare(a.metadata.createdAt)));
  }

  async get<M extends EntryMetadata>(env: string, kind: EntryKind, id: string, metadataFile: string): Promise<CatalogEntry<M> | undefined> {
    const dir = this.entryDir(env, kind, id);
    const metadata = await readJsonIfExists<M>(dir, metadataFile);
    return metadata ? { id, dir, metadata } : undefined;
  }

  /** Rewrites an entry's metadata atomically (e.g. to record a verification). */
  async updateMetadata<M extends EntryMetadata>(entry: CatalogEntry<M>, metadataFile: string, metadata: M): Promise<void> {
    await assertEntryWritable(entry.dir, metadataFile);
    await withWriteOutcome(`${join(entry.dir, metadataFile)} was left as it was (the entry itself is unchanged)`, () =>
      writeFileAtomic(join(entry.dir, metadataFile), `${JSON.stringify(metadata, null, 2)}\n`),
    );
  }

  /**
   * Rewrites the metadata of an entry that must still be there: never creates a directory, so an
   * entry deleted meanwhile stays deleted (the temporary file cannot be created in a directory
   * that is gone, and the rename fails once the directory was renamed away).
   * Returns false, writing nothing, when the entry or its metadata file is gone.
   */
  async rewriteExistingMetadata<M extends EntryMetadata>(entry: CatalogEntry<M>, metadataFile: string, metadata: M): Promise<boolean> {
    const path = join(entry.dir, metadataFile);
    // Refuses (exit 1) when the entry or its metadata is a symbolic link or not a regular file.
    if (!(await assertEntryWritable(entry.dir, metadataFile))) return false;
    const tmp = join(entry.dir, `.${metadataFile}.tmp-${process.pid}-${Date.now()}`);
    try {
      await writeFile(tmp, `${JSON.stringify(metadata, null, 2)}\n`, { mode: PRIVATE_FILE_MODE, flag: 'wx' });
      await fsyncPath(tmp);
      await rename(tmp, path);
    } catch (error) {
      await rm(tmp, { force: true });
      if (isGone(error)) return false;
      throw error;
    }
    await fsyncPath(entry.dir).catch(skipWhenGone);
    return true;
  }

  async remove(entry: CatalogEntry): Promise<void> {
    // Rename first so a half-deleted entry never lists as complete.
    const parent = join(entry.dir, '..');
    const doomed = join(parent, `.deleting-${entry.id}-${process.pid}`);
    await rename(entry.dir, doomed);
    await fsyncPath(parent);
    await rm(doomed, { recursive: true, force: true });
  }

  /** Removes staging directories left by writers that died; returns what was removed. */
  async sweepStaging(env: string, kind: EntryKind, olderThanMs = 60 * 60 * 1000): Promise<string[]> {
    const dir = this.kindDir(env, kind);
    const removed: string[] = [];
    let names: string[] = [];
    try {
      names = await readdir(dir);
    } catch {
      return removed;
    }
    for (const name of names) {
      if (!name.startsWith('.staging-') && !name.startsWith('.deleting-')) continue;
      const path = join(dir, name);
      const info = await stat(path);
      const pid = Number(/-(\d+)$/.exec(name)?.[1]);
      if (Date.now() - info.mtimeMs > olderThanMs || (pid && !processAlive(pid))) {
        await rm(path, { recursive: true, force: true });
        removed.push(name);
      }
    }
    return removed;
  }

  /** Appends one JSON line to an environment's append-only log (e.g. deploy history). */
  async appendLog(env: string, name: string, record: unknown): Promise<void> {
    const path = join(this.envDir(env), name);
    warnIfStoreShared(this.root, env);
    await withWriteOutcome(`the record was not appended to ${name}`, async () => {
      await mkdirPrivate(this.envDir(env));
      this.envDir(env); // again after creating it (see begin)
      await appendFile(path, `${JSON.stringify(record)}\n`, { mode: PRIVATE_FILE_MODE });
      await fsyncPath(path);
    });
  }

  async readLog<T>(env: string, name: string): Promise<T[]> {
    const text = await readFile(join(this.envDir(env), name), 'utf8').catch((error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOENT') return '';
      throw error;
    });
    return text
      .split('\n')
      .filter((line) => line.trim())
      .flatMap((line) => {
        try {
          return [JSON.parse(line) as T];
        } catch {
          return []; // a torn last line from a crash is skipped, never fatal
        }
      });
  }
}

/** An entry being written. Nothing here is visible to `list` until `commit` renames it into place. */
export class StagedEntry {
  private readonly sums: SumEntry[] = [];
  private settled = false;

  constructor(
    readonly dir: string,
    readonly finalDir: string,
    private readonly metadataFile: string,
    private readonly what = 'the entry',
    /** age recipients when payloads are stored encrypted. */
    readonly encryptTo?: readonly string[],
  ) {}

  /** The name a payload is stored under: `<name>.age` when the entry is encrypted. */
  storedName(name: string): string {
    return this.encryptTo ? `${name}${AGE_SUFFIX}` : name;
  }

  /** A write failure inside a staged entry never leaves anything listed: say so, with the path. */
  private write<T>(fn: () => Promise<T>): Promise<T> {
    return withWriteOutcome(`nothing was added to the catalog (${this.what} stays unlisted; its staging directory is removed)`, fn, this.dir);
  }

  path(name: string): string {
    assertSafeSegment(name, 'file name');
    return join(this.dir, name);
  }

  /**
   * Streams a payload into the entry, hashing it on the way, and records it for SHA256SUMS. When
   * the entry is encrypted the plaintext is encrypted in the stream (never on disk) and the stored
   * name is `<name>.age`; the result then also carries the plaintext's hash and size.
   */
  async addStream(name: string, source: Readable, onProgress?: (bytes: number) => void): Promise<StoredFile> {
    if (!this.encryptTo) {
      const result = await this.write(() => streamToFile(source, this.path(name), onProgress));
      this.sums.push({ file: name, sha256: result.sha256 });
      return { name, ...result };
    }
    const writer = this.addWriter(name);
    if (onProgress) source.on('data', () => onProgress(writer.plaintextBytes()));
    await this.write(() => pipeline(source, writer.stream));
    return writer.done();
  }

  /** A writable for a producer that pushes; call `done()` after the producer finished. */
  addWriter(name: string): { stream: Writable; name: string; plaintextBytes(): number; done(): Promise<StoredFile> } {
    const stored = this.storedName(name);
    const writer = hashingFileWriter(this.path(stored));
    if (!this.encryptTo) {
      return {
        stream: writer.stream,
        name: stored,
        plaintextBytes: () => (writer.stream as HashingTransform).bytes,
        done: async () => {
          const result = await this.write(() => writer.done());
          this.sums.push({ file: stored, sha256: result.sha256 });
          return { name: stored, ...result };
        },
      };
    }
    const recipients = [...this.encryptTo];
    const encrypting = encryptingWriter(writer.stream, recipients);
    return {
      stream: encrypting.stream,
      name: stored,
      plaintextBytes: () => (encrypting.stream as HashingTransform).bytes,
      done: async () => {
        const plain = await this.write(() => encrypting.done());
        const result = await this.write(() => writer.done());
        this.sums.push({ file: stored, sha256: result.sha256 });
        return { name: stored, ...result, encryption: { format: 'age', recipients, plaintextSha256: plain.sha256, plaintextBytes: plain.bytes } };
      },
    };
  }

  /**
   * A scratch file inside the staging directory (0600, created exclusively), for a producer that
   * must land its bytes before it can say how many belong to the payload. It is never listed in
   * SHA256SUMS; `remove()` deletes it, and the staging directory goes with a failed entry anyway.
   */
  scratchFile(name: string): { path: string; stream: Writable; remove(): Promise<void> } {
    const path = this.path(name);
    const stream = createWriteStream(path, { flags: 'wx', mode: PRIVATE_FILE_MODE });
    return {
      path,
      stream,
      remove: async () => {
        stream.destroy();
        await rm(path, { force: true });
      },
    };
  }

  async addText(name: string, text: string): Promise<StoredFile> {
    return this.addStream(name, Readable.from([Buffer.from(text)]));
  }

  /**
   * Stores a file as it is, never encrypted, even in an encrypted entry: only for content that is
   * already ciphertext or holds no payload (a tar of the entry's `.age` files, its `.sha256`).
   */
  async addUnencrypted(name: string, source: Readable): Promise<StoredFile> {
    const result = await this.write(() => streamToFile(source, this.path(name)));
    this.sums.push({ file: name, sha256: result.sha256 });
    return { name, ...result };
  }

  /** Writes SHA256SUMS and the metadata and fsyncs them, without moving the entry (commit does both; a rewrite swaps it in itself). */
  async seal(metadata: EntryMetadata): Promise<void> {
    await this.write(async () => {
      await writeFileAtomic(join(this.dir, SUMS_FILE), formatSums(this.sums));
      await writeFileAtomic(join(this.dir, this.metadataFile), `${JSON.stringify(metadata, null, 2)}\n`);
      await fsyncPath(this.dir);
    });
  }

  /** Writes SHA256SUMS and the metadata, fsyncs, and renames the entry into place. */
  async commit(metadata: EntryMetadata): Promise<void> {
    await this.seal(metadata);
    await this.write(async () => {
      await rename(this.dir, this.finalDir);
    });
    await fsyncPath(join(this.finalDir, '..'));
    this.settled = true;
  }

  async abort(): Promise<void> {
    if (this.settled) return;
    this.settled = true;
    await rm(this.dir, { recursive: true, force: true });
  }
}

export interface CatalogOptions {
  /** Where damaged entries that a listing skips are reported (the command's logger). */
  warn?: (message: string) => void;
}

function isGone(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException)?.code;
  return code === 'ENOENT' || code === 'ENOTDIR';
}

/** Metadata is small JSON; more than this is damage, not a backup.json. */
const METADATA_LIMIT = 4 * 1024 * 1024;

function describeKind(info: { isSymbolicLink(): boolean; isFIFO(): boolean; isFile(): boolean }): string {
  if (info.isSymbolicLink()) return 'a symbolic link';
  if (info.isFIFO()) return 'a FIFO';
  if (info.isFile()) return 'a file';
  return 'not a directory';
}

function skipWhenGone(error: unknown): undefined {
  if (isGone(error)) return undefined;
  throw error;
}

/** Why parsed metadata cannot be listed, or undefined when it has what listing and sorting need. */
function metadataProblem(metadata: unknown): string | undefined {
  if (typeof metadata !== 'object' || metadata === null || Array.isArray(metadata)) return 'it is not a JSON object';
  const m = metadata as Partial<EntryMetadata>;
  if (typeof m.createdAt !== 'string' || Number.isNaN(Date.parse(m.createdAt))) return 'it has no valid createdAt';
  if (typeof m.schemaVersion !== 'number') return 'it has no schemaVersion';
  if (m.schemaVersion > CATALOG_SCHEMA_VERSION)
    return `it has schema version ${m.schemaVersion}, written by a newer Lifeline (this one reads up to ${CATALOG_SCHEMA_VERSION}); upgrade Lifeline to use it`;
  return undefined;
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

async function readJsonIfExists<T>(entryDir: string, name: string): Promise<T | undefined> {
  const path = join(entryDir, name);
  let text: string;
  try {
    text = await readEntryText(entryDir, name, METADATA_LIMIT);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
    throw error;
  }
  try {
    return JSON.parse(text) as T;
  } catch (error) {
    throw failure('CATALOG_CORRUPT', `${path} is not valid JSON`, { cause: error, fix: 'inspect the file; restore it from an off-host copy or remove the entry' });
  }
}

export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}
