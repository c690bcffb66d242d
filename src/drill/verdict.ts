import { formatDuration } from '../settings/duration';
import type { DrillCheck } from './report';
import type { RpoMeasure } from './rpo';

/** What a drill measured and checked: everything its verdict depends on, and nothing else. */
export interface VerdictInputs {
  checks: readonly Pick<DrillCheck, 'name' | 'status' | 'detail'>[];
  /** The restore step finished (a database was restored and checked). */
  restored: boolean;
  /** The measured RTO (null when nothing was restored) and its target (null without one). */
  rto: { seconds: number | null; targetSeconds: number | null };
  /**
   * The measured RPO and its target. `backups` is the measure over the catalog's backups (logical
   * drills); without it, `seconds` is the WAL archive lag of a point-in-time drill.
   */
  rpo: { seconds: number | null; targetSeconds: number | null; backups: RpoMeasure | null };
}

export interface DrillVerdict {
  passed: boolean;
  /** One line per reason the drill failed; empty when it passed. */
  failures: string[];
  /** null when there is no target to compare with, or nothing was measured. */
  rtoMet: boolean | null;
  rpoMet: boolean | null;
}

/**
 * The drill's verdict: it passes when every check passed, a database was restored, and each
 * measured objective is within its target. Pure: the same inputs always give the same reasons.
 */
export function drillVerdict(inputs: VerdictInputs): DrillVerdict {
  const failures = inputs.checks.filter((c) => c.status === 'fail').map((c) => `${c.name}: ${c.detail}`);
  const rto = inputs.rto;
  const rtoMet = rto.seconds === null || rto.targetSeconds === null ? null : rto.seconds <= rto.targetSeconds;
  if (rto.seconds !== null && rto.targetSeconds !== null && rtoMet === false) failures.push(`RTO ${formatDuration(rto.seconds)} missed the target ${formatDuration(rto.targetSeconds)}`);
  const rpo = inputs.rpo;
  const rpoMet = rpo.seconds === null || rpo.targetSeconds === null ? null : rpo.seconds <= rpo.targetSeconds;
  if (rpo.seconds !== null && rpo.targetSeconds !== null && rpoMet === false) {
    const m = rpo.backups;
    const which = !m
      ? `the newest archived WAL is ${formatDuration(rpo.seconds)} behind the live server`
      : m.backupAgeSeconds > rpo.targetSeconds
        ? `the backup was ${formatDuration(m.backupAgeSeconds)} old`
        : `the largest gap between backups was ${formatDuration(m.largestGapSeconds)} (${m.largestGap.from ?? 'window start'} to ${m.largestGap.to})`;
    failures.push(`RPO missed the target ${formatDuration(rpo.targetSeconds)}: ${which}`);
  }
  if (!inputs.restored && failures.length === 0) failures.push('nothing was restored');
  return { passed: failures.length === 0, failures, rtoMet, rpoMet };
}
