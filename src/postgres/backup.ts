import { newEntryId, type Catalog, type StagedEntry } from '../catalog/store';
import { withLock } from '../catalog/lock';
import { failure, refusal } from '../errors';
import type { Logger } from '../logger';
import { PsqlSession } from '../runner/psql';
import { pgEnv, type PgConnection } from '../runner/postgres-env';
import { describeExit, lastLines, runText, type Runner } from '../runner/runner';
import { redisKeyspace, snapshotRedis, type RedisTarget } from '../redis/snapshot';
import { checkConnection } from './connection';
import { exactRowCounts, migrationHead, schemaFingerprint, serverVersion, toolVersion } from './inspect';
import { BACKUP_METADATA_FILE, GLOBALS_FILE, POSTGRES_ARCHIVE_FILE, type BackupEntry, type BackupFile, type BackupLabel, type BackupMetadata, type RedisBackupFile } from './metadata';
import { progressReporter, type ProgressSink } from './progress';

export interface BackupOptions {
  catalog: Catalog;
  environment: string;
  /** Runs pg_dump / pg_dumpall / psql (locally or in a Compose service). */
  runner: Runner;
  conn: PgConnection;
  label: BackupLabel;
  release?: string;
  gitSha?: string;
  /** gzip level for the custom format, 0-9 (default 6, pg_dump's own default). */
  compressLevel?: number;
  migrationHeadQuery?: string;
  redis?: { runner: Runner; checkRunner: Runner; target: RedisTarget };
  logger: Logger;
  progress?: ProgressSink;
  /** The caller already holds the environment lock (a pre-restore backup inside a restore). */
  lockHeld?: boolean;
  /** Seconds to wait for another holder of the environment lock. */
  lockWaitSeconds?: number;
  now?: () => Date;
}

/**
 * Dumps the database (custom format) straight into a staged catalog entry, hashing in the same
 * pass, with exact row counts taken in the dump's own snapshot. The entry is committed only when
 * every part succeeded; on any failure it is removed and nothing lists.
 */
export async function createBackup(options: BackupOptions): Promise<BackupEntry> {
  const run = () => createBackupLocked(options);
  if (options.lockHeld) return run();
  return withLock(options.catalog.envDir(options.environment), options.environment, { command: `backup --label ${options.label}`, waitSeconds: options.lockWaitSeconds ?? 30 }, run);
}

async function createBackupLocked(options: BackupOptions): Promise<BackupEntry> {
  const { catalog, environment, runner, conn, logger } = options;
  const now = options.now ?? (() => new Date());
  const started = now();
  const id = newEntryId(started);
  const compressLevel = options.compressLevel ?? 6;

  const session = PsqlSession.open(runner, conn);
  let staged: StagedEntry | undefined;
  try {
    await checkConnection(session, conn);
    const server = await serverVersion(session);
    const dumpVersion = await toolVersion(runner, 'pg_dump');
    if (server.major > dumpVersion.major) {
      throw refusal('PG_DUMP_TOO_OLD', `the server runs PostgreSQL ${server.major} but pg_dump is version ${dumpVersion.major} (${runner.where}); pg_dump cannot dump a newer server`, `install the PostgreSQL ${server.major} client tools (Debian: apt-get install postgresql-client-${server.major}) or set postgres.binDir to their directory`);
    }

    // A wrong Redis URL or password should fail before a long dump, not after it.
    if (options.redis) await redisKeyspace(options.redis.runner, options.redis.target);

    // The snapshot lives as long as this transaction: counts here and pg_dump see the same data.
    await session.exec('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    const snapshot = await session.queryValue<string>('SELECT pg_export_snapshot()');
    if (!snapshot) throw failure('SNAPSHOT_FAILED', 'the server did not export a snapshot');
    const rowCounts = await exactRowCounts(session);
    const fingerprint = await schemaFingerprint(session);
    const head = await migrationHead(session, options.migrationHeadQuery);

    staged = await catalog.begin(environment, 'backups', id, BACKUP_METADATA_FILE);
    logger.info(`backup ${id}: dumping ${conn.database} (${Object.keys(rowCounts).length} tables) with ${runner.where}`);
    const dump = runner.start({
      tool: 'pg_dump',
      args: ['--format=custom', `--compress=${compressLevel}`, `--snapshot=${snapshot}`, '--no-sync'],
      env: pgEnv(conn),
    });
    let archive: BackupFile;
    try {
      const written = await staged.addStream(POSTGRES_ARCHIVE_FILE, dump.stdout, progressReporter(logger, 'pg_dump', options.progress));
      archive = { name: POSTGRES_ARCHIVE_FILE, ...written };
    } catch (error) {
      // Writing failed (disk full, ...): stop pg_dump rather than leave it blocked on a full pipe.
      dump.kill('SIGTERM');
      await dump.done.catch(() => {});
      throw failure('BACKUP_WRITE_FAILED', `writing the archive into ${catalog.root} failed: ${(error as Error).message}`, { fix: 'free space in the backup store (or prune old backups) and retry', cause: error });
    }
    const dumped = await dump.done;
    if (dumped.exitCode !== 0) {
      throw failure('PG_DUMP_FAILED', `pg_dump failed (${describeExit(dumped)}): ${lastLines(dumped.stderr)}`, { fix: 'read the pg_dump error above; nothing was added to the catalog' });
    }
    await session.exec('COMMIT');

    const globals = await dumpGlobals(staged, options);
    let redis: RedisBackupFile | undefined;
    if (options.redis) {
      const snap = await snapshotRedis(staged, { ...options.redis, logger });
      redis = { name: snap.name, bytes: snap.bytes, sha256: snap.sha256, keys: snap.keys };
    }

    const finished = now();
    const metadata: BackupMetadata = {
      schemaVersion: 1,
      id,
      environment,
      label: options.label,
      ...(options.release ? { release: options.release } : {}),
      ...(options.gitSha ? { gitSha: options.gitSha } : {}),
      createdAt: started.toISOString(),
      startedAt: started.toISOString(),
      finishedAt: finished.toISOString(),
      durationSeconds: (finished.getTime() - started.getTime()) / 1000,
      database: conn.database,
      serverVersion: server.version,
      pgDumpVersion: dumpVersion.version,
      format: 'custom',
      compressLevel,
      files: { postgres: archive, ...(globals ? { globals } : {}), ...(redis ? { redis } : {}) },
      migrationHead: head,
      schemaFingerprint: fingerprint,
      rowCounts,
    };
    await staged.commit(metadata);
    logger.info(`backup ${id}: ${archive.bytes} bytes, sha256 ${archive.sha256}`);
    return { id, dir: staged.finalDir, metadata };
  } catch (error) {
    await staged?.abort();
    throw error;
  } finally {
    await session.close();
  }
}

/**
 * Roles, tablespaces and their settings, without passwords (small text, so read whole). A
 * managed server may deny reading them; the database dump is still complete, so that is a
 * warning, not a failed backup.
 */
async function dumpGlobals(staged: StagedEntry, options: BackupOptions): Promise<BackupFile | undefined> {
  const result = await runText(options.runner, { tool: 'pg_dumpall', args: ['--globals-only', '--no-role-passwords', '-l', options.conn.database], env: pgEnv(options.conn) });
  if (result.exitCode !== 0) {
    options.logger.warn(`roles and globals were not saved (pg_dumpall ${describeExit(result)}: ${lastLines(result.stderr, 2)}); the database archive is unaffected`);
    return undefined;
  }
  return { name: GLOBALS_FILE, ...(await staged.addText(GLOBALS_FILE, result.stdout)) };
}
