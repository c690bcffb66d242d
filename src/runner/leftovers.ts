import { randomBytes } from 'node:crypto';
import { closeSync, constants, fstatSync, lstatSync, mkdirSync, openSync, readdirSync, readFileSync, readlinkSync, realpathSync, rmSync, unlinkSync, writeSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { basename, isAbsolute, join, normalize } from 'node:path';
import { failure } from '../errors';
import { stopPid } from './ports';
import { describeExit, LocalRunner, lastLines, runText, type Runner } from './runner';

/**
 * What a drill leaves running when it is killed before its own clean-up (kill -9, OOM, a cancelled
 * CI job): a throwaway PostgreSQL server holding a copy of production, a restored point-in-time
 * data directory, the application container. Each is recorded here, in a private directory of
 * this host, before it exists; the record is removed after it is gone. The next drill (and
 * `lifeline doctor`) finds records whose owner process has died and removes what they name.
 */
export type LeftoverKind = 'cluster' | 'directory' | 'container';

export interface LeftoverRecord {
  kind: LeftoverKind;
  /**
   * The process that started it; a record whose owner still runs is in use, never reaped. `pidns`
   * is its PID namespace and `host` its host name: a process in another namespace (a runner
   * container sharing /tmp) sees none of our pids, so to it every owner would look dead.
   */
  owner: { pid: number; started: string; pidns?: string; host?: string };
  /** cluster: the temp directory holding the data directory; directory: the directory itself. */
  path?: string;
  /** cluster: its data directory (the postmaster's pid is read from its postmaster.pid). */
  dataDir?: string;
  /** container: its name (`lifeline-drill-...`). */
  container?: string;
  /** What it was for, e.g. "drill of production". */
  purpose: string;
  createdAt: string;
}

export interface Leftover extends LeftoverRecord {
  /** The record's own file. */
  marker: string;
  /** orphaned: its owner is gone (reapable); in-use: its owner still runs. */
  state: 'orphaned' | 'in-use';
  /** cluster: the postmaster's pid when it still runs. */
  pid?: number;
}

export interface ReapOutcome {
  removed: string[];
  /** Leftovers that could not be removed, with the command that removes them by hand. */
  failed: string[];
  /** Leftovers of drills still running (another drill at the same time): left alone. */
  inUse: string[];
}

/** The record directory: private to this user, in the OS temp dir where the clusters live too. */
export function leftoverDir(): string {
  return join(tmpdir(), `lifeline-running-${process.getuid?.() ?? 'user'}`);
}

/** This process's identity: pid plus its start time, so a reused pid is not mistaken for the owner. */
export function selfOwner(): LeftoverRecord['owner'] {
  const pidns = currentPidNamespace();
  return { pid: process.pid, started: processStartTime(process.pid) ?? 'unknown', ...(pidns ? { pidns } : {}), host: hostname() };
}

/** `pid:[4026531836]`: the PID namespace this process sees pids in (undefined without /proc). */
function currentPidNamespace(): string | undefined {
  try {
    return readlinkSync('/proc/self/ns/pid');
  } catch {
    return undefined;
  }
}

function processStartTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Field 22 (starttime); fields after the command name, which may hold spaces, start at field 3.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

/**
 * Whether the record's owner may still run. An owner recorded in another PID namespace or on
 * another host cannot be judged from here (its pid means nothing to us): it counts as running, so
 * its cluster is never deleted by a process that merely cannot see it.
 */
export function ownerAlive(owner: LeftoverRecord['owner']): boolean {
  if (owner.host !== undefined && owner.host !== hostname()) return true;
  if (owner.pidns !== undefined && owner.pidns !== currentPidNamespace()) return true;
  try {
    process.kill(owner.pid, 0);
  } catch (error) {
    // EPERM: alive, but another user's (not ours to judge).
    if ((error as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  const started = processStartTime(owner.pid);
  if (started === undefined || owner.started === 'unknown') return true;
  return started === owner.started;
}

/** Creates (or checks) the record directory: a real directory, ours, closed to everyone else. */
function privateDir(): string {
  const dir = leftoverDir();
  mkdirSync(dir, { mode: 0o700, recursive: true });
  const stat = lstatSync(dir);
  const uid = process.getuid?.();
  if (!stat.isDirectory() || (uid !== undefined && stat.uid !== uid) || (stat.mode & 0o077) !== 0) {
    throw failure('LEFTOVER_DIR_UNSAFE', `${dir} is not a private directory of this user (a symlink, another owner, or open to others); drill clean-up records cannot be kept there`, {
      fix: `remove ${dir} (it holds only clean-up records), then run the drill again`,
    });
  }
  return dir;
}

/**
 * Records a resource before it is created; call the returned function once it is gone. A drill
 * killed in between leaves the record, and the next drill removes the resource.
 */
export function recordLeftover(record: Omit<LeftoverRecord, 'owner' | 'createdAt'>): () => void {
  const dir = privateDir();
  const marker = join(dir, `${record.kind}-${process.pid}-${randomBytes(6).toString('hex')}.json`);
  const full: LeftoverRecord = { ...record, owner: selfOwner(), createdAt: new Date().toISOString() };
  const fd = openSync(marker, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
  try {
    writeSync(fd, `${JSON.stringify(full)}\n`);
  } finally {
    closeSync(fd);
  }
  return () => {
    try {
      unlinkSync(marker);
    } catch {
      // already removed (by a reaper that found the owner gone, or twice)
    }
  };
}

/** Every record on this host, with whether its owner still runs. Unreadable or foreign files are skipped. */
export function findLeftovers(): Leftover[] {
  const dir = leftoverDir();
  let names: string[];
  try {
    names = readdirSync(dir).filter((n) => n.endsWith('.json'));
  } catch {
    return [];
  }
  const uid = process.getuid?.();
  const found: Leftover[] = [];
  for (const name of names) {
    const marker = join(dir, name);
    let record: LeftoverRecord;
    try {
      const fd = openSync(marker, constants.O_RDONLY | constants.O_NOFOLLOW);
      try {
        const stat = fstatSync(fd);
        if (!stat.isFile() || (uid !== undefined && stat.uid !== uid) || stat.size > 64 * 1024) continue;
        record = JSON.parse(readFileSync(fd, 'utf8')) as LeftoverRecord;
      } finally {
        closeSync(fd);
      }
    } catch {
      continue;
    }
    if (!validRecord(record)) continue;
    const leftover: Leftover = { ...record, marker, state: ownerAlive(record.owner) ? 'in-use' : 'orphaned' };
    if (record.kind === 'cluster') leftover.pid = postmasterPid(record.dataDir!);
    found.push(leftover);
  }
  return found.sort((a, b) => a.createdAt.localeCompare(b.createdAt));
}

/** Paths must be absolute, normal, ours by name (lifeline-*) and no symlink: a record is never a way to delete elsewhere. */
function safePath(path: unknown): path is string {
  if (typeof path !== 'string' || !isAbsolute(path) || normalize(path) !== path || path === '/') return false;
  if (!basename(path).startsWith('lifeline-')) return false;
  try {
    return realpathSync(path) === path;
  } catch {
    return true; // gone already: nothing to delete, the record just goes
  }
}

function validRecord(record: LeftoverRecord): boolean {
  if (!record || typeof record !== 'object' || typeof record.owner?.pid !== 'number' || typeof record.createdAt !== 'string') return false;
  // The data directory is only read (postmaster.pid) and matched against the server's command line; `path` is what gets deleted.
  if (record.kind === 'cluster') return safePath(record.path) && typeof record.dataDir === 'string' && isAbsolute(record.dataDir) && normalize(record.dataDir) === record.dataDir;
  if (record.kind === 'directory') return safePath(record.path);
  if (record.kind === 'container') return typeof record.container === 'string' && /^lifeline-drill-[a-z0-9-]{6,64}$/.test(record.container);
  return false;
}

/** The running postmaster of a data directory: its postmaster.pid names it and its command line names the directory. */
function postmasterPid(dataDir: string): number | undefined {
  let pid: number;
  try {
    pid = Number(readFileSync(join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
  } catch {
    return undefined;
  }
  if (!Number.isInteger(pid) || pid <= 1) return undefined;
  try {
    const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    return argv.includes(dataDir) && /postgres$/.test(argv[0] ?? '') ? pid : undefined;
  } catch {
    return undefined;
  }
}

/** One line per leftover, for the drill's log and `lifeline doctor`. */
export function describeLeftover(leftover: Leftover): string {
  const owner = `started by pid ${leftover.owner.pid} at ${leftover.createdAt}${leftover.state === 'in-use' ? ', which still runs' : ', which is gone'}`;
  if (leftover.kind === 'cluster') return `${leftover.purpose}: PostgreSQL ${leftover.pid ? `server pid ${leftover.pid}` : '(not running)'} on ${leftover.dataDir} (${owner})`;
  if (leftover.kind === 'directory') return `${leftover.purpose}: directory ${leftover.path} (${owner})`;
  return `${leftover.purpose}: container ${leftover.container} (${owner})`;
}

/** The shell command that removes a leftover by hand (what the next drill would do). */
export function leftoverRemoveCommand(leftover: Leftover): string {
  const q = (text: string) => `'${text.replace(/'/g, `'\\''`)}'`;
  if (leftover.kind === 'container') return `docker rm -f ${leftover.container} && rm -f -- ${q(leftover.marker)}`;
  const rm = `rm -rf -- ${q(leftover.path!)} && rm -f -- ${q(leftover.marker)}`;
  return leftover.kind === 'cluster' && leftover.pid ? `kill -QUIT ${leftover.pid} && ${rm}` : rm;
}

/**
 * Removes what dead drills left: stops their servers by pid (checked against the data directory),
 * deletes their directories, removes their containers by name. Leftovers of a drill that still
 * runs are left alone. Never throws: what cannot be removed is returned with the command to do it.
 */
export async function reapLeftovers(options: { docker?: Runner } = {}): Promise<ReapOutcome> {
  const outcome: ReapOutcome = { removed: [], failed: [], inUse: [] };
  const leftovers = findLeftovers();
  const order: LeftoverKind[] = ['container', 'cluster', 'directory'];
  for (const kind of order) {
    for (const leftover of leftovers.filter((l) => l.kind === kind)) {
      const what = describeLeftover(leftover);
      if (leftover.state === 'in-use') {
        outcome.inUse.push(what);
        continue;
      }
      try {
        await reapOne(leftover, options);
        unlinkSync(leftover.marker);
        outcome.removed.push(what);
      } catch (error) {
        outcome.failed.push(`${what}: ${(error as Error).message}`);
      }
    }
  }
  return outcome;
}

async function reapOne(leftover: Leftover, options: { docker?: Runner }): Promise<void> {
  const remove = (dir: string) => rmSync(dir, { recursive: true, force: true });
  if (leftover.kind === 'cluster') {
    // Immediate shutdown: the data is deleted next.
    if (leftover.pid) await stopPid(leftover.pid, 'SIGQUIT', 30000);
    if (postmasterPid(leftover.dataDir!)) throw failure('LEFTOVER_NOT_REMOVED', `the server still runs; stop it with kill -QUIT ${leftover.pid}`);
    remove(leftover.path!);
    return;
  }
  if (leftover.kind === 'directory') {
    remove(leftover.path!);
    return;
  }
  const docker = options.docker ?? new LocalRunner();
  const result = await runText(docker, { tool: 'docker', args: ['rm', '-f', leftover.container!] }).catch((error: Error) => ({ exitCode: 1, signal: null, stderr: error.message, stdout: '' }));
  if (result.exitCode !== 0 && !/No such container/i.test(result.stderr)) {
    throw failure('LEFTOVER_NOT_REMOVED', `docker rm -f ${leftover.container} ${describeExit(result)}: ${lastLines(result.stderr, 2)}; remove it with docker rm -f ${leftover.container}`);
  }
}
