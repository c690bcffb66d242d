import type { Catalog } from '../catalog/store';
import type { AgeIdentity } from '../crypto/age';
import { usageError } from '../errors';
import type { Logger } from '../logger';
import { environmentConnection } from '../postgres/connection';
import { composeRunner, localPostgresRunner } from '../runner/factory';
import { parseRecoveryTargetTime, requirePhysical } from '../postgres/pgbackrest';
import type { Progress } from '../report/progress';
import { reapLeftovers } from '../runner/leftovers';
import type { Runner } from '../runner/runner';
import type { EnvironmentSettings } from '../settings/resolve';
import { assembleDrillReport } from './assemble';
import { runLogicalDrill } from './logical';
import { runPointInTimeDrill } from './pitr';
import { listDrillReports, newDrillId, renderDrillMarkdown, saveDrillReport, type DrillReport, type DrillReportSigner, type SavedDrillReport } from './report';
import { readSmokeFile, type SmokeQuery } from './smoke';
import type { DrillContext, DrillRun } from './steps';

/** Read by `lifeline metrics` too (the WAL archive lag of a point-in-time recovery). */
export { walArchiveLag } from './pitr';

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

  const ctx: DrillContext = { settings, catalog, logger, progress: options.progress, drillId, startedAt, runner, pgService, live, smokeQueries };
  const run: DrillRun = pitrTarget
    ? await runPointInTimeDrill(ctx, pitrTarget)
    : await runLogicalDrill(ctx, { backup: options.backup ?? 'latest', targetUrl, jobs: options.jobs, identity: options.identity });

  const report = assembleDrillReport({ id: drillId, environment: settings.name, startedAt, finishedAt: now(), rtoTargetSeconds: rtoTarget, rpoTargetSeconds: rpoTarget }, run);
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
