import { randomBytes } from 'node:crypto';
import { chownSync, mkdtempSync, writeFileSync, readFileSync, rmSync, mkdirSync, readdirSync, renameSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { failure } from '../errors';
import { recordLeftover } from '../runner/leftovers';
import { freePort, stopPid } from '../runner/ports';
import { LocalRunner, runText, lastLines, type Runner } from '../runner/runner';
import { formatPgUrl, type PgConnection } from '../runner/postgres-env';
import { findServerBinDir } from '../runner/postgres-binaries';
import { startDetached } from '../runner/detached';

export interface ThrowawayCluster {
  dataDir: string;
  port: number;
  binDir: string;
  conn: PgConnection;
  url: string;
  /** The private Unix socket directory (for clusters restored from a backup, whose passwords we do not know). */
  socketDir: string;
  /** The server's log file (inside the temp directory, removed by stop()). */
  logFile: string;
  /** Runs server-side tools (pg_ctl, pg_controldata) as the cluster's OS user. */
  serverRunner: Runner;
  stop(): Promise<void>;
}

export interface ClusterOptions {
  binDir?: string;
  /** Extra `postgresql.conf` lines (e.g. archive_command for pgBackRest). */
  settings?: Record<string, string>;
  /** Use an existing data directory (e.g. one pgBackRest restored) instead of initdb. */
  existingDataDir?: string;
  /** Parent directory for the temp dir; default the OS temp dir. */
  parentDir?: string;
  /** Faster, non-durable settings: for throwaway drill and test clusters only. */
  fast?: boolean;
  /** What the cluster is for, named when a later drill or `lifeline doctor` finds it left running. */
  purpose?: string;
}

const OS_USER = 'postgres';

function clusterUser(): string | undefined {
  return process.getuid?.() === 0 ? OS_USER : undefined;
}

function giveToClusterUser(path: string): void {
  if (process.getuid?.() !== 0) return;
  const { uid, gid } = lookupUser(OS_USER);
  chownSync(path, uid, gid);
}

function lookupUser(name: string): { uid: number; gid: number } {
  const passwd = readFileSync('/etc/passwd', 'utf8');
  for (const line of passwd.split('\n')) {
    const parts = line.split(':');
    if (parts[0] === name) return { uid: Number(parts[2]), gid: Number(parts[3]) };
  }
  throw failure('NO_POSTGRES_USER', `there is no "${name}" OS user to run a throwaway PostgreSQL cluster as root`, {
    fix: 'install the postgresql package (it creates the user), or run Lifeline as a non-root user',
  });
}

/**
 * Starts a private PostgreSQL cluster on 127.0.0.1 in a temp directory, from the local server
 * binaries. Used for isolated restore drills, tests and the demo; `stop()` stops it by pid and
 * removes the directory.
 */
export async function startThrowawayCluster(options: ClusterOptions = {}): Promise<ThrowawayCluster> {
  const binDir = findServerBinDir(options.binDir);
  if (!binDir) {
    throw failure('NO_POSTGRES_SERVER', 'no PostgreSQL server binaries (initdb, pg_ctl) were found', {
      fix: 'install them (Debian: apt-get install postgresql) or set postgres.binDir in lifeline.yml',
    });
  }
  if (!options.parentDir) sweepAbandonedTrash(tmpdir());
  const base = mkdtempSync(join(options.parentDir ?? tmpdir(), 'lifeline-pg-'));
  giveToClusterUser(base);
  const dataDir = options.existingDataDir ?? join(base, 'data');
  const socketDir = join(base, 'sock');
  mkdirSync(socketDir);
  giveToClusterUser(socketDir);
  const runner = new LocalRunner({ binDirs: [binDir], asUser: clusterUser() });
  const password = randomBytes(18).toString('base64url');
  const port = await freePort();

  const logFile = join(base, 'server.log');
  let started = false;
  // Recorded before the server exists: if this process is killed, the next drill stops and removes it.
  const forget = recordLeftover({ kind: 'cluster', path: base, dataDir, purpose: options.purpose ?? 'throwaway PostgreSQL cluster' });
  const cleanup = async () => {
    if (started) await stopPostmaster(dataDir);
    removeInBackground(base);
    forget();
  };
  try {
    if (!options.existingDataDir) {
      const pwfile = join(base, 'pw');
      writeFileSync(pwfile, `${password}\n`, { mode: 0o600 });
      giveToClusterUser(pwfile);
      const init = await runText(runner, {
        tool: 'initdb',
        args: ['-D', dataDir, '-U', 'postgres', '--auth-local=trust', '--auth-host=scram-sha-256', `--pwfile=${pwfile}`, '-E', 'UTF8', '--no-locale', '--no-sync'],
      });
      rmSync(pwfile, { force: true });
      if (init.exitCode !== 0) throw failure('INITDB_FAILED', `initdb failed: ${lastLines(init.stderr)}`);
    }
    const settings: Record<string, string> = {
      listen_addresses: "'127.0.0.1'",
      port: String(port),
      unix_socket_directories: `'${socketDir}'`,
      max_connections: '50',
      ...(options.fast ? { fsync: 'off', synchronous_commit: 'off', full_page_writes: 'off' } : {}),
      ...options.settings,
    };
    const conf = Object.entries(settings)
      .map(([k, v]) => `${k} = ${v}`)
      .join('\n');
    writeFileSync(join(dataDir, 'postgresql.auto.conf'), `${conf}\n`, { flag: 'a' });
    const start = await runText(runner, { tool: 'pg_ctl', args: ['-D', dataDir, '-l', logFile, '-w', '-t', '120', 'start'] });
    started = true;
    if (start.exitCode !== 0) {
      let log = '';
      try {
        log = readFileSync(logFile, 'utf8');
      } catch {
        // no log
      }
      throw failure('POSTGRES_START_FAILED', `the throwaway PostgreSQL cluster did not start: ${lastLines(log || start.stderr)}`);
    }
  } catch (error) {
    await cleanup();
    throw error;
  }
  const conn: PgConnection = { host: '127.0.0.1', port, user: 'postgres', password, database: 'postgres', params: {} };
  return {
    dataDir,
    port,
    binDir,
    conn,
    url: formatPgUrl(conn),
    socketDir,
    logFile,
    serverRunner: runner,
    stop: cleanup,
  };
}

/**
 * Stops a throwaway cluster by the pid in its postmaster.pid, never by name. Immediate shutdown
 * (SIGQUIT): its data directory is deleted next, so the shutdown checkpoint a fast shutdown would
 * write (seconds after a 1 GB point-in-time recovery) is wasted work.
 */
export async function stopPostmaster(dataDir: string): Promise<void> {
  let pid: number;
  try {
    pid = Number(readFileSync(join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
  } catch {
    return;
  }
  if (pid > 0) await stopPid(pid, 'SIGQUIT', 30000);
}

const TRASH_SUFFIX = '.lifeline-trash';

/**
 * Deletes a stopped throwaway cluster's directory without making the caller wait: deleting a
 * gigabyte of data files takes seconds on a disk mounted with `discard`. The directory is renamed
 * at once (its path is free immediately) and a detached `rm -rf` removes it; if that cannot start,
 * it is removed here. A removal cut short (a runner killing orphans) is finished by the next
 * throwaway cluster's start (sweepAbandonedTrash).
 */
export function removeInBackground(dir: string): void {
  const trash = `${dir}${TRASH_SUFFIX}`;
  try {
    renameSync(dir, trash);
  } catch {
    rmSync(dir, { recursive: true, force: true });
    return;
  }
  startDetached('rm', ['-rf', '--', trash], () => rmSync(trash, { recursive: true, force: true }));
}

/** Removes trash directories left by removals that were cut short (older than ten minutes). */
export function sweepAbandonedTrash(parent: string): void {
  let names: string[];
  try {
    names = readdirSync(parent).filter((n) => n.startsWith('lifeline-') && n.endsWith(TRASH_SUFFIX));
  } catch {
    return;
  }
  for (const name of names) {
    const path = join(parent, name);
    try {
      if (Date.now() - statSync(path).mtimeMs > 10 * 60 * 1000) rmSync(path, { recursive: true, force: true });
    } catch {
      // gone already, or not ours to remove
    }
  }
}
