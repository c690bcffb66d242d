import { failure, isLifelineError, type LifelineError } from '../errors';
import type { CodeOf } from '../error-codes';

const FILESYSTEM_CODES: Record<string, { what: string; fix: (path: string) => string }> = {
  ENOSPC: {
    what: 'no space left on the device',
    fix: (p) => `free space on the filesystem that holds ${p} (df -h ${p}), e.g. lifeline prune, or point --store / store: at a larger disk, then run the command again`,
  },
  EDQUOT: { what: 'the disk quota is exhausted', fix: (p) => `raise the quota or free space under ${p}, then run the command again` },
  EROFS: { what: 'the filesystem is read-only', fix: (p) => `remount the filesystem that holds ${p} read-write (or point --store at a writable one), then run the command again` },
  EACCES: { what: 'permission denied', fix: (p) => `run Lifeline as the user that owns the catalog (ls -ld ${p}), or fix the owner of ${p}` },
  EPERM: { what: 'operation not permitted', fix: (p) => `run Lifeline as the user that owns the catalog (ls -ld ${p}), or fix the owner of ${p}` },
  EMFILE: { what: 'too many open files', fix: () => 'raise the open-files limit (ulimit -n) and run the command again' },
  ENOTDIR: { what: 'a part of the path is a file, not a directory', fix: (p) => `point --store (store: in lifeline.yml) at a directory: a part of ${p} is a file (ls -ld each part of it)` },
  EIO: { what: 'an I/O error', fix: (p) => `check the disk that holds ${p} (dmesg); the data on it may be damaged` },
};

export function isFilesystemError(error: unknown): error is NodeJS.ErrnoException {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  return typeof code === 'string' && code in FILESYSTEM_CODES;
}

/**
 * Turns an ENOSPC, EROFS, EACCES (and kin) into a LifelineError that names the path, says what
 * was and was not written (`outcome`), and what to do. Anything else is returned as undefined.
 */
export function describeFilesystemError(error: unknown, outcome?: string, where?: string): LifelineError | undefined {
  // Already described further down (a catalog write): keep that message, it knows the outcome.
  if (isLifelineError(error)) return error.code.startsWith('FS_') ? error : undefined;
  if (!isFilesystemError(error)) return undefined;
  const known = FILESYSTEM_CODES[error.code!]!;
  // A write(2) failure carries no path: `where` (the entry or file being written) stands in.
  const path = error.path ?? (error as { dest?: string }).dest ?? where ?? 'a file';
  const doing = error.syscall ? ` (${error.syscall})` : '';
  return failure(`FS_${error.code}` as CodeOf<'failed'>, `${path}: ${known.what}${doing}${outcome ? `; ${outcome}` : ''}`, {
    fix: known.fix(path),
    cause: error,
    details: { path, errno: error.code },
  });
}

/** Runs a catalog write; a filesystem failure becomes a LifelineError carrying `outcome`. */
export async function withWriteOutcome<T>(outcome: string, fn: () => Promise<T>, where?: string): Promise<T> {
  try {
    return await fn();
  } catch (error) {
    throw describeFilesystemError(error, outcome, where) ?? error;
  }
}
