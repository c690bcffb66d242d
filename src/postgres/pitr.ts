import { chownSync, existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { failure } from '../errors';
import type { Logger } from '../logger';
import { waitFor } from '../runner/ports';
import type { PgConnection } from '../runner/postgres-env';
import { PsqlSession } from '../runner/psql';
import { recordLeftover } from '../runner/leftovers';
import { lastLines, LocalRunner } from '../runner/runner';
import type { EnvironmentSettings } from '../settings/resolve';
import { removeInBackground, startThrowawayCluster, sweepAbandonedTrash, type ThrowawayCluster } from './cluster';
import { parseRecoveryTargetTime, requirePhysical, restorePhysicalToTime, stanzaInfo, type PhysicalBackupInfo, type StanzaInfo } from './pgbackrest';

export interface PointInTimeCluster {
  /** Connection over the cluster's private Unix socket, as the bootstrap superuser (trust, socket only). */
  conn: PgConnection;
  cluster: ThrowawayCluster;
  /** The base backup pgBackRest started from (the newest one that stopped before the target). */
  baseBackup: PhysicalBackupInfo;
  /** Commit time of the last transaction replayed, as the server reports it. */
  lastReplayedCommit: string | null;
  restoreSeconds: number;
  recoverySeconds: number;
  stop(): Promise<void>;
}

export interface PointInTimeOptions {
  /** The bootstrap superuser of the backed-up cluster (default postgres). */
  superuser?: string;
  database?: string;
  binDir?: string;
  /** The stanza as the caller already read it (saves a second `pgbackrest info`). */
  info?: StanzaInfo;
}

function chownToPostgres(path: string): void {
  if (process.getuid?.() !== 0) return;
  const line = readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .find((l) => l.startsWith('postgres:'));
  if (!line) throw failure('NO_POSTGRES_USER', 'there is no "postgres" OS user to own the restored data directory', { fix: 'install the postgresql package' });
  const [, , uid, gid] = line.split(':');
  chownSync(path, Number(uid), Number(gid));
}

/**
 * Restores the environment's pgBackRest stanza to `targetTime` into a temp data directory, starts
 * PostgreSQL there on a private socket, and waits until recovery has reached the target and the
 * server promoted. The caller runs its checks and then calls `stop()`, which removes everything.
 */
export async function restorePointInTime(settings: EnvironmentSettings, targetTime: string, logger: Logger, options: PointInTimeOptions = {}): Promise<PointInTimeCluster> {
  const physical = requirePhysical(settings);
  const target = parseRecoveryTargetTime(targetTime);
  const info = options.info ?? (await stanzaInfo(physical));
  const candidates = info.backups.filter((b) => new Date(b.stoppedAt) <= target.at);
  if (candidates.length === 0) {
    throw failure('PITR_NO_BASE_BACKUP', `stanza ${physical.stanza} has no backup that finished before ${target.text}`, {
      fix: info.backups.length ? `choose a time after ${info.backups[0]!.stoppedAt}` : `take a physical backup first: lifeline backup --physical --env ${settings.name}`,
    });
  }
  const baseBackup = candidates[candidates.length - 1]!;
  sweepAbandonedTrash(tmpdir());
  const base = mkdtempSync(join(tmpdir(), 'lifeline-pitr-'));
  // The restored copy of production: recorded so that a drill killed mid-way leaves it to the next drill to delete.
  const forget = recordLeftover({ kind: 'directory', path: base, purpose: `point-in-time copy of stanza ${physical.stanza}` });
  let cluster: ThrowawayCluster | undefined;
  const cleanup = async () => {
    await cluster?.stop();
    removeInBackground(base);
    forget();
  };
  try {
    chownToPostgres(base);
    const dataDir = join(base, 'data');
    mkdirSync(dataDir, { mode: 0o700 });
    chownToPostgres(dataDir);
    const restoreStarted = Date.now();
    await logger.group(`pgbackrest restore --type=time --target=${target.text}`, () => restorePhysicalToTime(physical, dataDir, target.text, baseBackup.label));
    const restoreSeconds = (Date.now() - restoreStarted) / 1000;

    // Our own pg_hba: socket only, trust. The socket directory is private to the postgres user.
    const hbaFile = join(base, 'pg_hba.conf');
    writeFileSync(hbaFile, 'local all all trust\n', { mode: 0o600 });
    chownToPostgres(hbaFile);
    // Debian keeps postgresql.conf outside the data directory, so a restored one may have none.
    const conf = join(dataDir, 'postgresql.conf');
    if (!existsSync(conf)) {
      writeFileSync(conf, '', { mode: 0o600 });
      chownToPostgres(conf);
    }
    const recoveryStarted = Date.now();
    cluster = await logger.group('start PostgreSQL and replay WAL to the target', () =>
      startThrowawayCluster({
        binDir: options.binDir ?? settings.postgres.binDir,
        existingDataDir: dataDir,
        parentDir: base,
        fast: true,
        purpose: `point-in-time server on a copy of stanza ${physical.stanza}`,
        settings: {
          // The drill's copy must never archive into the production stanza (it would fork its timeline).
          archive_mode: 'off',
          archive_command: "''",
          // Without hot standby, start-up returns only once recovery has finished and the server promoted,
          // and a primary with more max_connections than ours cannot pause recovery.
          hot_standby: 'off',
          hba_file: `'${hbaFile}'`,
          listen_addresses: "''",
        },
      }),
    );
    const conn: PgConnection = {
      host: cluster.socketDir,
      port: cluster.port,
      user: options.superuser ?? 'postgres',
      database: options.database ?? settings.postgres.database ?? 'postgres',
      params: {},
    };
    const runner = new LocalRunner({ binDirs: [cluster.binDir] });
    let lastReplayedCommit: string | null = null;
    const started = cluster;
    let died = false;
    await waitFor(
      async () => {
        // Recovery that cannot reach its target (e.g. no WAL past it) stops the server: fail now, with its log.
        if (!existsSync(join(started.dataDir, 'postmaster.pid'))) {
          died = true;
          return true;
        }
        const session = PsqlSession.open(runner, conn, { database: 'postgres' });
        try {
          const row = (await session.query<{ recovering: boolean; replayed: string | null }>('SELECT pg_is_in_recovery() AS recovering, pg_last_xact_replay_timestamp()::text AS replayed'))[0];
          lastReplayedCommit = row?.replayed ?? null;
          return row?.recovering === false;
        } finally {
          await session.close();
        }
      },
      { timeoutMs: 10 * 60 * 1000, intervalMs: 200, what: 'recovery to finish' },
    );
    if (died) {
      const log = readLog(started.logFile);
      throw failure('PITR_RECOVERY_FAILED', `PostgreSQL stopped during recovery to ${target.text}: ${serverFatal(log) ?? lastLines(log, 3)}`, {
        fix: /recovery target was reached/.test(log)
          ? 'no WAL was archived past the target time yet: choose an earlier time, or wait until pgbackrest has archived WAL written after it (pgbackrest check forces a segment switch)'
          : 'read the server log lines above',
      });
    }
    const recoverySeconds = (Date.now() - recoveryStarted) / 1000;
    logger.info(`recovered to ${target.text} from base backup ${baseBackup.label}; last replayed commit ${lastReplayedCommit ?? 'none'}`);
    return { conn, cluster, baseBackup, lastReplayedCommit, restoreSeconds, recoverySeconds, stop: cleanup };
  } catch (error) {
    await cleanup();
    throw error;
  }
}

function readLog(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
}

/** The server's own fatal error, not the refusals our connection attempts got while it recovered. */
function serverFatal(log: string): string | undefined {
  // Refusals of our own connection attempts, whatever state the server was in, are not its error.
  const fatals = log.split('\n').filter((line) => /FATAL:/.test(line) && !/not accepting connections|is starting up|is shutting down|is in recovery mode/.test(line));
  return fatals.pop()?.replace(/^.*?FATAL:\s*/, 'FATAL: ');
}
