import { newEntryId, type Catalog, type StagedEntry } from '../catalog/store';
import { withLock } from '../catalog/lock';
import { failure, refusal } from '../errors';
import type { Logger } from '../logger';
import { PsqlSession } from '../runner/psql';
import { pgEnv, type PgConnection } from '../runner/postgres-env';
import { describeExit, lastLines, runText, type Runner } from '../runner/runner';
import { redisKeyspace, snapshotRedis, type RedisTarget } from '../redis/snapshot';
import { checkConnection } from '../postgres/connection';
import { databaseLevelState, exactRowCounts, migrationHead, schemaFingerprint, serverVersion, toolVersion } from '../postgres/inspect';
import { DEFAULT_LOCK_TIMEOUT_SECONDS, explainLockTimeout, withLockTimeout } from '../postgres/lock-wait';
import { lifelineCompresses } from './archive-compress';
import { defaultCompression, formatCompression, fromGzipLevel, pgDumpCompressArg, type Compression } from '../settings/compression';
import {
  BACKUP_METADATA_FILE,
  GLOBALS_FILE,
  REDIS_SNAPSHOT_FILE,
  type BackupEntry,
  type BackupFile,
  type BackupLabel,
  type BackupMetadata,
  type RedisBackupFile,
  type VerificationCheck,
} from './metadata';
import type { ProgressSink } from '../postgres/progress';
import { startVerifiedDump } from './verified-dump';

export interface BackupOptions {
  catalog: Catalog;
  environment: string;
  /** Runs pg_dump / pg_dumpall / psql (locally or in a Compose service). */
  runner: Runner;
  conn: PgConnection;
  label: BackupLabel;
  release?: string;
  gitSha?: string;
  /** How pg_dump compresses the archive; default: `defaultCompression` for the pg_dump in use. */
  compression?: Compression;
  /** Legacy: a gzip level, 0-9 (0 = none); `compression` wins. */
  compressLevel?: number;
  /**
   * Feed the archive to pg_restore as it is written and list the finished file; a failure fails
   * the backup (nothing lists) and the checks are recorded as the backup's verification.
   */
  verify?: boolean;
  migrationHeadQuery?: string;
  redis?: { runner: Runner; checkRunner: Runner; target: RedisTarget };
  logger: Logger;
  progress?: ProgressSink;
  /** The caller already holds the environment lock (a pre-restore backup inside a restore). */
  lockHeld?: boolean;
  /** age recipients (`encryption.recipients`): every payload is stored encrypted to them. */
  encryptTo?: readonly string[];
  /** Seconds to wait for another holder of the environment lock. */
  lockWaitSeconds?: number;
  /** Seconds to wait for a table lock (a migration's) before failing with who holds it; default 60. */
  lockTimeoutSeconds?: number;
  now?: () => Date;
}

/**
 * Dumps the database (custom format) straight into a staged catalog entry, hashing (and with
 * `verify`, reading back every block) in the same pass, with exact row counts taken in the dump's
 * own snapshot while it runs. The entry is committed only when
 * every part succeeded; on any failure it is removed and nothing lists.
 */
export async function createBackup(options: BackupOptions): Promise<BackupEntry> {
  const run = () => createBackupLocked(options);
  if (options.lockHeld) return run();
  return withLock(options.catalog.envDir(options.environment), options.environment, { command: `backup --label ${options.label}`, waitSeconds: options.lockWaitSeconds ?? 30 }, run);
}

async function createBackupLocked(options: BackupOptions): Promise<BackupEntry> {
  const { catalog, environment, runner, logger } = options;
  const lockTimeout = options.lockTimeoutSeconds ?? DEFAULT_LOCK_TIMEOUT_SECONDS;
  const conn = withLockTimeout(options.conn, lockTimeout);
  const now = options.now ?? (() => new Date());
  const started = now();
  const id = newEntryId(started);

  const session = PsqlSession.open(runner, conn);
  let staged: StagedEntry | undefined;
  try {
    // pg_dump --version runs while the session connects (two processes, no order between them);
    // a connection failure is still the one reported first.
    const dumpVersionRead = toolVersion(runner, 'pg_dump');
    dumpVersionRead.catch(() => {});
    await checkConnection(session, conn);
    const server = await serverVersion(session);
    const dumpVersion = await dumpVersionRead;
    const compression = options.compression ?? (options.compressLevel !== undefined ? fromGzipLevel(options.compressLevel) : defaultCompression(dumpVersion.major));
    // A method this pg_dump cannot write is a usage error (exit 2) before anything runs.
    const compressArg = pgDumpCompressArg(compression, dumpVersion.major);
    // gzip with a pg_dump whose archive version Lifeline knows: pg_dump writes it uncompressed and
    // Lifeline compresses it on all cores (the same archive pg_dump --compress=N writes).
    const compressedHere = lifelineCompresses(compression, dumpVersion.major) ? compression.level : undefined;
    if (server.major > dumpVersion.major) {
      throw refusal(
        'PG_DUMP_TOO_OLD',
        `the server runs PostgreSQL ${server.major} but pg_dump is version ${dumpVersion.major} (${runner.where}); pg_dump cannot dump a newer server`,
        `install the PostgreSQL ${server.major} client tools (Debian: apt-get install postgresql-client-${server.major}) or set postgres.binDir to their directory`,
      );
    }

    // A wrong Redis URL or password should fail before a long dump, not after it.
    if (options.redis) await redisKeyspace(options.redis.runner, options.redis.target);

    // The snapshot lives as long as this transaction: counts here and pg_dump see the same data.
    await session.exec('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    // The counts below run beside the dump, off its critical path: parallel workers for them would
    // only take cores from pg_dump, its backend and the in-stream reader.
    await session.exec('SET LOCAL max_parallel_workers_per_gather = 0');
    const snapshot = await session.queryValue<string>('SELECT pg_export_snapshot()');
    if (!snapshot) throw failure('SNAPSHOT_FAILED', 'the server did not export a snapshot');
    // Everything read from the database itself runs in the exported snapshot while pg_dump streams
    // (the same data, and no wait before the dump starts); it takes a fraction of the dump's time.
    const inspection = (async () => ({
      rowCounts: await exactRowCounts(session),
      fingerprint: await schemaFingerprint(session),
      head: await migrationHead(session, options.migrationHeadQuery),
      // Database-level state (privileges, settings, connection limit, comment) is not in the dump's contents.
      databaseState: await databaseLevelState(session, conn.database),
      systemIdentifier: await session.queryValue<string | null>(
        `SELECT CASE WHEN has_function_privilege('pg_control_system()', 'execute') THEN (SELECT system_identifier::text FROM pg_control_system()) END`,
      ),
    }))();
    inspection.catch(() => {});

    // With recipients, every payload is stored as an age file, encrypted as it streams.
    staged = await catalog.begin(environment, 'backups', id, BACKUP_METADATA_FILE, { encryptTo: options.encryptTo });
    logger.info(
      `backup ${id}: dumping ${conn.database} (${formatCompression(compression)}${compressedHere === undefined ? '' : ' on all cores'}${options.verify ? ', read back by pg_restore as it is written' : ''}${staged.encryptTo ? `, encrypted with age to ${staged.encryptTo.length} recipient${staged.encryptTo.length === 1 ? '' : 's'}` : ''}) with ${runner.where}`,
    );
    const dump = startVerifiedDump({
      runner,
      conn,
      pgDumpArgs: ['--format=custom', compressedHere === undefined ? compressArg : '--compress=0', `--snapshot=${snapshot}`, '--no-sync', `--lock-wait-timeout=${Math.round(lockTimeout * 1000)}`],
      staged,
      verify: options.verify ?? false,
      compressLevel: compressedHere,
      logger,
      progress: options.progress,
    });
    // Roles and tablespaces are cluster-wide, outside any snapshot: saved while pg_dump runs
    // (started after it, so pg_dump does not wait for one more process to start).
    const globalsSaved = dumpGlobals(staged, options);
    globalsSaved.catch(() => {});
    // A failed count or migration head query fails the backup now, not after a long dump.
    inspection.catch((error: Error) => dump.abort(error));
    const { archive, checks } = await dump.done;
    const { rowCounts, fingerprint, head, databaseState, systemIdentifier } = await inspection;
    await session.exec('COMMIT');

    const globals = await globalsSaved;
    let redis: RedisBackupFile | undefined;
    let redisCheck: VerificationCheck | undefined;
    if (options.redis) {
      const snap = await snapshotRedis(staged, { ...options.redis, logger, fileName: REDIS_SNAPSHOT_FILE });
      redis = { name: snap.name, bytes: snap.bytes, sha256: snap.sha256, keys: snap.keys, ...(snap.encryption ? { encryption: snap.encryption } : {}) };
      // snapshotRedis fails the backup when redis-check-rdb does not pass.
      redisCheck = { name: `${snap.name} (redis-check-rdb)`, ok: snap.check.ok, detail: snap.check.detail };
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
      ...(systemIdentifier ? { systemIdentifier } : {}),
      ...(databaseState ? { databaseState } : {}),
      serverVersion: server.version,
      pgDumpVersion: dumpVersion.version,
      format: 'custom',
      compression,
      ...(compression.method === 'gzip' || compression.method === 'none' ? { compressLevel: compression.level ?? 0 } : {}),
      files: { postgres: archive, ...(globals ? { globals } : {}), ...(redis ? { redis } : {}) },
      migrationHead: head,
      schemaFingerprint: fingerprint,
      rowCounts,
      ...(options.verify ? { verified: { at: finished.toISOString(), ok: true, checks: [...checks, ...(redisCheck ? [redisCheck] : [])] } } : {}),
    };
    await staged.commit(metadata);
    logger.info(`backup ${id}: ${archive.bytes} bytes, sha256 ${archive.sha256}`);
    return { id, dir: staged.finalDir, metadata };
  } catch (error) {
    await staged?.abort();
    throw await explainLockTimeout(error, runner, conn, `backup of ${conn.database}`, lockTimeout);
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
  return staged.addText(GLOBALS_FILE, result.stdout);
}
