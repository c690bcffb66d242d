import type { AgeIdentity } from '../crypto/age';
import { requireIdentityFor } from '../crypto/payload';
import { isLifelineError } from '../errors';
import { findBackup, listBackups, type BackupEntry } from '../backup/metadata';
import { restoreIntoFreshDatabase, type RestoreCheckReport } from '../backup/restore';
import { restoreRedisIsolated } from '../backup/redis-isolated';
import { verifyBackup } from '../backup/verify';
import { maskedUrl } from '../postgres/connection';
import { parsePgUrl, type PgConnection } from '../runner/postgres-env';
import { PsqlSession } from '../runner/psql';
import type { Runner } from '../runner/runner';
import { formatDuration } from '../settings/duration';
import { checkApplicationStarts } from './app-check';
import { checkIndexes, checkRestoredData, runSmokeQueries } from './checks';
import { assertIsolatedTarget } from './isolation';
import type { DrillReport } from './report';
import { measureRpo, type RpoMeasure } from './rpo';
import { restoreSteps, type RunbookStepId } from './runbook';
import { performSteps, RTO_STEPS, type DrillContext, type DrillPlan, type DrillRun, type PerformedSteps, type RestoreStepResult, type StepResult } from './steps';
import { prepareIsolatedTarget, removeIsolatedTarget, throwawaySources, type IsolatedTarget } from './target';

export interface LogicalDrillOptions {
  /** Backup id or `latest`. */
  backup: string;
  /** A given isolated database (the flag, else drill.targetUrl); without one, a throwaway server. */
  targetUrl?: string;
  jobs?: number;
  identity?: AgeIdentity;
}

/** The restored database the checks after the restore look at. */
interface LogicalRestore {
  conn: PgConnection;
  runner: Runner;
  report: RestoreCheckReport;
}

/**
 * A logical drill: the backup's dump restored by pg_restore into an isolated database (a
 * throwaway container or cluster, or a given database that is not the live one), then checked
 * against what backup.json recorded. Refusals (exit 3) and set-up that cannot work (exit 2) are
 * thrown before anything is restored.
 */
export async function runLogicalDrill(ctx: DrillContext, options: LogicalDrillOptions): Promise<DrillRun<LogicalRestore>> {
  const { settings, catalog, logger, runner, live, drillId } = ctx;
  const backup = await findBackup(catalog, settings.name, options.backup);
  // An encrypted backup without its identity (exit 2) or with a foreign one (exit 1): nothing is started.
  requireIdentityFor([backup.metadata.files.postgres, backup.metadata.files.redis], options.identity, `backup ${backup.id}`);
  const targetConn = options.targetUrl ? parsePgUrl(options.targetUrl) : undefined;
  if (targetConn) await assertIsolatedTarget(live, targetConn, runner, logger);
  const database = backup.metadata.database ?? settings.postgres.database ?? live?.database ?? 'postgres';
  // What the throwaway servers come from, decided before anything is written: a drill that cannot
  // start them is refused (exit 2) with the fix, never a failed report that would fail the gate.
  const { pgImage, redisImage } = await throwawaySources(settings, ctx.pgService, Boolean(targetConn), Boolean(backup.metadata.files.redis));
  const labels = { 'lifeline.drill': drillId, 'lifeline.drill.environment': settings.name };

  /** Measured in the select-backup step; stays null when that step failed. */
  const measured: { rpo: RpoMeasure | null } = { rpo: null };
  let target: IsolatedTarget | undefined;
  const restore = async (): Promise<RestoreStepResult<LogicalRestore>> => {
    const prepared = await prepareIsolatedTarget({ settings, drillId, backupId: backup.id, database, labels, pgImage, targetConn, runner });
    target = prepared.target;
    const { conn, setupSeconds } = prepared;
    let report: RestoreCheckReport;
    try {
      // No ANALYZE: the copy is thrown away, and planner statistics are not among the drill's checks.
      // amcheck runs inside the restore, on each index as pg_restore builds it; its step reports it.
      report = await restoreIntoFreshDatabase({
        backup,
        runner: prepared.runner,
        logger,
        target: conn,
        jobs: options.jobs ?? 2,
        noOwner: true,
        verifyChecksums: false,
        analyze: false,
        indexCheck: true,
        identity: options.identity,
        progress: ctx.progress,
        progressPhase: 'drill restore',
      });
    } catch (error) {
      if (isLifelineError(error) && error.kind === 'refused') throw error;
      return { checks: [{ name: 'pg_restore exit', passed: false, detail: (error as Error).message }], fatal: true, setupSeconds };
    }
    return {
      checks: [{ name: 'pg_restore exit', passed: true, detail: `exit 0 in ${formatDuration(report.restoreSeconds)}` }],
      restored: { conn, runner: prepared.runner, report },
      setupSeconds,
    };
  };
  const open = (restored: LogicalRestore) => () => PsqlSession.open(restored.runner, restored.conn);

  const after: DrillPlan<LogicalRestore>['after'] = {
    'check-data': async (restored) => ({ checks: await checkRestoredData(open(restored), restored.report, settings.postgres.migrationHeadQuery, backup.metadata.migrationHead) }),
    'check-indexes': async (restored) => ({ checks: await checkIndexes(open(restored), restored.report.indexes) }),
    'restore-redis': async () => {
      // Into a private redis-server, never the live one: the snapshot must load and hold its keys.
      const redis = await restoreRedisIsolated(backup, { binDir: settings.redis?.binDir, logger, image: redisImage, labels, nameSuffix: `${drillId}-redis`, identity: options.identity });
      return { checks: [{ name: 'redis snapshot loads with its keys', passed: redis.ok, detail: redis.detail }] };
    },
  };
  if (ctx.smokeQueries.length > 0) after['smoke-queries'] = async (restored) => ({ checks: await runSmokeQueries(open(restored), ctx.smokeQueries) });
  if (settings.drill.appCheck) after['start-app'] = async (restored) => ({ checks: [await checkApplicationStarts({ settings, catalog, logger, conn: restored.conn, drillId })] });
  const skipReasons: Partial<Record<RunbookStepId, string>> = {};
  if (!backup.metadata.files.redis) {
    delete after['restore-redis'];
    skipReasons['restore-redis'] = `backup ${backup.id} holds no Redis snapshot`;
  }

  const plan: DrillPlan<LogicalRestore> = {
    steps: restoreSteps(settings, 'logical'),
    before: {
      'select-backup': async () => {
        const rpo = await measureBackupRpo(ctx, backup);
        measured.rpo = rpo;
        return { checks: [{ name: 'backup chosen', passed: true, detail: `${backup.id}, taken ${backup.metadata.createdAt} (${formatDuration(rpo.backupAgeSeconds)} old)` }] };
      },
      'verify-backup': () => verifyChecksums(backup, runner, ctx),
    },
    restore,
    after,
    skipReasons,
  };
  let performed: PerformedSteps<LogicalRestore>;
  try {
    performed = await performSteps(plan, logger, ctx.progress);
  } finally {
    if (target) await removeIsolatedTarget(target, runner, logger);
  }
  return {
    mode: 'logical',
    backup: { id: backup.id, createdAt: backup.metadata.createdAt },
    target: describeTarget(ctx, options.targetUrl, pgImage),
    performed,
    rtoPhases: Object.fromEntries(Object.entries(performed.phases).filter(([k]) => RTO_STEPS.has(k as RunbookStepId))),
    rpo: { seconds: measured.rpo?.seconds ?? null, backups: measured.rpo },
  };
}

/** RPO from the catalog: the drilled backup's age and the largest gap between usable backups in the window. */
async function measureBackupRpo(ctx: DrillContext, backup: BackupEntry): Promise<RpoMeasure> {
  const all = await listBackups(ctx.catalog, ctx.settings.name);
  return measureRpo(
    all.map((b) => ({ id: b.id, createdAt: b.metadata.createdAt, usable: b.metadata.verified?.ok !== false })),
    backup.metadata.createdAt,
    ctx.startedAt,
    ctx.settings.drill.windowSeconds,
  );
}

async function verifyChecksums(backup: BackupEntry, runner: Runner, ctx: DrillContext): Promise<StepResult> {
  const report = await verifyBackup(backup, { runner, logger: ctx.logger, checksumsOnly: true });
  const failed = report.checks.filter((c) => !c.ok);
  return {
    checks: [{ name: 'checksums', passed: report.ok, detail: report.ok ? `${report.checks.length} files match SHA256SUMS` : failed.map((c) => `${c.name}: ${c.detail}`).join('; ') }],
    fatal: !report.ok,
  };
}

/** The report's target: the given database (password masked), or what the throwaway server came from. */
function describeTarget(ctx: DrillContext, targetUrl: string | undefined, pgImage: string | undefined): DrillReport['target'] {
  if (targetUrl) return { kind: 'url', description: maskedUrl(parsePgUrl(targetUrl)) };
  return {
    kind: 'throwaway-cluster',
    description: pgImage ? `throwaway container of service ${ctx.settings.postgres.service}'s image (${pgImage.slice(7, 19)})` : 'throwaway cluster from the local PostgreSQL binaries',
  };
}
