import type { Catalog } from '../catalog/store';
import { isLifelineError, usageError } from '../errors';
import type { Logger } from '../logger';
import { startThrowawayCluster, type ThrowawayCluster } from '../postgres/cluster';
import { environmentConnection, maskedUrl } from '../postgres/connection';
import { composeRunner, localPostgresRunner } from '../runner/factory';
import { drillServerImage, startContainerCluster, type ContainerCluster } from '../postgres/container-cluster';
import { findServerBinDir } from '../runner/postgres-binaries';
import { drillRedisImage } from '../redis/container-server';
import { findExecutable } from '../runner/runner';
import { migrationHead } from '../postgres/inspect';
import { findBackup, listBackups, type BackupEntry } from '../backup/metadata';
import { parseRecoveryTargetTime, requirePhysical, stanzaInfo, type StanzaInfo } from '../postgres/pgbackrest';
import { restorePointInTime, type PointInTimeCluster } from '../postgres/pitr';
import { maintenanceConnection, restoreIntoFreshDatabase, type RestoreCheckReport } from '../backup/restore';
import { restoreRedisIsolated } from '../backup/redis-isolated';
import { verifyBackup } from '../backup/verify';
import type { Progress } from '../report/progress';
import type { AgeIdentity } from '../crypto/age';
import { requireIdentityFor } from '../crypto/payload';
import { parsePgUrl, quoteIdent, quoteLiteral, withDatabase, type PgConnection } from '../runner/postgres-env';
import { reapLeftovers } from '../runner/leftovers';
import { PsqlSession, queryOnce } from '../runner/psql';
import type { ContainerRunner, Runner } from '../runner/runner';
import { formatDuration } from '../settings/duration';
import type { EnvironmentSettings } from '../settings/resolve';
import { checkApplicationStarts } from './app-check';
import { checkBtreeIndexes, runSmokeQuery, type CheckOutcome } from './checks';
import { assertIsolatedTarget } from './isolation';
import {
  DRILL_REPORT_SCHEMA_VERSION,
  listDrillReports,
  newDrillId,
  renderDrillMarkdown,
  saveDrillReport,
  type DrillCheck,
  type DrillReport,
  type DrillReportSigner,
  type DrillStepRecord,
  type SavedDrillReport,
} from './report';
import { measureRpo, type RpoMeasure } from './rpo';
import { restoreSteps, type RunbookStepId } from './runbook';
import { readSmokeFile, type SmokeQuery } from './smoke';

export interface DrillOptions {
  settings: EnvironmentSettings;
  catalog: Catalog;
  logger: Logger;
  /** Backup id or `latest` (logical drills). */
  backup?: string;
  /** An isolated database URL; default the environment's drill.targetUrlEnv, else a throwaway cluster. */
  targetUrl?: string;
  smokeSql?: string;
  rtoSeconds?: number;
  rpoSeconds?: number;
  /** Point-in-time drill through pgBackRest to this time. */
  pitr?: string;
  jobs?: number;
  now?: () => Date;
  /** Signs report.json (key or keyless, like release manifests); unsigned without one. */
  reportSigner?: DrillReportSigner;
  /** The age identity, for an encrypted backup (decrypted in the stream). */
  identity?: AgeIdentity;
  /** Shows the step (k of n, percent) and, in the restore step, objects restored (src/report/progress.ts). */
  progress?: Progress;
}

export interface DrillOutcome {
  report: DrillReport;
  entry: SavedDrillReport;
  summary: string;
}

/** What one step produced: its checks, and whether later steps can still run. */
interface StepResult {
  checks: CheckOutcome[];
  /** A failure that leaves nothing for later steps to look at (no restored database). */
  fatal?: boolean;
}

type Executor = () => Promise<StepResult>;

/** Phases that make up RTO: what a real restore would spend, not the drill's own set-up. */
const RTO_STEPS = new Set<RunbookStepId>(['verify-backup', 'restore', 'check-data', 'check-indexes', 'restore-redis', 'smoke-queries', 'start-app']);

/**
 * A restore drill: walks the environment's runbook steps (the same list `lifeline runbook`
 * prints), performing each one the drill can perform against an isolated database, records
 * every check, measures RTO and RPO against their targets, and stores the report in the catalog.
 * A refusal (exit 3) is thrown before anything is restored; every other failure is a failed
 * drill with a report, so the release gate sees it.
 */
export async function runDrill(options: DrillOptions): Promise<DrillOutcome> {
  const { settings, catalog, logger } = options;
  const now = options.now ?? (() => new Date());
  const startedAt = now();
  const smokePath = options.smokeSql ?? settings.drill.smokeSql;
  const smokeQueries: SmokeQuery[] = smokePath ? readSmokeFile(smokePath) : [];
  const rtoTarget = options.rtoSeconds ?? settings.rtoSeconds ?? null;
  const rpoTarget = options.rpoSeconds ?? settings.rpoSeconds ?? null;
  const targetUrl = options.targetUrl ?? settings.drill.targetUrl;
  // With postgres.service the client tools run in the db service's container (docker exec on its id).
  const pgService = settings.postgres.service ? await composeRunner(settings.compose, settings.postgres.service) : undefined;
  const runner: Runner = pgService ?? localPostgresRunner(settings.postgres.binDir);
  const live = settings.postgres.url ? environmentConnection(settings) : undefined;

  const mode = options.pitr ? 'pitr' : 'logical';
  if (options.pitr && options.backup && options.backup !== 'latest') {
    throw usageError('BAD_FLAGS', '--pitr and --backup cannot be combined', 'a point-in-time drill picks the pgBackRest base backup itself; drop --backup');
  }
  if (options.pitr && targetUrl && options.targetUrl) {
    throw usageError('BAD_FLAGS', '--pitr restores into its own temporary data directory; --target cannot be combined with it', 'drop --target');
  }
  const pitrTarget = options.pitr ? parseRecoveryTargetTime(options.pitr) : undefined;
  if (pitrTarget) requirePhysical(settings);
  const drillId = newDrillId(startedAt);
  await reapDeadDrills(logger);

  let backup: BackupEntry | undefined;
  let targetConn: PgConnection | undefined;
  if (mode === 'logical') {
    backup = await findBackup(catalog, settings.name, options.backup ?? 'latest');
    // An encrypted backup without its identity (exit 2) or with a foreign one (exit 1): nothing is started.
    requireIdentityFor([backup.metadata.files.postgres, backup.metadata.files.redis], options.identity, `backup ${backup.id}`);
    if (targetUrl) {
      targetConn = parsePgUrl(targetUrl);
      await assertIsolatedTarget(live, targetConn, runner, logger);
    }
  }
  const database = backup?.metadata.database ?? settings.postgres.database ?? live?.database ?? 'postgres';
  // What the throwaway servers come from, decided before anything is written: a drill that cannot
  // start them is refused (exit 2) with the fix, never a failed report that would fail the gate.
  const { pgImage, redisImage } =
    mode === 'logical' ? await throwawaySources(settings, pgService, Boolean(targetConn), Boolean(backup?.metadata.files.redis)) : { pgImage: undefined, redisImage: undefined };
  const drillLabels = { 'lifeline.drill': drillId, 'lifeline.drill.environment': settings.name };

  const checks: DrillCheck[] = [];
  const stepRecords: DrillStepRecord[] = [];
  const phases: Record<string, number> = {};
  let rpo: RpoMeasure | null = null;
  /** Point-in-time drills: how far behind the live server the WAL archive is (what a recovery now would lose). */
  let archiveLag: { seconds: number | null; note: string } | undefined;
  let restoreReport: RestoreCheckReport | undefined;
  let cluster: ThrowawayCluster | undefined;
  let containerCluster: ContainerCluster | undefined;
  let restoreRunner: Runner = runner;
  let pitrCluster: PointInTimeCluster | undefined;
  let stanza: StanzaInfo | undefined;
  let createdTargetDatabase = false;
  /** Starting the throwaway cluster is the drill's own set-up, not part of a real restore's RTO. */
  let setupSeconds = 0;
  let checkConn: PgConnection | undefined;
  let checkRunner: Runner = runner;
  const openCheckSession = () => PsqlSession.open(checkRunner, checkConn!);

  const executors: Partial<Record<RunbookStepId, Executor>> = {
    'select-backup': async () => {
      if (mode === 'pitr') {
        const info = await stanzaInfo(requirePhysical(settings));
        stanza = info;
        archiveLag = live
          ? await walArchiveLag(runner, live, startedAt)
          : { seconds: null, note: 'point-in-time drill: RPO is the WAL archive lag; not measured, as no live database URL is configured to read pg_stat_archiver from' };
        const usable = info.backups.filter((b) => Date.parse(b.stoppedAt) <= pitrTarget!.at.getTime());
        const base = usable[usable.length - 1];
        return {
          checks: [
            {
              name: 'base backup before the target',
              passed: Boolean(base),
              detail: base ? `${base.label} (${base.type}, finished ${base.stoppedAt})` : `no backup of stanza ${info.stanza} finished before ${pitrTarget!.text}`,
            },
          ],
          fatal: !base,
        };
      }
      const all = await listBackups(catalog, settings.name);
      rpo = measureRpo(
        all.map((b) => ({ id: b.id, createdAt: b.metadata.createdAt, usable: b.metadata.verified?.ok !== false })),
        backup!.metadata.createdAt,
        startedAt,
        settings.drill.windowSeconds,
      );
      return { checks: [{ name: 'backup chosen', passed: true, detail: `${backup!.id}, taken ${backup!.metadata.createdAt} (${formatDuration(rpo.backupAgeSeconds)} old)` }] };
    },
    'verify-backup': async () => {
      const report = await verifyBackup(backup!, { runner, logger, checksumsOnly: true });
      const failed = report.checks.filter((c) => !c.ok);
      return {
        checks: [{ name: 'checksums', passed: report.ok, detail: report.ok ? `${report.checks.length} files match SHA256SUMS` : failed.map((c) => `${c.name}: ${c.detail}`).join('; ') }],
        fatal: !report.ok,
      };
    },
    restore: async () => {
      if (mode === 'pitr') {
        pitrCluster = await restorePointInTime(settings, pitrTarget!.text, logger, { database, binDir: settings.postgres.binDir, info: stanza });
        phases['pgbackrest restore'] = pitrCluster.restoreSeconds;
        phases['start-up and WAL replay'] = pitrCluster.recoverySeconds;
        checkConn = withDatabase(pitrCluster.conn, database);
        checkRunner = localPostgresRunner(pitrCluster.cluster.binDir);
        const replayed = pitrCluster.lastReplayedCommit;
        const withinTarget = replayed === null || Date.parse(replayed) <= pitrTarget!.at.getTime() + 1;
        return {
          checks: [
            { name: 'pgbackrest restore exit', passed: true, detail: `exit 0, base backup ${pitrCluster.baseBackup.label}` },
            { name: 'recovery finished and promoted', passed: true, detail: 'pg_is_in_recovery() is false' },
            { name: 'recovered up to the target, not past it', passed: withinTarget, detail: `last replayed commit ${replayed ?? '(none after the base backup)'}; target ${pitrTarget!.text}` },
          ],
        };
      }
      if (!targetConn && pgImage) {
        const began = Date.now();
        containerCluster = await startContainerCluster({
          image: pgImage,
          nameSuffix: `${drillId}-pg`,
          labels: drillLabels,
          purpose: `drill ${drillId} of ${settings.name}: throwaway PostgreSQL container restored from backup ${backup!.id}`,
        });
        setupSeconds = (Date.now() - began) / 1000;
        targetConn = withDatabase(containerCluster.conn, database);
        // pg_restore and psql run inside it, against 127.0.0.1: the same major as production, none needed here.
        restoreRunner = containerCluster.runner;
        checkRunner = restoreRunner;
      } else if (!targetConn) {
        const began = Date.now();
        cluster = await startThrowawayCluster({ binDir: settings.postgres.binDir, fast: true, purpose: `drill ${drillId} of ${settings.name}: throwaway cluster restored from backup ${backup!.id}` });
        setupSeconds = (Date.now() - began) / 1000;
        targetConn = withDatabase(cluster.conn, database);
      } else {
        createdTargetDatabase = !(await databaseExists(runner, targetConn));
      }
      checkConn = targetConn;
      try {
        // No ANALYZE: the copy is thrown away, and planner statistics are not among the drill's checks.
        // amcheck runs inside the restore, on each index as pg_restore builds it; its step reports it.
        restoreReport = await restoreIntoFreshDatabase({
          backup: backup!,
          runner: restoreRunner,
          logger,
          target: targetConn,
          jobs: options.jobs ?? 2,
          noOwner: true,
          verifyChecksums: false,
          analyze: false,
          indexCheck: true,
          identity: options.identity,
          progress: options.progress,
          progressPhase: 'drill restore',
        });
      } catch (error) {
        if (isLifelineError(error) && error.kind === 'refused') throw error;
        return { checks: [{ name: 'pg_restore exit', passed: false, detail: (error as Error).message }], fatal: true };
      }
      return { checks: [{ name: 'pg_restore exit', passed: true, detail: `exit 0 in ${formatDuration(restoreReport.restoreSeconds)}` }] };
    },
    'check-data': async () => {
      const r = restoreReport!;
      const mismatches = r.rowCounts.mismatches;
      const session = openCheckSession();
      let head: string | null;
      try {
        head = await migrationHead(session, settings.postgres.migrationHeadQuery);
      } finally {
        await session.close();
      }
      const expectedHead = backup!.metadata.migrationHead;
      return {
        checks: [
          {
            name: 'row counts match backup.json',
            passed: r.rowCounts.ok,
            detail: r.rowCounts.ok
              ? `${r.rowCounts.tables} tables, ${r.rowCounts.rows} rows`
              : mismatches
                  .slice(0, 5)
                  .map((m) => `${m.table}: ${m.actual ?? 'missing'} rows, expected ${m.expected ?? 'none'}`)
                  .join('; '),
          },
          {
            name: 'schema fingerprint matches',
            passed: r.schemaFingerprint.ok,
            detail: r.schemaFingerprint.ok ? r.schemaFingerprint.actual : `${r.schemaFingerprint.actual}, expected ${r.schemaFingerprint.expected}`,
          },
          {
            name: 'migration head matches',
            passed: head === expectedHead,
            detail: head === expectedHead ? (head ?? 'none (no migrations table)') : `${head ?? 'none'}, expected ${expectedHead ?? 'none'}`,
          },
        ],
      };
    },
    'check-indexes': async () => {
      const done = restoreReport?.indexes;
      if (done) return { checks: [{ name: done.name, passed: done.passed, detail: `${done.detail} (checked as pg_restore built them)` }] };
      return { checks: [await checkBtreeIndexes(openCheckSession)] };
    },
    'restore-redis': async () => {
      // Into a private redis-server, never the live one: the snapshot must load and hold its keys.
      const redis = await restoreRedisIsolated(backup!, { binDir: settings.redis?.binDir, logger, image: redisImage, labels: drillLabels, nameSuffix: `${drillId}-redis`, identity: options.identity });
      return { checks: [{ name: 'redis snapshot loads with its keys', passed: redis.ok, detail: redis.detail }] };
    },
    'smoke-queries': async () => {
      const outcomes: CheckOutcome[] = [];
      for (const query of smokeQueries) outcomes.push(await runSmokeQuery(openCheckSession, query));
      return { checks: outcomes };
    },
    'start-app': async () => ({ checks: [await checkApplicationStarts({ settings, catalog, logger, conn: checkConn!, drillId })] }),
  };
  if (smokeQueries.length === 0) delete executors['smoke-queries'];
  const skipReasons: Partial<Record<RunbookStepId, string>> = {};
  if (mode === 'logical' && !backup?.metadata.files.redis) {
    delete executors['restore-redis'];
    skipReasons['restore-redis'] = `backup ${backup?.id} holds no Redis snapshot`;
  }
  if (!settings.drill.appCheck || mode === 'pitr') delete executors['start-app'];

  const steps = restoreSteps(settings, mode);
  try {
    let stopped: string | undefined;
    const performed = steps.filter((step) => executors[step.id]);
    for (const step of steps) {
      const executor = executors[step.id];
      if (executor && !stopped) {
        options.progress?.phase(`drill step ${performed.indexOf(step) + 1}/${performed.length}: ${step.title}`, { unit: 'count', noun: 'steps done', total: performed.length, steps: true });
        options.progress?.update(performed.indexOf(step));
      }
      if (!executor) {
        const why = skipReasons[step.id] ?? step.drillSkips ?? 'not performed by a drill';
        stepRecords.push({ id: step.id, title: step.title, status: 'skipped', detail: why });
        if (step.id === 'smoke-queries' || step.id === 'start-app' || step.id === 'restore-redis') checks.push({ step: step.id, name: step.title, status: 'skipped', detail: why });
        continue;
      }
      if (stopped) {
        stepRecords.push({ id: step.id, title: step.title, status: 'skipped', detail: `not run: ${stopped} failed` });
        checks.push({ step: step.id, name: step.title, status: 'skipped', detail: `not run: ${stopped} failed` });
        continue;
      }
      const began = Date.now();
      let result: StepResult;
      try {
        result = await logger.group(step.title, executor);
      } catch (error) {
        if (isLifelineError(error) && error.kind === 'refused') throw error;
        result = { checks: [{ name: step.title, passed: false, detail: (error as Error).message }], fatal: true };
      }
      const seconds = (Date.now() - began) / 1000;
      if (RTO_STEPS.has(step.id)) phases[step.id] = step.id === 'restore' ? seconds - setupSeconds : seconds;
      for (const c of result.checks) {
        checks.push({ step: step.id, name: c.name, status: c.passed ? 'pass' : 'fail', detail: c.detail });
        logger.info(`${c.passed ? 'ok  ' : 'FAIL'} ${c.name}: ${c.detail}`);
      }
      const failed = result.checks.some((c) => !c.passed);
      stepRecords.push({ id: step.id, title: step.title, status: failed ? 'failed' : 'done', seconds });
      if (result.fatal) stopped = step.id;
    }
  } finally {
    options.progress?.end();
    await pitrCluster?.stop().catch((error) => logger.warn(`could not remove the point-in-time cluster: ${(error as Error).message}`));
    await cluster?.stop().catch((error) => logger.warn(`could not remove the throwaway cluster: ${(error as Error).message}`));
    await containerCluster?.stop().catch((error) => logger.warn(`could not remove the throwaway PostgreSQL container: ${(error as Error).message}`));
    if (createdTargetDatabase && targetConn) await dropDatabase(runner, targetConn, logger);
  }

  const finishedAt = now();
  const rtoPhases = mode === 'pitr' ? { ...phases } : Object.fromEntries(Object.entries(phases).filter(([k]) => RTO_STEPS.has(k as RunbookStepId)));
  if (mode === 'pitr') delete rtoPhases.restore;
  const restoredSomething = stepRecords.some((s) => s.id === 'restore' && s.status === 'done');
  const rtoSeconds = restoredSomething ? round(Object.values(rtoPhases).reduce((a, b) => a + b, 0)) : null;
  const measuredRpo = rpo as RpoMeasure | null;
  const failures = checks.filter((c) => c.status === 'fail').map((c) => `${c.name}: ${c.detail}`);
  const rtoMet = rtoSeconds === null || rtoTarget === null ? null : rtoSeconds <= rtoTarget;
  if (rtoMet === false) failures.push(`RTO ${formatDuration(rtoSeconds!)} missed the target ${formatDuration(rtoTarget!)}`);
  const rpoValue = measuredRpo?.seconds ?? archiveLag?.seconds ?? null;
  const rpoMet = rpoValue === null || rpoTarget === null ? null : rpoValue <= rpoTarget;
  if (rpoMet === false) {
    const m = measuredRpo;
    const which = !m
      ? `the newest archived WAL is ${formatDuration(rpoValue!)} behind the live server`
      : m.backupAgeSeconds > rpoTarget!
        ? `the backup was ${formatDuration(m.backupAgeSeconds)} old`
        : `the largest gap between backups was ${formatDuration(m.largestGapSeconds)} (${m.largestGap.from ?? 'window start'} to ${m.largestGap.to})`;
    failures.push(`RPO missed the target ${formatDuration(rpoTarget!)}: ${which}`);
  }
  if (!restoredSomething && failures.length === 0) failures.push('nothing was restored');

  const { seconds: _measured, ...rpoDetail } = measuredRpo ?? { seconds: null };
  const rpoSeconds = rpoValue;
  const report: DrillReport = {
    schemaVersion: DRILL_REPORT_SCHEMA_VERSION,
    id: drillId,
    createdAt: startedAt.toISOString(),
    finishedAt: finishedAt.toISOString(),
    environment: settings.name,
    mode,
    backup: backup
      ? { id: backup.id, createdAt: backup.metadata.createdAt }
      : pitrCluster
        ? { id: (pitrCluster as PointInTimeCluster).baseBackup.label, createdAt: (pitrCluster as PointInTimeCluster).baseBackup.stoppedAt }
        : null,
    ...(pitrTarget ? { pitrTarget: pitrTarget.text } : {}),
    target:
      targetUrl && mode === 'logical'
        ? { kind: 'url', description: maskedUrl(parsePgUrl(targetUrl)) }
        : {
            kind: 'throwaway-cluster',
            description:
              mode === 'pitr'
                ? 'temporary data directory restored by pgBackRest'
                : pgImage
                  ? `throwaway container of service ${settings.postgres.service}'s image (${pgImage.slice(7, 19)})`
                  : 'throwaway cluster from the local PostgreSQL binaries',
          },
    steps: stepRecords,
    checks,
    rto: { seconds: rtoSeconds, targetSeconds: rtoTarget, met: rtoMet, phases: Object.fromEntries(Object.entries(rtoPhases).map(([k, v]) => [k, round(v)])), setupSeconds: round(setupSeconds) },
    rpo: {
      seconds: rpoSeconds === null ? null : round(rpoSeconds),
      targetSeconds: rpoTarget,
      met: rpoMet,
      detail: measuredRpo ? (rpoDetail as Omit<RpoMeasure, 'seconds'>) : null,
      ...(archiveLag ? { note: archiveLag.note } : {}),
    },
    passed: failures.length === 0,
    failures,
  };
  const history = (await listDrillReports(catalog, settings.name)).map((e) => e.metadata);
  const summary = renderDrillMarkdown(report, history);
  const entry = await saveDrillReport(catalog, report, summary, options.reportSigner);
  return { report, entry, summary };
}

/**
 * Removes what killed drills left running on this host (a throwaway server holding a copy of
 * production, a point-in-time copy, the application container) before this drill starts its own;
 * a drill that still runs keeps its resources. Never fails the drill: what cannot be removed is a
 * warning with the command that removes it.
 */
async function reapDeadDrills(logger: Logger): Promise<void> {
  const reaped = await reapLeftovers();
  for (const line of reaped.removed) logger.info(`removed what a killed drill left: ${line}`);
  for (const line of reaped.failed) logger.warn(`could not remove what a killed drill left: ${line}`);
  // Other processes' clusters (a drill running beside this one, a test suite) are theirs: one line, not one each.
  if (reaped.inUse.length) logger.info(`left alone: ${reaped.inUse.length} drill resource${reaped.inUse.length === 1 ? '' : 's'} of processes that still run (lifeline doctor does not list them)`);
}

/**
 * Where the drill's throwaway PostgreSQL and Redis come from: the Compose services' images when
 * postgres.service / redis.service are set (checked to hold the server binaries), else this
 * host's binaries (checked to exist). Refuses with the fix before anything is restored.
 */
async function throwawaySources(settings: EnvironmentSettings, pgService: ContainerRunner | undefined, hasTarget: boolean, hasRedis: boolean): Promise<{ pgImage?: string; redisImage?: string }> {
  let pgImage: string | undefined;
  if (!hasTarget) {
    if (pgService) pgImage = await drillServerImage(pgService, settings.postgres.service!);
    else if (!findServerBinDir(settings.postgres.binDir)) {
      throw usageError(
        'NO_POSTGRES_SERVER',
        'the drill needs a throwaway PostgreSQL server, and no server binaries (initdb, pg_ctl) are on this host; nothing was restored and no drill report was written',
        "install them (Debian: apt-get install postgresql-15, the major of your backups), set postgres.binDir, set postgres.service so the drill uses the db service's image, or drill into a separate database (drill.targetUrlEnv / --target-env)",
      );
    }
  }
  let redisImage: string | undefined;
  if (hasRedis) {
    if (settings.redis?.service) redisImage = await drillRedisImage(await composeRunner(settings.compose, settings.redis.service), settings.redis.service);
    else if (!findExecutable('redis-server', settings.redis?.binDir ? [settings.redis.binDir] : []) || !findExecutable('redis-check-rdb', settings.redis?.binDir ? [settings.redis.binDir] : [])) {
      throw usageError(
        'NO_REDIS_SERVER',
        'the backup holds a Redis snapshot and the drill loads it into a private redis-server, but redis-server / redis-check-rdb are not on this host; nothing was restored and no drill report was written',
        "install them (Debian: apt-get install redis-server), set redis.binDir, or set redis.service so the drill uses the Redis service's image",
      );
    }
  }
  return { pgImage, redisImage };
}

function round(n: number): number {
  return Math.round(n * 1000) / 1000;
}

async function databaseExists(runner: Runner, conn: PgConnection): Promise<boolean> {
  const maintenance = maintenanceConnection(conn);
  const rows = await queryOnce(runner, maintenance, `SELECT 1 AS present FROM pg_database WHERE datname = ${quoteLiteral(conn.database)}`);
  return rows.length > 0;
}

/** Drops the database the drill created on a given target, so the next drill finds it free. */
async function dropDatabase(runner: Runner, conn: PgConnection, logger: Logger): Promise<void> {
  const maintenance = maintenanceConnection(conn);
  const session = PsqlSession.open(runner, maintenance);
  try {
    await session.exec(`DROP DATABASE IF EXISTS ${quoteIdent(conn.database)} WITH (FORCE)`);
  } catch (error) {
    logger.warn(`could not drop the drill database ${conn.database}: ${(error as Error).message}`);
  } finally {
    await session.close();
  }
}

/**
 * A point-in-time recovery can reach as far as the WAL archive does: the data written on the live
 * server since its last archived segment is what a recovery now would lose. Read from
 * pg_stat_archiver on the live server; a failing archiver is named in the note.
 */
export async function walArchiveLag(runner: Runner, live: PgConnection, now: Date): Promise<{ seconds: number | null; note: string }> {
  try {
    const [row] = await queryOnce<{ archived: string | null; wal: string | null; failed: string | null; failedWal: string | null }>(
      runner,
      live,
      'SELECT last_archived_time::text AS archived, last_archived_wal AS wal, last_failed_time::text AS failed, last_failed_wal AS "failedWal" FROM pg_stat_archiver',
    );
    if (!row?.archived) return { seconds: null, note: 'point-in-time drill: RPO is the WAL archive lag; the live server has archived no WAL yet (pg_stat_archiver)' };
    const seconds = Math.max(0, (now.getTime() - Date.parse(row.archived)) / 1000);
    const failing = row.failed && Date.parse(row.failed) > Date.parse(row.archived) ? `; archiving is FAILING since ${row.failed} (segment ${row.failedWal})` : '';
    return { seconds, note: `point-in-time drill: RPO is the WAL archive lag: the live server last archived ${row.wal} at ${row.archived}${failing}` };
  } catch (error) {
    return { seconds: null, note: `point-in-time drill: RPO is the WAL archive lag; not measured: cannot read pg_stat_archiver on the live server (${(error as Error).message})` };
  }
}
