import { constants } from 'node:fs';
import { open, rm, mkdir } from 'node:fs/promises';
import { hostname, userInfo } from 'node:os';
import { join } from 'node:path';
import { failure, refusal } from '../errors';
import { refuseIfInterrupted } from '../runner/interrupt';
import { processAlive } from './store';

export interface LockInfo {
  owner: string;
  pid: number;
  host: string;
  command: string;
  acquiredAt: string;
}

export interface LockStatus {
  held: boolean;
  info?: LockInfo;
  /** The holder is on this host and its process is gone. */
  stale: boolean;
}

export interface AcquireOptions {
  command: string;
  owner?: string;
  /** How long to wait for another holder to finish before giving up. */
  waitSeconds?: number;
  pollMs?: number;
}

export const LOCK_FILE = '.lock';

function lockPath(envDir: string): string {
  return join(envDir, LOCK_FILE);
}

export function defaultOwner(env: Record<string, string | undefined> = {}): string {
  if (env.GITHUB_ACTOR) return `${env.GITHUB_ACTOR} (${env.GITHUB_WORKFLOW ?? 'workflow'} run ${env.GITHUB_RUN_ID ?? '?'})`;
  try {
    return userInfo().username;
  } catch {
    return 'unknown';
  }
}

export async function lockStatus(envDir: string): Promise<LockStatus> {
  let text: string;
  try {
    text = await readLockText(lockPath(envDir));
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return { held: false, stale: false };
    // A link, FIFO or directory where the lock belongs: held (acquiring cannot create it), owner
    // unknown, stale (no process of ours made it): reported, and removable with lock break.
    if (error instanceof NotALockFile) return { held: true, stale: true };
    throw error;
  }
  let info: LockInfo | undefined;
  try {
    info = JSON.parse(text) as LockInfo;
  } catch {
    // A lock file torn by a crash during creation: held, of unknown owner, and stale.
    return { held: true, stale: true };
  }
  const stale = info.host === hostname() && !processAlive(info.pid);
  return { held: true, info, stale };
}

class NotALockFile extends Error {}

/**
 * The lock file's text, opened without following a link and without blocking on a FIFO (a plain
 * read of a FIFO planted as `.lock` would hang every command that looks at the lock).
 */
async function readLockText(path: string): Promise<string> {
  let handle;
  try {
    handle = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ELOOP' || code === 'EMLINK') throw new NotALockFile('a symbolic link');
    throw error;
  }
  try {
    const info = await handle.stat();
    if (!info.isFile() || info.size > 64 * 1024) throw new NotALockFile('not a small regular file');
    return await handle.readFile('utf8');
  } finally {
    await handle.close();
  }
}

export class EnvironmentLock {
  private released = false;
  constructor(
    readonly envDir: string,
    readonly info: LockInfo,
  ) {}

  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    const status = await lockStatus(this.envDir);
    // Only remove the lock if it is still ours (it may have been broken and retaken).
    if (status.info && status.info.pid === this.info.pid && status.info.acquiredAt === this.info.acquiredAt && status.info.host === this.info.host) {
      await rm(lockPath(this.envDir), { force: true });
    }
  }
}

/**
 * Takes the per-environment lock: an exclusive create, so two writers can never both succeed.
 * A stale lock is reported, never broken silently: `lifeline lock break` does that explicitly.
 */
export async function acquireLock(envDir: string, env: string, options: AcquireOptions): Promise<EnvironmentLock> {
  await mkdir(envDir, { recursive: true, mode: 0o700 });
  const info: LockInfo = {
    owner: options.owner ?? defaultOwner(),
    pid: process.pid,
    host: hostname(),
    command: options.command,
    acquiredAt: new Date().toISOString(),
  };
  const deadline = Date.now() + (options.waitSeconds ?? 0) * 1000;
  for (;;) {
    try {
      const handle = await open(lockPath(envDir), 'wx', 0o600);
      try {
        await handle.writeFile(JSON.stringify(info));
        await handle.sync();
      } finally {
        await handle.close();
      }
      return new EnvironmentLock(envDir, info);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
    const status = await lockStatus(envDir);
    if (!status.held) continue;
    const holder = status.info
      ? `${status.info.owner} (pid ${status.info.pid} on ${status.info.host}, running "${status.info.command}" since ${status.info.acquiredAt})`
      : 'an unknown holder (the lock file is unreadable)';
    if (status.stale) {
      throw refusal(
        'LOCK_STALE',
        `environment ${env} is locked by ${holder}, and that process is gone`,
        `make sure nothing else is running against ${env}, then run: lifeline lock break --env ${env}`,
        { lock: status.info },
      );
    }
    if (Date.now() >= deadline) {
      throw refusal('LOCK_HELD', `environment ${env} is locked by ${holder}`, `wait for it to finish, or re-run later; another deploy, rollback, restore or backup is in progress`, {
        lock: status.info,
      });
    }
    await new Promise((r) => setTimeout(r, options.pollMs ?? 500));
    refuseIfInterrupted(`"${options.command}" (it was waiting for the lock of ${env})`);
  }
}

/**
 * Explicitly removes a lock; returns what was removed. Only a lock whose holder is gone: a live
 * holder on this host is refused (two deploys would then run at once), and a holder on another
 * host, whose process cannot be checked from here, needs `force` (the operator checked it).
 */
export async function breakLock(envDir: string, options: { env?: string; force?: boolean } = {}): Promise<LockStatus> {
  const env = options.env ?? 'this environment';
  const status = await lockStatus(envDir);
  if (!status.held) return status;
  const info = status.info;
  if (info) {
    const holder = `${info.owner} (pid ${info.pid} on ${info.host}, running "${info.command}" since ${info.acquiredAt})`;
    if (info.host === hostname() && processAlive(info.pid)) {
      throw refusal(
        'LOCK_HOLDER_ALIVE',
        `the lock of ${env} is held by ${holder}, and that process is still running on this host`,
        `wait for it to finish; if it hangs, stop it first (kill ${info.pid}), then run lifeline lock break --env ${env}`,
        { lock: info },
      );
    }
    if (info.host !== hostname() && !options.force) {
      throw refusal(
        'LOCK_HOLDER_REMOTE',
        `the lock of ${env} is held by ${holder}, on another host, whose process cannot be checked from ${hostname()}`,
        `check on ${info.host} that pid ${info.pid} is gone, then run lifeline lock break --env ${env} --force`,
        { lock: info },
      );
    }
  }
  // Removed only if it is still the lock we judged: a new holder may have taken it meanwhile.
  const now = await lockStatus(envDir);
  if (JSON.stringify(now.info) !== JSON.stringify(info)) {
    throw refusal('LOCK_CHANGED', `the lock of ${env} changed hands while it was being checked`, `run lifeline lock status --env ${env} and decide again`);
  }
  await rm(lockPath(envDir), { force: true });
  return status;
}

export async function withLock<T>(envDir: string, env: string, options: AcquireOptions, fn: () => Promise<T>): Promise<T> {
  const lock = await acquireLock(envDir, env, options);
  try {
    return await fn();
  } finally {
    await lock.release().catch(() => {
      throw failure('LOCK_RELEASE', `could not release the lock of ${env}`, { fix: `run lifeline lock break --env ${env}` });
    });
  }
}
