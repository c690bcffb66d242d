import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { Catalog } from '../catalog/store';
import { withLock } from '../catalog/lock';
import { failure, refusal, usageError } from '../errors';
import type { Logger } from '../logger';
import { PsqlSession } from '../runner/psql';
import { pgEnv, quoteIdent, quoteLiteral, withDatabase, type PgConnection } from '../runner/postgres-env';
import { describeExit, lastLines, runText, LocalRunner, type Runner } from '../runner/runner';
import type { HookConfig } from '../settings/schema';
import { createBackup } from './backup';
import { checkConnection, maskedUrl } from './connection';
import { analyzeUserTables, exactRowCounts, schemaFingerprint, userTables } from './inspect';
import type { BackupEntry } from './metadata';
import { archiveInput, verifyBackup } from './verify';
import { checkAllBtreeIndexes, type IndexCheckOutcome } from './amcheck';
import { EarlyRestoreChecks, isRestoreProgressLine } from './restore-pipeline';

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

/** Refuses (exit 3) unless `confirm` is exactly the database's name: no trimming, no case folding. */
export function requireDestructiveConfirmation(database: string, confirm: string | undefined): void {
  if (confirm === database) return;
  const fix = `pass --confirm ${database} (exactly the target database's name) to replace it; a pre-restore backup is taken first`;
  if (confirm === undefined || confirm === '') {
    throw refusal('CONFIRMATION_REQUIRED', `restoring into "${database}" replaces a database that holds data, and --confirm was not given`, fix);
  }
  throw refusal('CONFIRMATION_MISMATCH', `--confirm ${JSON.stringify(confirm)} does not match the target database ${JSON.stringify(database)} exactly`, fix);
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
  const archive = join(backup.dir, backup.metadata.files.postgres.name);
  const input = archiveInput(runner, archive);
  const jobs = input.stdin ? 1 : Math.max(1, options.jobs ?? 2);
  // Early checks need to see each table once its data is committed: parallel restores only.
  const early = jobs > 1 && options.earlyChecks !== false ? await EarlyRestoreChecks.prepare(runner, conn, archive, { indexCheck: Boolean(options.indexCheck), logger }) : undefined;
  const args = [
    `--dbname=${conninfoDbname(conn.database)}`,
    ...(options.exitOnError === false ? [] : ['--exit-on-error']),
    ...(jobs > 1 ? [`--jobs=${jobs}`] : ['--single-transaction']),
    ...(options.noOwner ? ['--no-owner', '--no-privileges'] : []),
    ...(early ? ['--verbose'] : []),
    ...input.args,
  ];
  const started = Date.now();
  logger.info(`restoring ${backup.id} into ${conn.database} (${jobs} job${jobs > 1 ? 's' : ''}, ${runner.where}${early ? ', checking tables as they finish' : ''})`);
  // With --verbose, stderr is mostly progress: errors and warnings are kept apart for the message.
  const problems: string[] = [];
  const running = runner.start({
    tool: 'pg_restore',
    args,
    env: pgEnv(conn),
    stdin: input.stdin,
    ...(early
      ? {
          onStderrLine: (line: string) => {
            early.onLine(line);
            if (!isRestoreProgressLine(line) && problems.length < 200) problems.push(line);
          },
        }
      : {}),
  });
  running.stdout.resume();
  const result = await running.done;
  if (result.exitCode !== 0) {
    await early?.close();
    const stderr = early ? problems.join('\n') : result.stderr;
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
    logger.info(`${rowCounts.ok ? 'ok  ' : 'FAIL'} row counts: ${rowCounts.tables} tables, ${rowCounts.rows} rows${mismatches.length ? `; ${mismatches.length} differ (${mismatches.slice(0, 3).map((m) => `${m.table} ${m.actual}/${m.expected}`).join(', ')})` : ''}`);
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
 * restore a drill needs. Refuses a target that already holds tables.
 */
export async function restoreIntoFreshDatabase(options: FreshRestoreOptions): Promise<RestoreCheckReport> {
  const { target, runner } = options;
  if (options.verifyChecksums !== false) await requireIntactChecksums(options.backup, options.logger);
  const admin = PsqlSession.open(runner, maintenanceConnection(target));
  try {
    await checkConnection(admin, maintenanceConnection(target));
    const state = await databaseState(admin, runner, target);
    if (state.holdsData) {
      throw refusal('TARGET_NOT_EMPTY', `database ${target.database} on ${target.host}:${target.port} already holds ${state.tables} tables; an isolated restore needs an empty or new database`, 'choose a new database name, or use lifeline restore with --confirm to replace it');
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
  lockWaitSeconds?: number;
}

export interface RestoreResult {
  backupId: string;
  target: string;
  database: string;
  destructive: boolean;
  checksumsVerified: boolean;
  preRestoreBackupId?: string;
  checks: RestoreCheckReport;
  seconds: number;
}

export const RESTORE_LOG = 'restores.jsonl';

/**
 * Restores a backup into `target`. A target that holds data needs `confirm` equal to its name
 * (refused before anything is touched otherwise), gets a `pre-restore` backup, and is replaced
 * only after the restore was checked in a scratch database (a rename swap). A failure at any
 * step before the swap leaves the target exactly as it was.
 */
export async function restoreBackup(options: RestoreOptions): Promise<RestoreResult> {
  const { target, runner, backup } = options;
  const maintenance = maintenanceConnection(target);
  const admin = PsqlSession.open(runner, maintenance);
  let before: DatabaseState;
  try {
    await checkConnection(admin, maintenance);
    before = await databaseState(admin, runner, target);
  } finally {
    await admin.close();
  }
  if (before.holdsData) requireDestructiveConfirmation(target.database, options.confirm);
  return withLock(options.catalog.envDir(options.environment), options.environment, { command: `restore ${backup.id} into ${target.database}`, waitSeconds: options.lockWaitSeconds ?? 30 }, () =>
    restoreLocked(options, before, maintenance),
  );
}

async function restoreLocked(options: RestoreOptions, before: DatabaseState, maintenance: PgConnection): Promise<RestoreResult> {
  const { target, runner, logger, backup } = options;
  const started = Date.now();
  if (options.skipVerify) logger.warn('checksum verification skipped (--skip-verify); this is recorded with the restore');
  else await requireIntactChecksums(backup, logger);

  let preRestoreBackupId: string | undefined;
  if (before.holdsData && options.preRestoreBackup !== false) {
    const pre = await createBackup({ catalog: options.catalog, environment: options.environment, runner, conn: target, label: 'pre-restore', logger, lockHeld: true, migrationHeadQuery: options.migrationHeadQuery, compressLevel: options.compressLevel });
    preRestoreBackupId = pre.id;
    logger.info(`pre-restore backup of ${target.database}: ${pre.id} (restore it to undo this restore)`);
  }

  const scratch = scratchName(target.database);
  const encoding = before.exists ? `ENCODING ${quoteLiteral(before.encoding!)} LC_COLLATE ${quoteLiteral(before.collate!)} LC_CTYPE ${quoteLiteral(before.ctype!)}` : '';
  await execOnce(runner, maintenance, `CREATE DATABASE ${quoteIdent(scratch)} TEMPLATE template0 ${encoding}`);
  let checks: RestoreCheckReport;
  try {
    checks = await restoreArchiveInto(withDatabase(target, scratch), options);
    if (!checks.ok) {
      throw failure('RESTORE_CHECK_FAILED', `the restored copy does not match backup ${backup.id} (${describeCheckFailure(checks)}); ${target.database} was not touched`, { fix: 'verify the backup (lifeline verify) and check that the source had no unlogged or foreign tables', details: { checks } });
    }
    await swapDatabases(runner, maintenance, target.database, scratch, before, logger);
  } catch (error) {
    await execOnce(runner, maintenance, `DROP DATABASE IF EXISTS ${quoteIdent(scratch)} WITH (FORCE)`).catch(() => {});
    throw error;
  }
  const result: RestoreResult = {
    backupId: backup.id,
    target: maskedUrl(target),
    database: target.database,
    destructive: before.holdsData,
    checksumsVerified: !options.skipVerify,
    ...(preRestoreBackupId ? { preRestoreBackupId } : {}),
    checks,
    seconds: (Date.now() - started) / 1000,
  };
  await options.catalog.appendLog(options.environment, RESTORE_LOG, { at: new Date().toISOString(), ...result });
  return result;
}

async function requireIntactChecksums(backup: BackupEntry, logger: Logger): Promise<void> {
  const report = await verifyBackup(backup, { runner: new LocalRunner(), logger, checksumsOnly: true });
  if (!report.ok) {
    const bad = report.checks.filter((c) => !c.ok).map((c) => `${c.name}: ${c.detail}`);
    throw refusal('BACKUP_CORRUPT', `backup ${backup.id} fails its checksums, so it will not be restored (${bad.join('; ')})`, 'restore another backup (lifeline backups lists them); this one is damaged', { checks: report.checks });
  }
}

interface DatabaseState {
  exists: boolean;
  holdsData: boolean;
  tables: number;
  owner?: string;
  encoding?: string;
  collate?: string;
  ctype?: string;
}

async function databaseState(admin: PsqlSession, runner: Runner, target: PgConnection): Promise<DatabaseState> {
  const [row] = await admin.query<{ owner: string; encoding: string; collate: string; ctype: string }>(
    `SELECT pg_get_userbyid(datdba) AS owner, pg_encoding_to_char(encoding) AS encoding, datcollate AS collate, datctype AS ctype FROM pg_database WHERE datname = ${quoteLiteral(target.database)}`,
  );
  if (!row) return { exists: false, holdsData: false, tables: 0 };
  const session = PsqlSession.open(runner, target);
  try {
    const tables = (await userTables(session)).length;
    return { exists: true, holdsData: tables > 0, tables, ...row };
  } finally {
    await session.close();
  }
}

/**
 * Replaces `target` with `scratch` in one transaction (renames are transactional), after ending
 * the target's sessions; the old database is dropped only once the swap committed. psql stops at
 * the first error, so each attempt gets a fresh session.
 */
async function swapDatabases(runner: Runner, maintenance: PgConnection, target: string, scratch: string, before: DatabaseState, logger: Logger): Promise<void> {
  if (before.owner) await execOnce(runner, maintenance, `ALTER DATABASE ${quoteIdent(scratch)} OWNER TO ${quoteIdent(before.owner)}`);
  if (!before.exists) {
    await execOnce(runner, maintenance, `ALTER DATABASE ${quoteIdent(scratch)} RENAME TO ${quoteIdent(target)}`);
    return;
  }
  const retired = scratchName(target, 'old');
  const sessionsOf = `FROM pg_stat_activity WHERE datname IN (${quoteLiteral(target)}, ${quoteLiteral(scratch)}) AND pid <> pg_backend_pid()`;
  for (let attempt = 1; ; attempt++) {
    try {
      // Termination is asynchronous: wait for the sessions to be gone before renaming.
      await execOnce(runner, maintenance, `SELECT count(pg_terminate_backend(pid)) ${sessionsOf}`);
      for (let i = 0; i < 50; i++) {
        const [row] = await queryOnceOn<{ n: number }>(runner, maintenance, `SELECT count(*)::int AS n ${sessionsOf}`);
        if (!row?.n) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      await execOnce(runner, maintenance, `BEGIN; ALTER DATABASE ${quoteIdent(target)} RENAME TO ${quoteIdent(retired)}; ALTER DATABASE ${quoteIdent(scratch)} RENAME TO ${quoteIdent(target)}; COMMIT`);
      break;
    } catch (error) {
      if (attempt >= 5) throw failure('RESTORE_SWAP_FAILED', `could not swap the restored database into place: ${(error as Error).message}; ${target} was not changed`, { fix: 'stop the applications connected to the database and retry', cause: error });
      logger.warn(`swap attempt ${attempt} failed (sessions reconnecting?); retrying`);
      await new Promise((r) => setTimeout(r, 500 * attempt));
    }
  }
  // The swap has committed: a leftover old copy is worth a warning, not a failed restore.
  await execOnce(runner, maintenance, `DROP DATABASE ${quoteIdent(retired)} WITH (FORCE)`).catch((error: Error) => logger.warn(`the replaced database was kept as ${retired} (${error.message}); drop it when convenient`));
}

async function execOnce(runner: Runner, conn: PgConnection, sql: string): Promise<void> {
  const session = PsqlSession.open(runner, conn);
  try {
    await session.exec(sql);
  } finally {
    await session.close();
  }
}

async function queryOnceOn<T>(runner: Runner, conn: PgConnection, sql: string): Promise<T[]> {
  const session = PsqlSession.open(runner, conn);
  try {
    return await session.query<T>(sql);
  } finally {
    await session.close();
  }
}

function describeCheckFailure(checks: RestoreCheckReport): string {
  const parts: string[] = [];
  if (!checks.rowCounts.ok) parts.push(`${checks.rowCounts.mismatches.length} tables with different row counts`);
  if (!checks.schemaFingerprint.ok) parts.push('schema fingerprint differs');
  return parts.join(', ');
}

/** A database on the same server to run CREATE/ALTER/DROP DATABASE from. */
export function maintenanceConnection(target: PgConnection): PgConnection {
  return withDatabase(target, target.database === 'postgres' ? 'template1' : 'postgres');
}

/** `<target>_lifeline_<tag>_<random>`, within PostgreSQL's 63-byte identifier limit. */
function scratchName(target: string, tag = 'restore'): string {
  const suffix = `_lifeline_${tag}_${randomBytes(3).toString('hex')}`;
  return `${Buffer.from(target).subarray(0, 63 - suffix.length).toString('utf8').replace(/\uFFFD+$/, '')}${suffix}`;
}

/** A conninfo naming only the database, so a name with `=` or a URL-like name stays a name. */
function conninfoDbname(database: string): string {
  return `dbname='${database.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
}

export interface HookResult {
  hook: string;
  ok: boolean;
  detail: string;
}

/** Post-restore hooks (cache revalidation, readiness checks); each result is reported, none is skipped silently. */
export async function runPostRestoreHooks(hooks: HookConfig[], options: { runner?: Runner; logger: Logger; timeoutMs?: number }): Promise<HookResult[]> {
  const results: HookResult[] = [];
  for (const hook of hooks) {
    let result: HookResult;
    if ('http' in hook) {
      const name = `${hook.method ?? 'GET'} ${new URL(hook.http).origin}${new URL(hook.http).pathname}`;
      try {
        const response = await fetch(hook.http, { method: hook.method ?? 'GET', signal: AbortSignal.timeout(options.timeoutMs ?? 30_000) });
        const ok = hook.expectStatus ? response.status === hook.expectStatus : response.ok;
        result = { hook: name, ok, detail: `HTTP ${response.status}` };
      } catch (error) {
        result = { hook: name, ok: false, detail: (error as Error).message };
      }
    } else {
      const [tool, ...args] = hook.command;
      const name = hook.command.join(' ');
      try {
        const run = await runText(options.runner ?? new LocalRunner(), { tool: tool!, args });
        result = { hook: name, ok: run.exitCode === 0, detail: run.exitCode === 0 ? 'exit 0' : `${describeExit(run)}: ${lastLines(run.stderr, 2)}` };
      } catch (error) {
        result = { hook: name, ok: false, detail: (error as Error).message };
      }
    }
    options.logger.info(`${result.ok ? 'ok  ' : 'FAIL'} post-restore hook ${result.hook}: ${result.detail}`);
    results.push(result);
  }
  return results;
}

export function parseJobs(value: string | undefined): number {
  const jobs = Number(value ?? '2');
  if (!Number.isInteger(jobs) || jobs < 1 || jobs > 64) throw usageError('BAD_INPUT', `--jobs must be a whole number from 1 to 64 (got "${value}")`, 'pass --jobs 2');
  return jobs;
}
