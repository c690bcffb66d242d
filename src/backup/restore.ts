import { randomBytes } from 'node:crypto';
import type { Catalog } from '../catalog/store';
import { entryFilePath } from '../catalog/confine';
import { withLock } from '../catalog/lock';
import { failure, refusal } from '../errors';
import type { Logger } from '../logger';
import { execOnce, PsqlSession, queryOnce } from '../runner/psql';
import { pgEnv, quoteIdent, quoteLiteral, withDatabase, type PgConnection } from '../runner/postgres-env';
import { describeExit, lastLines, LocalRunner, type Runner } from '../runner/runner';
import { createBackup } from './create';
import type { Compression } from '../settings/compression';
import { checkConnection, maskedUrl } from '../postgres/connection';
import {
  analyzeUserTables,
  compareDatabaseLevelState,
  databaseLevelState,
  describeUserObjects,
  exactRowCounts,
  schemaFingerprint,
  userObjects,
  type DatabaseLevelState,
  type UserObjects,
} from '../postgres/inspect';
import { DEFAULT_LOCK_TIMEOUT_SECONDS, withLockTimeout } from '../postgres/lock-wait';
import type { BackupEntry } from './metadata';
import { archiveInput, verifyBackup } from './verify';
import { checkAllBtreeIndexes, type IndexCheckOutcome } from '../postgres/amcheck';
import { EarlyRestoreChecks, isRestoreProgressLine, restoredObjects, tocEntryCount } from '../postgres/restore-pipeline';
import type { AgeIdentity } from '../crypto/age';
import { isEncrypted, openPlaintext, requireIdentityFor } from '../crypto/payload';
import type { Progress } from '../report/progress';

export interface RestoreArchiveOptions {
  backup: BackupEntry;
  /** Runs pg_restore and psql against the target server. */
  runner: Runner;
  /** Parallel pg_restore jobs (local tools only: a Compose runner streams the archive on stdin). */
  jobs?: number;
  /** Skip ownership and privileges, for a server whose roles differ from the source's. */
  noOwner?: boolean;
  /** Stop at the first error (default true): a partial restore is never reported as a restore. */
  exitOnError?: boolean;
  /**
   * Run ANALYZE after the restore (default true), so the planner has statistics. A drill skips it:
   * its copy is thrown away, and statistics are not among its checks.
   */
  analyze?: boolean;
  /** Also run amcheck on every B-tree index (a drill's check); the outcome is in the report. */
  indexCheck?: boolean;
  /**
   * Check tables and indexes while a parallel pg_restore still runs (default true): each table is
   * counted as soon as its data is in. Off, everything is checked after pg_restore has finished.
   */
  earlyChecks?: boolean;
  /** The age identity, for a backup stored encrypted (decrypted in the stream into pg_restore). */
  identity?: AgeIdentity;
  /** Shows objects restored of the archive's table of contents (pg_restore --verbose lines); see src/report/progress.ts. */
  progress?: Progress;
  /** The phase name pg_restore's progress shows (default `restore`). */
  progressPhase?: string;
  logger: Logger;
}

export interface RowCountMismatch {
  table: string;
  expected: number | null;
  actual: number | null;
}

export interface RestoreCheckReport {
  ok: boolean;
  database: string;
  rowCounts: { ok: boolean; tables: number; rows: number; mismatches: RowCountMismatch[] };
  schemaFingerprint: { ok: boolean; expected: string; actual: string };
  analyzed: boolean;
  /** amcheck on the B-tree indexes, when asked for (`indexCheck`). */
  indexes?: IndexCheckOutcome;
  /** Tables counted while pg_restore was still running. */
  countedDuringRestore: number;
  restoreSeconds: number;
  /** Time from pg_restore's exit to the end of the checks. */
  checkSeconds: number;
}

/** "host:port/database": how every prompt and refusal names a target, so a wrong server is visible. */
export function describeTarget(conn: PgConnection): string {
  return `${conn.host.includes(':') ? `[${conn.host}]` : conn.host}:${conn.port}/${conn.database}`;
}

/** Refuses (exit 3) unless `confirm` is exactly the database's name: no trimming, no case folding. */
export function requireDestructiveConfirmation(target: PgConnection, confirm: string | undefined, holds = 'holds data'): void {
  const database = target.database;
  if (confirm === database) return;
  const fix = `pass --confirm ${database} (exactly the target database's name) to replace ${describeTarget(target)}; a pre-restore backup is taken first`;
  if (confirm === undefined || confirm === '') {
    throw refusal('CONFIRMATION_REQUIRED', `restoring into ${describeTarget(target)} replaces a database that ${holds}, and --confirm was not given`, fix);
  }
  throw refusal('CONFIRMATION_MISMATCH', `--confirm ${JSON.stringify(confirm)} does not match the target database ${JSON.stringify(database)} on ${target.host}:${target.port} exactly`, fix);
}

/**
 * Runs pg_restore into `conn` (an existing, empty database), then checks it against backup.json:
 * exact row counts per table, the schema fingerprint, and ANALYZE so the planner has statistics.
 * With parallel jobs, tables are counted (and indexes checked, when asked) as pg_restore finishes
 * them, so little is left once it exits. Throws when pg_restore fails; check mismatches are in the
 * report (`ok: false`).
 */
export async function restoreArchiveInto(conn: PgConnection, options: RestoreArchiveOptions): Promise<RestoreCheckReport> {
  const { backup, runner, logger } = options;
  // The name comes from backup.json: confined to the entry even when --skip-verify skipped the checksums.
  const archive = await entryFilePath(backup.dir, backup.metadata.files.postgres.name);
  const encrypted = isEncrypted(backup.metadata.files.postgres);
  // An age-encrypted archive is decrypted in the stream into pg_restore's stdin: one job, since
  // parallel jobs need a seekable file and Lifeline never writes the plaintext to disk.
  if (encrypted && (options.jobs ?? 1) > 1)
    logger.info(`backup ${backup.id} is encrypted: pg_restore reads it decrypted in the stream with one job (parallel jobs would need a plaintext copy on disk, which Lifeline never writes)`);
  const input = encrypted ? { args: [] as string[], stdin: await openPlaintext(backup.dir, backup.metadata.files.postgres, options.identity, `backup ${backup.id}`) } : archiveInput(runner, archive);
  let inputError: Error | undefined;
  let inputEnded = !encrypted;
  let running: ReturnType<Runner['start']> | undefined;
  if (encrypted) {
    input.stdin!.on('end', () => (inputEnded = true));
    // A chunk that fails authentication (or a plaintext mismatch) stops pg_restore: it never
    // waits on a stdin that will not end, and the scratch database is dropped by the caller.
    input.stdin!.on('error', (error) => {
      inputError ??= error;
      running?.kill('SIGTERM');
    });
  }
  const jobs = input.stdin ? 1 : Math.max(1, options.jobs ?? 2);
  // Early checks need to see each table once its data is committed: parallel restores only.
  const early = jobs > 1 && options.earlyChecks !== false ? await EarlyRestoreChecks.prepare(runner, conn, archive, { indexCheck: Boolean(options.indexCheck), logger }) : undefined;
  // Progress: pg_restore --verbose says each object it starts; the total is the table of contents
  // (read from the file; an archive fed on stdin, encrypted or into a container, shows a count only).
  const progress = options.progress && !options.progress.silent ? options.progress : undefined;
  const verbose = Boolean(early || progress);
  let restoredCount = 0;
  if (progress) progress.phase(options.progressPhase ?? 'restore', { unit: 'count', noun: 'objects', total: input.stdin ? undefined : await tocEntryCount(runner, archive) });
  const args = [
    `--dbname=${conninfoDbname(conn.database)}`,
    ...(options.exitOnError === false ? [] : ['--exit-on-error']),
    ...(jobs > 1 ? [`--jobs=${jobs}`] : ['--single-transaction']),
    ...(options.noOwner ? ['--no-owner', '--no-privileges'] : []),
    ...(verbose ? ['--verbose'] : []),
    ...input.args,
  ];
  const started = Date.now();
  logger.info(`restoring ${backup.id} into ${conn.database} (${jobs} job${jobs > 1 ? 's' : ''}, ${runner.where}${early ? ', checking tables as they finish' : ''})`);
  // With --verbose, stderr is mostly progress: errors and warnings are kept apart for the message.
  const problems: string[] = [];
  running = runner.start({
    tool: 'pg_restore',
    args,
    env: pgEnv(conn),
    stdin: input.stdin,
    ...(verbose
      ? {
          onStderrLine: (line: string) => {
            early?.onLine(line);
            if (progress) {
              const started = restoredObjects(line);
              if (started) progress.update((restoredCount += started));
            }
            if (!isRestoreProgressLine(line) && problems.length < 200) problems.push(line);
          },
        }
      : {}),
  });
  running.stdout.resume();
  const result = await running.done.finally(() => progress?.end());
  if (encrypted && !inputError && !inputEnded) await new Promise((resolve) => setTimeout(resolve, 50));
  if (encrypted && (inputError || !inputEnded)) {
    await early?.close();
    input.stdin!.destroy();
    if (inputError) throw inputError;
    throw failure('PG_RESTORE_FAILED', `pg_restore into ${conn.database} stopped before reading the whole decrypted archive (${describeExit(result)}): ${lastLines(result.stderr)}`, {
      fix: 'read the pg_restore error above',
    });
  }
  if (result.exitCode !== 0) {
    await early?.close();
    const stderr = verbose ? problems.join('\n') : result.stderr;
    throw failure('PG_RESTORE_FAILED', `pg_restore into ${conn.database} failed (${describeExit(result)}): ${lastLines(stderr)}`, {
      fix: /role .* does not exist/.test(stderr) ? 'the target server lacks roles of the source: restore globals.sql first, or pass --no-owner' : 'read the pg_restore error above',
    });
  }
  const restoreSeconds = (Date.now() - started) / 1000;
  const checkStarted = Date.now();
  const analyze = options.analyze !== false;
  const session = PsqlSession.open(runner, conn);
  try {
    // ANALYZE of the restored tables over two sessions, alongside the remaining counts and the fingerprint.
    const analyzed = analyze ? analyzeUserTables(() => PsqlSession.open(runner, conn), 2) : undefined;
    const finished = early?.finish();
    // Without early checks, a drill's amcheck runs alongside the counts (it reads only the indexes).
    const indexes = options.indexCheck && !early ? checkAllBtreeIndexes(() => PsqlSession.open(runner, conn), 1) : undefined;
    // A failure in one must not leave the others' promises unhandled.
    for (const p of [analyzed, finished, indexes]) p?.catch(() => {});
    const actualFingerprint = await schemaFingerprint(session);
    const earlyResult = await finished;
    const actualCounts = earlyResult?.counts ?? (await exactRowCounts(session));
    const indexOutcome = earlyResult ? earlyResult.indexes : await indexes;
    await analyzed;
    const mismatches = compareCounts(backup.metadata.rowCounts, actualCounts);
    const rowCounts = { ok: mismatches.length === 0, tables: Object.keys(actualCounts).length, rows: Object.values(actualCounts).reduce((a, b) => a + b, 0), mismatches };
    const fingerprint = { ok: actualFingerprint === backup.metadata.schemaFingerprint, expected: backup.metadata.schemaFingerprint, actual: actualFingerprint };
    logger.info(
      `${rowCounts.ok ? 'ok  ' : 'FAIL'} row counts: ${rowCounts.tables} tables, ${rowCounts.rows} rows${
        mismatches.length
          ? `; ${mismatches.length} differ (${mismatches
              .slice(0, 3)
              .map((m) => `${m.table} ${m.actual}/${m.expected}`)
              .join(', ')})`
          : ''
      }`,
    );
    logger.info(`${fingerprint.ok ? 'ok  ' : 'FAIL'} schema fingerprint ${actualFingerprint}`);
    return {
      ok: rowCounts.ok && fingerprint.ok,
      database: conn.database,
      rowCounts,
      schemaFingerprint: fingerprint,
      analyzed: analyze,
      ...(indexOutcome ? { indexes: indexOutcome } : {}),
      countedDuringRestore: earlyResult?.earlyCounted ?? 0,
      restoreSeconds,
      checkSeconds: (Date.now() - checkStarted) / 1000,
    };
  } finally {
    await Promise.all([session.close(), early?.close()]);
  }
}

export function compareCounts(expected: Record<string, number>, actual: Record<string, number>): RowCountMismatch[] {
  const mismatches: RowCountMismatch[] = [];
  for (const table of new Set([...Object.keys(expected), ...Object.keys(actual)])) {
    const e = expected[table] ?? null;
    const a = actual[table] ?? null;
    if (e !== a) mismatches.push({ table, expected: e, actual: a });
  }
  return mismatches.sort((x, y) => x.table.localeCompare(y.table));
}

export interface FreshRestoreOptions extends RestoreArchiveOptions {
  /** The database to create and fill; it must not exist, or be empty. */
  target: PgConnection;
  /** Verify the checksums first (default true). */
  verifyChecksums?: boolean;
}

/**
 * Restores a backup into a fresh database (created when missing) and checks it: the isolated
 * restore a drill needs. Refuses a target that holds any user object (`userObjects`).
 */
export async function restoreIntoFreshDatabase(options: FreshRestoreOptions): Promise<RestoreCheckReport> {
  const { target, runner } = options;
  // Before anything is created: an encrypted backup needs a matching identity.
  requireIdentityFor([options.backup.metadata.files.postgres], options.identity, `backup ${options.backup.id}`);
  if (options.verifyChecksums !== false) await requireIntactChecksums(options.backup, options.logger);
  const admin = PsqlSession.open(runner, maintenanceConnection(target));
  try {
    await checkConnection(admin, maintenanceConnection(target));
    const state = await databaseState(runner, target);
    requireNotTemplate(target, state);
    if (state.holdsData) {
      throw refusal(
        'TARGET_NOT_EMPTY',
        `database ${describeTarget(target)} is not empty (${describeUserObjects(state.objects)}); an isolated restore needs an empty or new database`,
        'choose a new database name, or use lifeline restore with --confirm to replace it',
      );
    }
    if (!state.exists) await admin.exec(`CREATE DATABASE ${quoteIdent(target.database)} TEMPLATE template0`);
  } finally {
    await admin.close();
  }
  return restoreArchiveInto(target, options);
}

export interface RestoreOptions extends RestoreArchiveOptions {
  catalog: Catalog;
  environment: string;
  target: PgConnection;
  /** Must equal the target database's name when it exists and holds data. */
  confirm?: string;
  /** Skip the checksum check: explicit, and written into the restore's record. */
  skipVerify?: boolean;
  /** Take a pre-restore backup of a target that holds data (default true). */
  preRestoreBackup?: boolean;
  migrationHeadQuery?: string;
  compressLevel?: number;
  /** Compression of the pre-restore backup (postgres.compress); wins over compressLevel. */
  compression?: Compression;
  lockWaitSeconds?: number;
  /** Seconds any of Lifeline's own queries waits for a table lock before failing with who holds it (default 60). */
  lockTimeoutSeconds?: number;
  /** How the operator undoes this restore, with `{id}` for the pre-restore backup (e.g. the CLI command line). */
  undoCommand?: (preRestoreBackupId: string) => string;
  /** age recipients: the pre-restore backup is stored encrypted to them (encryption.recipients). */
  encryptTo?: readonly string[];
}

export interface RestoreResult {
  backupId: string;
  /** The database the backup was taken of (it may differ from the target's). */
  sourceDatabase: string;
  target: string;
  host: string;
  port: number;
  database: string;
  destructive: boolean;
  checksumsVerified: boolean;
  preRestoreBackupId?: string;
  /** The command that puts the replaced database back. */
  undoCommand?: string;
  checks: RestoreCheckReport;
  /** Database-level state (privileges, settings, connection limit, comment) applied from the backup and compared. */
  databaseState: DatabaseStateCheck;
  /** Sessions on the target that were ended for the swap. */
  sessionsTerminated: number;
  /** Problems after the swap that did not undo it (e.g. the restore log could not be written). */
  warnings: string[];
  seconds: number;
}

export interface DatabaseStateCheck {
  /** false when the backup predates recording it. */
  recorded: boolean;
  ok: boolean;
  /** Privileges and per-role settings are skipped with noOwner (the roles may not exist here). */
  privileges: boolean;
  differences: string[];
}

export const RESTORE_LOG = 'restores.jsonl';

/**
 * Restores a backup into `target`. Everything that decides is done under the environment lock:
 * a target that holds any user object needs `confirm` equal to its name (refused before anything
 * is touched otherwise). The restore goes into a scratch database, is checked (rows, schema,
 * database-level state), and replaces the target by a rename swap; immediately before the swap
 * the target is looked at again: if it gained data since the decision, the restore is refused
 * (unless confirmed), and whatever it holds then is saved in a `pre-restore` backup. A failure at
 * any step before the swap leaves the target exactly as it was.
 */
export async function restoreBackup(options: RestoreOptions): Promise<RestoreResult> {
  const lockTimeout = options.lockTimeoutSeconds ?? DEFAULT_LOCK_TIMEOUT_SECONDS;
  const target = withLockTimeout(options.target, lockTimeout);
  const maintenance = maintenanceConnection(target);
  // An encrypted backup without (or with a foreign) identity: refused before anything is touched.
  requireIdentityFor([options.backup.metadata.files.postgres], options.identity, `backup ${options.backup.id}`);
  // A wrong URL or password fails at once, before waiting for the lock; nothing is decided here.
  const admin = PsqlSession.open(options.runner, maintenance);
  try {
    await checkConnection(admin, maintenance);
  } finally {
    await admin.close();
  }
  return withLock(
    options.catalog.envDir(options.environment),
    options.environment,
    { command: `restore ${options.backup.id} into ${describeTarget(target)}`, waitSeconds: options.lockWaitSeconds ?? 30 },
    () => restoreLocked({ ...options, target }, maintenance, lockTimeout),
  );
}

async function restoreLocked(options: RestoreOptions, maintenance: PgConnection, lockTimeout: number): Promise<RestoreResult> {
  const { target, runner, logger, backup } = options;
  const started = Date.now();
  // Decided under the lock: what the target holds now, not before another run finished.
  const before = await databaseState(runner, target);
  requireNotTemplate(target, before);
  if (before.holdsData) requireDestructiveConfirmation(target, options.confirm, `holds ${describeUserObjects(before.objects)}`);
  if (backup.metadata.database !== target.database) {
    logger.warn(`backup ${backup.id} is of database ${backup.metadata.database}, restored into ${describeTarget(target)} as asked by its id`);
  }
  const scratch = scratchName(target.database);
  const encoding = before.exists ? `ENCODING ${quoteLiteral(before.encoding!)} LC_COLLATE ${quoteLiteral(before.collate!)} LC_CTYPE ${quoteLiteral(before.ctype!)}` : '';
  // The empty scratch database is created while the checksums are read (nothing of the archive
  // runs in it before they pass); a refusal drops it again, and the target is never touched.
  const created = execOnce(runner, maintenance, `CREATE DATABASE ${quoteIdent(scratch)} TEMPLATE template0 ${encoding}`);
  created.catch(() => {});
  try {
    if (options.skipVerify) logger.warn('checksum verification skipped (--skip-verify); this is recorded with the restore');
    else await requireIntactChecksums(backup, logger);
  } catch (error) {
    const made = await created.then(
      () => true,
      () => false,
    );
    if (made) await execOnce(runner, maintenance, `DROP DATABASE IF EXISTS ${quoteIdent(scratch)} WITH (FORCE)`).catch(() => {});
    throw error;
  }
  await created;
  let checks: RestoreCheckReport;
  let stateCheck: DatabaseStateCheck;
  let preRestoreBackupId: string | undefined;
  let swap: { sessionsTerminated: number; warnings: string[] };
  try {
    checks = await restoreArchiveInto(withDatabase(target, scratch), options);
    stateCheck = await applyDatabaseLevelState(runner, maintenance, scratch, backup, { privileges: !options.noOwner, owner: before.owner, logger });
    if (!checks.ok || !stateCheck.ok) {
      throw failure('RESTORE_CHECK_FAILED', `the restored copy does not match backup ${backup.id} (${describeCheckFailure(checks, stateCheck)}); ${describeTarget(target)} was not touched`, {
        fix: stateCheck.ok
          ? 'verify the backup (lifeline verify) and check that the source had no unlogged or foreign tables'
          : 'the roles named by the database privileges or settings must exist on this server: restore globals.sql first, or pass --no-owner',
        details: { checks, databaseState: stateCheck },
      });
    }
    // Looked at again: rows may have arrived while pg_restore ran.
    const now = await databaseState(runner, target);
    if (now.holdsData && !before.holdsData) {
      if (options.confirm !== target.database) {
        throw refusal(
          'TARGET_CHANGED',
          `${describeTarget(target)} was empty when the restore started and now holds ${describeUserObjects(now.objects)} (written while the restore ran); nothing was replaced`,
          `find out who writes to ${target.database}; to replace it anyway, re-run with --confirm ${target.database} (a pre-restore backup is taken first)`,
        );
      }
      logger.warn(`${describeTarget(target)} gained ${describeUserObjects(now.objects)} while the restore ran; it is backed up before it is replaced (--confirm was given)`);
    }
    if (now.holdsData && options.preRestoreBackup !== false) {
      // Taken as late as possible, so it holds what was written while the restore ran.
      const shown = options.progress && !options.progress.silent ? options.progress : undefined;
      shown?.phase('pre-restore backup', { unit: 'bytes' });
      const pre = await createBackup({
        catalog: options.catalog,
        environment: options.environment,
        runner,
        conn: target,
        label: 'pre-restore',
        logger,
        lockHeld: true,
        encryptTo: options.encryptTo,
        migrationHeadQuery: options.migrationHeadQuery,
        compression: options.compression,
        compressLevel: options.compressLevel,
        lockTimeoutSeconds: lockTimeout,
        ...(shown ? { progress: { onBytes: (_what: string, bytes: number) => shown.update(bytes) } } : {}),
      }).finally(() => shown?.end());
      preRestoreBackupId = pre.id;
      logger.info(`pre-restore backup of ${describeTarget(target)}: ${pre.id} (restore it to undo this restore)`);
    }
    const decidedEmpty = !now.holdsData;
    swap = await swapDatabases(runner, maintenance, target.database, scratch, now, logger, async () => {
      // The last look, with the target's sessions ended: an empty target must still be empty.
      if (!decidedEmpty) return;
      const last = await databaseState(runner, target);
      if (last.holdsData) {
        throw refusal(
          'TARGET_CHANGED',
          `${describeTarget(target)} gained ${describeUserObjects(last.objects)} just before the swap; nothing was replaced`,
          `find out who writes to ${target.database}, then re-run the restore (with --confirm ${target.database} to replace it, after a pre-restore backup)`,
        );
      }
    });
  } catch (error) {
    await execOnce(runner, maintenance, `DROP DATABASE IF EXISTS ${quoteIdent(scratch)} WITH (FORCE)`).catch(() => {});
    if (preRestoreBackupId) logger.info(`the pre-restore backup ${preRestoreBackupId} stays in the catalog`);
    throw error;
  }
  const warnings: string[] = [...swap.warnings];
  if (swap.sessionsTerminated) logger.info(`ended ${swap.sessionsTerminated} session${swap.sessionsTerminated === 1 ? '' : 's'} on ${describeTarget(target)} for the swap`);
  const result: RestoreResult = {
    backupId: backup.id,
    sourceDatabase: backup.metadata.database,
    target: maskedUrl(target),
    host: target.host,
    port: target.port,
    database: target.database,
    destructive: Boolean(preRestoreBackupId) || before.holdsData,
    checksumsVerified: !options.skipVerify,
    ...(preRestoreBackupId
      ? {
          preRestoreBackupId,
          undoCommand:
            options.undoCommand?.(preRestoreBackupId) ??
            `lifeline restore --env ${options.environment} --backup ${preRestoreBackupId} --target-env TARGET_URL --confirm ${target.database} (TARGET_URL holding the same URL)`,
        }
      : {}),
    checks,
    databaseState: stateCheck,
    sessionsTerminated: swap.sessionsTerminated,
    warnings,
    seconds: (Date.now() - started) / 1000,
  };
  // The swap has committed: from here on, a problem is a warning on a restore that succeeded.
  try {
    await options.catalog.appendLog(options.environment, RESTORE_LOG, { at: new Date().toISOString(), ...result });
  } catch (error) {
    const warning = `the restore succeeded but could not be recorded in ${RESTORE_LOG}: ${(error as Error).message}`;
    logger.warn(warning);
    warnings.push(warning);
  }
  return result;
}

async function requireIntactChecksums(backup: BackupEntry, logger: Logger): Promise<void> {
  const report = await verifyBackup(backup, { runner: new LocalRunner(), logger, checksumsOnly: true });
  if (!report.ok) {
    const bad = report.checks.filter((c) => !c.ok).map((c) => `${c.name}: ${c.detail}`);
    throw refusal(
      'BACKUP_CORRUPT',
      `backup ${backup.id} fails its checksums, so it will not be restored (${bad.join('; ')})`,
      'restore another backup (lifeline backups lists them); this one is damaged',
      { checks: report.checks },
    );
  }
}

interface DatabaseState {
  exists: boolean;
  holdsData: boolean;
  objects: UserObjects[];
  /** pg_database.datistemplate: CREATE DATABASE copies it. */
  template?: boolean;
  owner?: string;
  encoding?: string;
  collate?: string;
  ctype?: string;
}

/**
 * Refuses (exit 3, --confirm or not) a template database as a target: every database created
 * later would copy the backup's contents, and the replaced template could not be dropped.
 */
function requireNotTemplate(target: PgConnection, state: DatabaseState): void {
  if (!state.template && target.database !== 'template0' && target.database !== 'template1') return;
  throw refusal(
    'TARGET_IS_TEMPLATE',
    `${describeTarget(target)} is a template database: every database created on this server afterwards would copy what is restored into it; nothing was changed`,
    'restore into an application database (the one your app connects to, or a new one) instead; a template database is never a restore target',
  );
}

/** Whether the database exists and what it holds: any user object at all counts (`userObjects`). */
async function databaseState(runner: Runner, target: PgConnection): Promise<DatabaseState> {
  // Catalog reads only: bounded so a server in trouble cannot hold the environment lock forever.
  const bounded: PgConnection = { ...target, timeouts: { ...target.timeouts, statementSeconds: Math.max(30, target.timeouts?.lockSeconds ?? 0) } };
  const [row] = await queryOnce<{ template: boolean; owner: string; encoding: string; collate: string; ctype: string }>(
    runner,
    maintenanceConnection(bounded),
    `SELECT datistemplate AS template, pg_get_userbyid(datdba) AS owner, pg_encoding_to_char(encoding) AS encoding, datcollate AS collate, datctype AS ctype FROM pg_database WHERE datname = ${quoteLiteral(target.database)}`,
  );
  if (!row) return { exists: false, holdsData: false, objects: [] };
  const session = PsqlSession.open(runner, bounded);
  try {
    const objects = await userObjects(session);
    return { exists: true, holdsData: objects.length > 0, objects, ...row };
  } finally {
    await session.close();
  }
}

/**
 * Gives the scratch database the backup's database-level state (privileges, settings, per-role
 * settings, connection limit, comment), then reads it back and compares. Settings are applied
 * after pg_restore, so e.g. a database-wide default_transaction_read_only cannot break it.
 */
async function applyDatabaseLevelState(
  runner: Runner,
  maintenance: PgConnection,
  scratch: string,
  backup: BackupEntry,
  options: { privileges: boolean; owner?: string; logger: Logger },
): Promise<DatabaseStateCheck> {
  const expected = backup.metadata.databaseState;
  if (!expected) {
    options.logger.warn(`backup ${backup.id} predates recording database-level privileges and settings: they are neither restored nor compared`);
    return { recorded: false, ok: true, privileges: options.privileges, differences: [] };
  }
  const db = quoteIdent(scratch);
  const statements: string[] = [];
  // The owner first: an ACL names the owner's own rights, which follow an ownership change.
  if (options.owner && options.privileges) statements.push(`ALTER DATABASE ${db} OWNER TO ${quoteIdent(options.owner)}`);
  for (const setting of expected.settings) statements.push(`ALTER DATABASE ${db} SET ${settingClause(setting)}`);
  if (expected.connectionLimit !== -1) statements.push(`ALTER DATABASE ${db} CONNECTION LIMIT ${Number(expected.connectionLimit)}`);
  if (expected.comment !== null) statements.push(`COMMENT ON DATABASE ${db} IS ${quoteLiteral(expected.comment)}`);
  if (options.privileges) {
    for (const [role, settings] of Object.entries(expected.roleSettings)) {
      for (const setting of settings) statements.push(`ALTER ROLE ${quoteIdent(role)} IN DATABASE ${db} SET ${settingClause(setting)}`);
    }
    if (expected.acl) {
      statements.push(`REVOKE ALL ON DATABASE ${db} FROM PUBLIC`, `REVOKE ALL ON DATABASE ${db} FROM CURRENT_USER`);
      if (options.owner) statements.push(`REVOKE ALL ON DATABASE ${db} FROM ${quoteIdent(options.owner)}`);
      // Each entry is `grantee PRIVILEGE[ WITH GRANT OPTION]`, grantee already quoted (or PUBLIC).
      for (const item of expected.acl) {
        const match = /^(PUBLIC|"(?:[^"]|"")+"|[a-z_][a-z0-9_$]*) (CREATE|CONNECT|TEMPORARY)( WITH GRANT OPTION)?$/.exec(item);
        if (!match)
          throw failure('DATABASE_ACL_UNREADABLE', `backup ${backup.id} records a database privilege Lifeline cannot read: ${JSON.stringify(item)}`, {
            fix: 'restore with --no-owner and set the database privileges by hand',
          });
        statements.push(`GRANT ${match[2]} ON DATABASE ${db} TO ${match[1]}${match[3] ?? ''}`);
      }
    }
  }
  const differences: string[] = [];
  // One session for all (each statement is idempotent); only when one fails, each on its own, to name it.
  const together = statements.length
    ? await execOnce(runner, maintenance, statements.join(';\n')).then(
        () => true,
        () => false,
      )
    : true;
  if (!together) {
    for (const statement of statements) {
      await execOnce(runner, maintenance, statement).catch((error: Error) =>
        differences.push(`could not apply ${statement.replace(db, 'the database')}: ${error.message.replace(/^query against \S+ failed: /, '')}`),
      );
    }
  }
  const session = PsqlSession.open(runner, maintenance);
  let actual: DatabaseLevelState | undefined;
  try {
    actual = await databaseLevelState(session, scratch);
  } finally {
    await session.close();
  }
  differences.push(...compareDatabaseLevelState(expected, actual!, { privileges: options.privileges }));
  const ok = differences.length === 0;
  options.logger.info(
    `${ok ? 'ok  ' : 'FAIL'} database privileges and settings${options.privileges ? '' : ' (privileges and role settings skipped: --no-owner)'}${ok ? '' : `: ${differences.join('; ')}`}`,
  );
  return { recorded: true, ok, privileges: options.privileges, differences };
}

/** `name=value` as pg_db_role_setting stores it → `name TO ...` (list settings such as search_path item by item, as pg_dump does). */
export function settingClause(setting: string): string {
  const eq = setting.indexOf('=');
  const name = setting.slice(0, eq);
  const value = setting.slice(eq + 1);
  if (!/^[A-Za-z_][A-Za-z0-9_.]*$/.test(name)) throw failure('DATABASE_SETTING_UNREADABLE', `a recorded database setting has an unexpected name: ${JSON.stringify(setting)}`);
  const LIST_SETTINGS = new Set(['search_path', 'temp_tablespaces', 'session_preload_libraries', 'local_preload_libraries', 'shared_preload_libraries', 'unix_socket_directories']);
  if (!LIST_SETTINGS.has(name.toLowerCase())) return `${name} TO ${quoteLiteral(value)}`;
  return `${name} TO ${splitGucList(value).map(quoteLiteral).join(', ')}`;
}

/** A GUC list value (`"$user", public`) into its items, unquoting double-quoted ones. */
function splitGucList(value: string): string[] {
  const items: string[] = [];
  let i = 0;
  while (i < value.length) {
    while (value[i] === ' ') i++;
    let item = '';
    if (value[i] === '"') {
      i++;
      while (i < value.length) {
        if (value[i] === '"' && value[i + 1] === '"') {
          item += '"';
          i += 2;
        } else if (value[i] === '"') {
          i++;
          break;
        } else item += value[i++];
      }
    } else {
      while (i < value.length && value[i] !== ',') item += value[i++];
      item = item.trim();
    }
    while (i < value.length && value[i] !== ',') i++;
    i++;
    items.push(item);
  }
  return items;
}

/**
 * Replaces `target` with `scratch` in one transaction (renames are transactional), after ending
 * the target's sessions and a last look (`lastCheck`) with them gone; the old database is dropped
 * only once the swap committed. psql stops at the first error, so each attempt gets a fresh session.
 */
async function swapDatabases(
  runner: Runner,
  maintenance: PgConnection,
  target: string,
  scratch: string,
  state: DatabaseState,
  logger: Logger,
  lastCheck: () => Promise<void>,
): Promise<{ sessionsTerminated: number; warnings: string[] }> {
  if (state.owner) await execOnce(runner, maintenance, `ALTER DATABASE ${quoteIdent(scratch)} OWNER TO ${quoteIdent(state.owner)}`);
  if (!state.exists) {
    await execOnce(runner, maintenance, `ALTER DATABASE ${quoteIdent(scratch)} RENAME TO ${quoteIdent(target)}`);
    return { sessionsTerminated: 0, warnings: [] };
  }
  const retired = scratchName(target, 'old');
  const sessionsOf = `FROM pg_stat_activity WHERE datname IN (${quoteLiteral(target)}, ${quoteLiteral(scratch)}) AND pid <> pg_backend_pid()`;
  let sessionsTerminated = 0;
  for (let attempt = 1; ; attempt++) {
    try {
      // Termination is asynchronous: wait for the sessions to be gone before renaming.
      const [ended] = await queryOnce<{ n: number }>(runner, maintenance, `SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))::int AS n ${sessionsOf}`);
      sessionsTerminated += ended?.n ?? 0;
      for (let i = 0; i < 50; i++) {
        const [row] = await queryOnce<{ n: number }>(runner, maintenance, `SELECT count(*)::int AS n ${sessionsOf}`);
        if (!row?.n) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      await lastCheck();
      await execOnce(
        runner,
        maintenance,
        `BEGIN; ALTER DATABASE ${quoteIdent(target)} RENAME TO ${quoteIdent(retired)}; ALTER DATABASE ${quoteIdent(scratch)} RENAME TO ${quoteIdent(target)}; COMMIT`,
      );
      break;
    } catch (error) {
      if ((error as { kind?: string }).kind === 'refused') throw error;
      if (attempt >= 5)
        throw failure('RESTORE_SWAP_FAILED', `could not swap the restored database into place: ${(error as Error).message}; ${target} was not changed`, {
          fix: 'stop the applications connected to the database and retry',
          cause: error,
        });
      logger.warn(`swap attempt ${attempt} failed (sessions reconnecting?); retrying`);
      await new Promise((r) => setTimeout(r, 500 * attempt));
    }
  }
  // The swap has committed: a leftover old copy is worth a warning, not a failed restore.
  const warnings: string[] = [];
  await execOnce(runner, maintenance, `DROP DATABASE ${quoteIdent(retired)} WITH (FORCE)`).catch((error: Error) => {
    const warning = `the replaced database was kept as ${retired} (${error.message}); drop it when convenient (lifeline doctor lists it)`;
    logger.warn(warning);
    warnings.push(warning);
  });
  return { sessionsTerminated, warnings };
}

function describeCheckFailure(checks: RestoreCheckReport, state?: DatabaseStateCheck): string {
  const parts: string[] = [];
  if (!checks.rowCounts.ok) parts.push(`${checks.rowCounts.mismatches.length} tables with different row counts`);
  if (!checks.schemaFingerprint.ok) parts.push('schema fingerprint differs');
  if (state && !state.ok) parts.push(`database privileges and settings differ: ${state.differences.join('; ')}`);
  return parts.join(', ');
}

/** A database on the same server to run CREATE/ALTER/DROP DATABASE from. */
export function maintenanceConnection(target: PgConnection): PgConnection {
  return withDatabase(target, target.database === 'postgres' ? 'template1' : 'postgres');
}

/** `<target>_lifeline_<tag>_<random>`, within PostgreSQL's 63-byte identifier limit. */
function scratchName(target: string, tag = 'restore'): string {
  const suffix = `_lifeline_${tag}_${randomBytes(3).toString('hex')}`;
  return `${Buffer.from(target)
    .subarray(0, 63 - suffix.length)
    .toString('utf8')
    .replace(/\uFFFD+$/, '')}${suffix}`;
}

/** A conninfo naming only the database, so a name with `=` or a URL-like name stays a name. */
function conninfoDbname(database: string): string {
  return `dbname='${database.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
}
