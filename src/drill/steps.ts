import { isLifelineError } from '../errors';
import type { Logger } from '../logger';
import type { Catalog } from '../catalog/store';
import type { Progress } from '../report/progress';
import type { PgConnection } from '../runner/postgres-env';
import type { ContainerRunner, Runner } from '../runner/runner';
import type { EnvironmentSettings } from '../settings/resolve';
import type { CheckOutcome } from './checks';
import type { DrillCheck, DrillReport, DrillStepRecord } from './report';
import type { RpoMeasure } from './rpo';
import type { RunbookStep, RunbookStepId } from './runbook';
import type { SmokeQuery } from './smoke';

/** What both kinds of drill share, decided before either starts. */
export interface DrillContext {
  settings: EnvironmentSettings;
  catalog: Catalog;
  logger: Logger;
  progress?: Progress;
  drillId: string;
  startedAt: Date;
  /** The PostgreSQL client tools: in the db service's container (postgres.service), else on this host. */
  runner: Runner;
  /** The db service's container, with postgres.service. */
  pgService?: ContainerRunner;
  /** The environment's live database, when a URL is configured (never restored into). */
  live?: PgConnection;
  smokeQueries: SmokeQuery[];
}

/** What one drill run (logical or point-in-time) did and measured: everything its report is assembled from. */
export interface DrillRun<R = unknown> {
  mode: DrillReport['mode'];
  /** The logical backup restored, or the pgBackRest base backup; null when none was reached. */
  backup: DrillReport['backup'];
  pitrTarget?: string;
  target: DrillReport['target'];
  performed: PerformedSteps<R>;
  /** The phases RTO adds up, unrounded. */
  rtoPhases: Record<string, number>;
  /** The measured RPO (unrounded), the measure over the catalog's backups (logical drills), and a note (point-in-time drills). */
  rpo: { seconds: number | null; backups: RpoMeasure | null; note?: string };
}

/** What one step produced: its checks, and whether later steps can still run. */
export interface StepResult {
  checks: CheckOutcome[];
  /** A failure that leaves nothing for later steps to look at (no restored database). */
  fatal?: boolean;
}

/**
 * What the restore step produced: the restored database for the steps after it, or a fatal
 * failure. `setupSeconds` is the drill's own set-up inside the step (starting a throwaway server),
 * not part of a real restore's RTO; `phases` are its parts that RTO adds up.
 */
export type RestoreStepResult<R> = ((StepResult & { fatal: true; restored?: undefined }) | { checks: CheckOutcome[]; fatal?: false; restored: R }) & {
  setupSeconds?: number;
  phases?: Record<string, number>;
};

/** The steps one drill performs, by runbook step id; every other step of the runbook is recorded as skipped. */
export interface DrillPlan<R> {
  steps: RunbookStep[];
  /** Steps before the restore (select, verify). */
  before: Partial<Record<RunbookStepId, () => Promise<StepResult>>>;
  restore: () => Promise<RestoreStepResult<R>>;
  /** Steps after the restore, handed the restored database. */
  after: Partial<Record<RunbookStepId, (restored: R) => Promise<StepResult>>>;
  /** Why a step the drill could perform is skipped this time (default: the runbook's drillSkips). */
  skipReasons?: Partial<Record<RunbookStepId, string>>;
}

export interface PerformedSteps<R> {
  steps: DrillStepRecord[];
  checks: DrillCheck[];
  /** Seconds per RTO step (restore without the set-up), plus the restore's own phases. */
  phases: Record<string, number>;
  setupSeconds: number;
  /** The restored database, when the restore step finished. */
  restored?: R;
}

/** Phases that make up RTO: what a real restore would spend, not the drill's own set-up. */
export const RTO_STEPS = new Set<RunbookStepId>(['verify-backup', 'restore', 'check-data', 'check-indexes', 'restore-redis', 'smoke-queries', 'start-app']);

/** Steps whose skipping is itself recorded as a (skipped) check, so the report says what was not looked at. */
const SKIPPED_AS_CHECK = new Set<RunbookStepId>(['smoke-queries', 'start-app', 'restore-redis']);

/**
 * Walks the runbook's steps in order, performing the plan's: each inside a logger group, its checks
 * logged and recorded, its time measured. A fatal result skips every later step; a refusal (exit 3)
 * is thrown as it is, any other error fails the step fatally.
 */
export async function performSteps<R>(plan: DrillPlan<R>, logger: Logger, progress: Progress | undefined): Promise<PerformedSteps<R>> {
  const out: PerformedSteps<R> = { steps: [], checks: [], phases: {}, setupSeconds: 0 };
  const has = (id: RunbookStepId) => id === 'restore' || Boolean(plan.before[id] ?? plan.after[id]);
  try {
    let stopped: string | undefined;
    const performed = plan.steps.filter((step) => has(step.id));
    for (const step of plan.steps) {
      if (!has(step.id)) {
        const why = plan.skipReasons?.[step.id] ?? step.drillSkips ?? 'not performed by a drill';
        out.steps.push({ id: step.id, title: step.title, status: 'skipped', detail: why });
        if (SKIPPED_AS_CHECK.has(step.id)) out.checks.push({ step: step.id, name: step.title, status: 'skipped', detail: why });
        continue;
      }
      const restored = out.restored;
      const before = plan.before[step.id];
      const after = plan.after[step.id];
      const restore = async (): Promise<StepResult> => {
        const result = await plan.restore();
        if (result.restored !== undefined) out.restored = result.restored;
        out.setupSeconds = result.setupSeconds ?? 0;
        Object.assign(out.phases, result.phases);
        return result;
      };
      // A step after the restore runs on the restored database, so only once there is one.
      const executor = step.id === 'restore' ? restore : (before ?? (after && restored !== undefined ? () => after(restored) : undefined));
      const blockedBy = stopped ?? (executor ? undefined : 'restore');
      if (blockedBy || !executor) {
        out.steps.push({ id: step.id, title: step.title, status: 'skipped', detail: `not run: ${blockedBy} failed` });
        out.checks.push({ step: step.id, name: step.title, status: 'skipped', detail: `not run: ${blockedBy} failed` });
        continue;
      }
      progress?.phase(`drill step ${performed.indexOf(step) + 1}/${performed.length}: ${step.title}`, { unit: 'count', noun: 'steps done', total: performed.length, steps: true });
      progress?.update(performed.indexOf(step));
      const began = Date.now();
      let result: StepResult;
      try {
        result = await logger.group(step.title, executor);
      } catch (error) {
        if (isLifelineError(error) && error.kind === 'refused') throw error;
        result = { checks: [{ name: step.title, passed: false, detail: (error as Error).message }], fatal: true };
      }
      const seconds = (Date.now() - began) / 1000;
      if (RTO_STEPS.has(step.id)) out.phases[step.id] = step.id === 'restore' ? seconds - out.setupSeconds : seconds;
      for (const c of result.checks) {
        out.checks.push({ step: step.id, name: c.name, status: c.passed ? 'pass' : 'fail', detail: c.detail });
        logger.info(`${c.passed ? 'ok  ' : 'FAIL'} ${c.name}: ${c.detail}`);
      }
      const failed = result.checks.some((c) => !c.passed);
      out.steps.push({ id: step.id, title: step.title, status: failed ? 'failed' : 'done', seconds });
      if (result.fatal) stopped = step.id;
    }
  } finally {
    progress?.end();
  }
  return out;
}
