import { constants, lstatSync, statSync, type Stats } from 'node:fs';
import { userInfo } from 'node:os';
import { lstat, open, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { LifelineError } from '../errors';
import { sha256Handle, type HashedFile } from './files';

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
  const uid = process.geteuid?.();
  // Another user's directory is never an entry of this catalog, whatever it holds.
  if (uid !== undefined && info.uid !== uid) throw unsafe(entryDir, '.', `is owned by uid ${info.uid}, not by ${runningUser()} that Lifeline runs as`);
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

/** sha256 of an entry file, read in 1 MiB chunks through a confined handle. */
export async function sha256EntryFile(entryDir: string, name: string): Promise<HashedFile> {
  const handle = await openEntryFile(entryDir, name);
  try {
    return await sha256Handle(handle);
  } finally {
    await handle.close();
  }
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
 * Whether the store root lets other local users in, or belongs to someone else: group or world
 * readable or writable (0755, 1777 on a tmpfs mount point) or owned by another user. A shared
 * root lets another user plant a directory or link where Lifeline resolves an environment, so it
 * is a problem whatever the modes below it. Returns the problem with its fix, or undefined when
 * the root is private or does not exist yet (Lifeline creates it 0700).
 */
export function sharedStoreProblem(root: string, _env?: string): { message: string; fix: string } | undefined {
  let info: { mode: number; uid: number };
  try {
    info = statSync(root);
  } catch {
    return undefined;
  }
  const mode = info.mode & 0o7777;
  const uid = process.geteuid?.();
  const foreign = uid !== undefined && info.uid !== uid;
  const readable = (mode & 0o044) !== 0;
  const writable = (mode & 0o022) !== 0;
  if (!readable && !writable && !foreign) return undefined;
  const octal = mode.toString(8).padStart(4, '0');
  const reach = readable && writable ? 'readable and writable' : readable ? 'readable' : writable ? 'writable' : '';
  const problems = [...(reach ? [`is ${reach} by other local users (mode ${octal})`] : []), ...(foreign ? [`is owned by uid ${info.uid}, not by ${runningUser()} that Lifeline runs as`] : [])];
  return {
    message: `the catalog ${root} ${problems.join(' and ')}: backups, tenant exports and Redis snapshots hold production data, and another user could plant a directory or link in it`,
    fix: [...(foreign ? [`chown ${userInfoName() ?? process.geteuid?.()} ${root}`] : []), `chmod 700 ${root}`].join(' && '),
  };
}

function userInfoName(): string | undefined {
  try {
    return userInfo().username;
  } catch {
    return undefined; // no passwd entry (a container's arbitrary uid)
  }
}

function runningUser(): string {
  const uid = process.geteuid?.();
  const name = userInfoName();
  return name ? `${name} (uid ${uid})` : `uid ${uid}`;
}

/**
 * The one rule for a directory Lifeline resolves under the store root (the environment, each
 * segment of the kind such as tenants/<tenant>/exports, the entry): when it exists it must be a
 * real directory (lstat: not a symbolic link) owned by the user Lifeline runs as. Anything else
 * could send reads and writes into another user's directory, so it is refused (exit 1) before
 * anything is read or written through it. A segment that does not exist yet ends the walk:
 * Lifeline creates it 0700 itself and writers check again after creating it.
 */
export function assertCatalogDirs(root: string, segments: readonly string[]): void {
  const uid = process.geteuid?.();
  let path = root;
  for (const segment of segments) {
    path = join(path, segment);
    let info: Stats;
    try {
      info = lstatSync(path);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') return;
      throw error;
    }
    let problem: string | undefined;
    if (info.isSymbolicLink()) problem = 'is a symbolic link';
    else if (!info.isDirectory()) problem = `is ${kindOf(info)}, not a directory`;
    else if (uid !== undefined && info.uid !== uid) problem = `is owned by uid ${info.uid}, not by ${runningUser()} that Lifeline runs as`;
    if (problem) {
      throw new LifelineError('failed', `the catalog directory ${path} ${problem}; Lifeline neither reads nor writes through it, nothing was read or written`, {
        code: 'CATALOG_DIR_UNSAFE',
        fix: `inspect ${path} (someone else may have planted it); move it away and let Lifeline recreate it as a private directory of ${runningUser()}, then make the store root private: chmod 700 ${root}`,
      });
    }
  }
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
