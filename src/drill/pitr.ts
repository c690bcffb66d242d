import { localPostgresRunner } from '../runner/factory';
import { requirePhysical, stanzaInfo, type StanzaInfo } from '../postgres/pgbackrest';
import { restorePointInTime, type PointInTimeCluster } from '../postgres/pitr';
import { withDatabase, type PgConnection } from '../runner/postgres-env';
import { PsqlSession, queryOnce } from '../runner/psql';
import type { Runner } from '../runner/runner';
import { checkIndexes, runSmokeQueries } from './checks';
import { restoreSteps } from './runbook';
import { performSteps, type DrillContext, type DrillPlan, type DrillRun, type PerformedSteps, type RestoreStepResult, type StepResult } from './steps';

/** The recovery target, as parsed from --pitr. */
export interface PitrTarget {
  text: string;
  at: Date;
}

/** The point-in-time copy the checks after the restore look at. */
interface PointInTimeRestore {
  conn: PgConnection;
  runner: Runner;
}

/** Point-in-time drills: how far behind the live server the WAL archive is (what a recovery now would lose). */
export interface ArchiveLag {
  seconds: number | null;
  note: string;
}

/**
 * A point-in-time drill: pgBackRest restores the newest base backup that finished before the
 * target into a temporary data directory and replays WAL up to the target; the copy is checked
 * (indexes, smoke queries) and removed. RPO is the live server's WAL archive lag.
 */
export async function runPointInTimeDrill(ctx: DrillContext, pitrTarget: PitrTarget): Promise<DrillRun<PointInTimeRestore>> {
  const { settings, logger, runner, live, startedAt } = ctx;
  const database = settings.postgres.database ?? live?.database ?? 'postgres';
  /** Read in the select-backup step, which the restore step needs to have passed. */
  const selected: { stanza?: StanzaInfo; archiveLag?: ArchiveLag } = {};
  let cluster: PointInTimeCluster | undefined;

  const selectBackup = async (): Promise<StepResult> => {
    const info = await stanzaInfo(requirePhysical(settings));
    selected.stanza = info;
    selected.archiveLag = live
      ? await walArchiveLag(runner, live, startedAt)
      : { seconds: null, note: 'point-in-time drill: RPO is the WAL archive lag; not measured, as no live database URL is configured to read pg_stat_archiver from' };
    const usable = info.backups.filter((b) => Date.parse(b.stoppedAt) <= pitrTarget.at.getTime());
    const base = usable[usable.length - 1];
    return {
      checks: [
        {
          name: 'base backup before the target',
          passed: Boolean(base),
          detail: base ? `${base.label} (${base.type}, finished ${base.stoppedAt})` : `no backup of stanza ${info.stanza} finished before ${pitrTarget.text}`,
        },
      ],
      fatal: !base,
    };
  };
  const restore = async (): Promise<RestoreStepResult<PointInTimeRestore>> => {
    const recovered = await restorePointInTime(settings, pitrTarget.text, logger, { database, binDir: settings.postgres.binDir, info: selected.stanza });
    cluster = recovered;
    const replayed = recovered.lastReplayedCommit;
    const withinTarget = replayed === null || Date.parse(replayed) <= pitrTarget.at.getTime() + 1;
    return {
      checks: [
        { name: 'pgbackrest restore exit', passed: true, detail: `exit 0, base backup ${recovered.baseBackup.label}` },
        { name: 'recovery finished and promoted', passed: true, detail: 'pg_is_in_recovery() is false' },
        { name: 'recovered up to the target, not past it', passed: withinTarget, detail: `last replayed commit ${replayed ?? '(none after the base backup)'}; target ${pitrTarget.text}` },
      ],
      restored: { conn: withDatabase(recovered.conn, database), runner: localPostgresRunner(recovered.cluster.binDir) },
      phases: { 'pgbackrest restore': recovered.restoreSeconds, 'start-up and WAL replay': recovered.recoverySeconds },
    };
  };
  const open = (restored: PointInTimeRestore) => () => PsqlSession.open(restored.runner, restored.conn);
  const after: DrillPlan<PointInTimeRestore>['after'] = {
    'check-indexes': async (restored) => ({ checks: await checkIndexes(open(restored), undefined) }),
  };
  if (ctx.smokeQueries.length > 0) after['smoke-queries'] = async (restored) => ({ checks: await runSmokeQueries(open(restored), ctx.smokeQueries) });

  const plan: DrillPlan<PointInTimeRestore> = { steps: restoreSteps(settings, 'pitr'), before: { 'select-backup': selectBackup }, restore, after };
  let performed: PerformedSteps<PointInTimeRestore>;
  try {
    performed = await performSteps(plan, logger, ctx.progress);
  } finally {
    await cluster?.stop().catch((error) => logger.warn(`could not remove the point-in-time cluster: ${(error as Error).message}`));
  }
  const rtoPhases = { ...performed.phases };
  // The restore step's time is counted through its parts (pgBackRest's restore, then start-up and WAL replay).
  delete rtoPhases.restore;
  const base = cluster?.baseBackup;
  const archiveLag = selected.archiveLag;
  return {
    mode: 'pitr',
    backup: base ? { id: base.label, createdAt: base.stoppedAt } : null,
    pitrTarget: pitrTarget.text,
    target: { kind: 'throwaway-cluster', description: 'temporary data directory restored by pgBackRest' },
    performed,
    rtoPhases,
    rpo: { seconds: archiveLag?.seconds ?? null, backups: null, ...(archiveLag ? { note: archiveLag.note } : {}) },
  };
}

/**
 * A point-in-time recovery can reach as far as the WAL archive does: the data written on the live
 * server since its last archived segment is what a recovery now would lose. Read from
 * pg_stat_archiver on the live server; a failing archiver is named in the note.
 */
export async function walArchiveLag(runner: Runner, live: PgConnection, now: Date): Promise<ArchiveLag> {
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
