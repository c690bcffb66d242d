import { constants, statSync } from 'node:fs';
import { lstat, open, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { LifelineError } from '../errors';
import { HashingTransform, type HashedFile } from './files';

/**
 * The one rule for a file name read from inside an entry (SHA256SUMS, backup.json, export.json,
 * a remote listing): a single path segment of letters, digits, '.', '_', '+' and '-', starting
 * with a letter or digit. That excludes '..', '/', absolute paths, NUL and control characters,
 * and every name Lifeline itself never writes.
 */
const ENTRY_FILE_NAME = /^[A-Za-z0-9][A-Za-z0-9._+-]{0,254}$/;

export function isSafeEntryFileName(name: string): boolean {
  return ENTRY_FILE_NAME.test(name) && !name.includes('..');
}

/** Why `name` may not be read from the entry, or undefined when the name itself is acceptable. */
export function entryFileNameProblem(name: string): string | undefined {
  if (isSafeEntryFileName(name)) return undefined;
  if (name.startsWith('/')) return 'is an absolute path';
  if (name.includes('/') || name.includes('\\')) return 'is not a single path segment';
  if (name.includes('..')) return "contains '..'";
  return 'is not a name Lifeline writes (letters, digits, ., _, +, - only)';
}

/** A name or file inside an entry that Lifeline refuses to read (exit 1: the entry is damaged or hostile). */
export class UnsafeEntryFileError extends LifelineError {
  constructor(
    readonly entryDir: string,
    readonly fileName: string,
    readonly reason: string,
  ) {
    super('failed', `${JSON.stringify(fileName)} in ${entryDir} ${reason}; it was not read`, {
      code: 'ENTRY_UNSAFE_FILE',
      fix: `the entry at ${entryDir} was altered outside Lifeline: inspect it, then remove it or restore it from an off-host copy`,
    });
  }
}

function unsafe(entryDir: string, name: string, reason: string): UnsafeEntryFileError {
  return new UnsafeEntryFileError(entryDir, name, reason);
}

function kindOf(info: { isSymbolicLink(): boolean; isFIFO(): boolean; isCharacterDevice(): boolean; isBlockDevice(): boolean; isSocket(): boolean; isDirectory(): boolean }): string {
  if (info.isSymbolicLink()) return 'a symbolic link';
  if (info.isFIFO()) return 'a FIFO';
  if (info.isCharacterDevice() || info.isBlockDevice()) return 'a device';
  if (info.isSocket()) return 'a socket';
  if (info.isDirectory()) return 'a directory';
  return 'not a regular file';
}

async function assertEntryDir(entryDir: string): Promise<void> {
  // The entry directory itself must not be a link to somewhere else (the store root may be).
  const info = await lstat(entryDir);
  if (!info.isDirectory()) throw unsafe(entryDir, '.', `is ${kindOf(info)}, not an entry directory`);
}

/**
 * Opens a file of a catalog entry for reading, confined to that entry: the name must pass
 * `isSafeEntryFileName`, the entry directory must not be a symlink, and the file is opened with
 * O_NOFOLLOW | O_NONBLOCK (a FIFO cannot block the open) and must then be a regular file.
 * Every reader of a name that came from a file goes through here or `entryFilePath`.
 */
export async function openEntryFile(entryDir: string, name: string): Promise<FileHandle> {
  const problem = entryFileNameProblem(name);
  if (problem) throw unsafe(entryDir, name, problem);
  await assertEntryDir(entryDir);
  let handle: FileHandle;
  try {
    handle = await open(join(entryDir, name), constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ELOOP' || code === 'EMLINK') throw unsafe(entryDir, name, 'is a symbolic link');
    throw error;
  }
  try {
    const info = await handle.stat();
    if (!info.isFile()) throw unsafe(entryDir, name, `is ${kindOf(info)}`);
    return handle;
  } catch (error) {
    await handle.close();
    throw error;
  }
}

/**
 * The path of an entry file for a tool that opens it itself (pg_restore, redis-check-rdb), after
 * the same checks as `openEntryFile`. Only root and the store's owner can write inside an entry
 * (0700), so the window between this check and the tool's open is not an attacker's to use.
 */
export async function entryFilePath(entryDir: string, name: string): Promise<string> {
  const handle = await openEntryFile(entryDir, name);
  await handle.close();
  return join(entryDir, name);
}

/**
 * Before any write into an entry that is already committed (a verification result, a metadata
 * rewrite): the entry directory must be a real directory and the file, when present, a regular
 * file, neither a symbolic link, so a planted link never redirects the write outside the catalog.
 * Returns false when the entry or the file is gone (nothing to rewrite).
 */
export async function assertEntryWritable(entryDir: string, name: string): Promise<boolean> {
  const problem = entryFileNameProblem(name);
  if (problem) throw unsafe(entryDir, name, problem);
  const dirInfo = await lstat(entryDir).catch(missingAsUndefined);
  if (!dirInfo) return false;
  if (!dirInfo.isDirectory()) throw unsafe(entryDir, '.', `is ${kindOf(dirInfo)}, not an entry directory; nothing was written through it`);
  const fileInfo = await lstat(join(entryDir, name)).catch(missingAsUndefined);
  if (!fileInfo) return false;
  if (!fileInfo.isFile()) throw unsafe(entryDir, name, `is ${kindOf(fileInfo)}; nothing was written through it`);
  return true;
}

function missingAsUndefined(error: unknown): undefined {
  const code = (error as NodeJS.ErrnoException).code;
  if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
  throw error;
}

/** sha256 of an entry file, streamed in 1 MiB chunks through a confined handle. */
export async function sha256EntryFile(entryDir: string, name: string): Promise<HashedFile> {
  const handle = await openEntryFile(entryDir, name);
  const hasher = new HashingTransform();
  await pipeline(handle.createReadStream({ highWaterMark: 1024 * 1024 }), hasher, async function* (source) {
    for await (const _chunk of source) {
      // drain
    }
  });
  return { sha256: hasher.digest(), bytes: hasher.bytes };
}

/** A small entry file (metadata, SHA256SUMS) as text, through a confined handle; refuses more than `limit` bytes. */
export async function readEntryText(entryDir: string, name: string, limit = 16 * 1024 * 1024): Promise<string> {
  const handle = await openEntryFile(entryDir, name);
  try {
    const { size } = await handle.stat();
    if (size > limit) throw unsafe(entryDir, name, `is ${size} bytes, more than the ${limit} a metadata file may hold`);
    return await handle.readFile('utf8');
  } finally {
    await handle.close();
  }
}

/**
 * Whether other local users can reach the environment's files: the store root and the environment
 * directory both let group or others in (a 0700 on either one keeps everything below private).
 * Returns the problem with its fix, or undefined when the catalog is private or does not exist yet.
 */
export function sharedStoreProblem(root: string, env: string): { message: string; fix: string } | undefined {
  const modeOf = (path: string): number | undefined => {
    try {
      return statSync(path).mode & 0o777;
    } catch {
      return undefined;
    }
  };
  const rootMode = modeOf(root);
  if (rootMode === undefined || (rootMode & 0o077) === 0) return undefined;
  const envMode = modeOf(join(root, env));
  if (envMode !== undefined && (envMode & 0o077) === 0) return undefined;
  const octal = (m: number) => m.toString(8).padStart(4, '0');
  return {
    message: `the catalog ${root} is readable by other local users (mode ${octal(rootMode)}${envMode === undefined ? '' : `, ${env}/ ${octal(envMode)}`}): backups, tenant exports and Redis snapshots hold production data`,
    fix: `chmod -R go-rwx ${root}`,
  };
}

let warnSink: ((message: string) => void) | undefined;
const warned = new Set<string>();

/** The door (CLI or action) says where catalog warnings go; domain code never logs directly here. */
export function setCatalogWarningSink(sink: ((message: string) => void) | undefined): void {
  warnSink = sink;
  warned.clear();
}

/** Called by every catalog write path: warns once per store and environment when it is shared. */
export function warnIfStoreShared(root: string, env: string): void {
  const key = `${root}\0${env}`;
  if (warned.has(key)) return;
  warned.add(key);
  const problem = sharedStoreProblem(root, env);
  if (problem) warnSink?.(`${problem.message}; fix: ${problem.fix}`);
}
