import { DRILL_REPORT_SCHEMA_VERSION, type DrillReport } from './report';
import type { RpoMeasure } from './rpo';
import type { DrillRun } from './steps';
import { drillVerdict } from './verdict';

export interface ReportFacts {
  id: string;
  environment: string;
  startedAt: Date;
  finishedAt: Date;
  rtoTargetSeconds: number | null;
  rpoTargetSeconds: number | null;
}

/** The drill report (report.json) from what the run did and measured, with its verdict. */
export function assembleDrillReport(facts: ReportFacts, run: DrillRun): DrillReport {
  const { performed } = run;
  const restored = performed.steps.some((s) => s.id === 'restore' && s.status === 'done');
  const rtoSeconds = restored ? round(Object.values(run.rtoPhases).reduce((a, b) => a + b, 0)) : null;
  const verdict = drillVerdict({
    checks: performed.checks,
    restored,
    rto: { seconds: rtoSeconds, targetSeconds: facts.rtoTargetSeconds },
    rpo: { seconds: run.rpo.seconds, targetSeconds: facts.rpoTargetSeconds, backups: run.rpo.backups },
  });
  return {
    schemaVersion: DRILL_REPORT_SCHEMA_VERSION,
    id: facts.id,
    createdAt: facts.startedAt.toISOString(),
    finishedAt: facts.finishedAt.toISOString(),
    environment: facts.environment,
    mode: run.mode,
    backup: run.backup,
    ...(run.pitrTarget ? { pitrTarget: run.pitrTarget } : {}),
    target: run.target,
    steps: performed.steps,
    checks: performed.checks,
    rto: {
      seconds: rtoSeconds,
      targetSeconds: facts.rtoTargetSeconds,
      met: verdict.rtoMet,
      phases: Object.fromEntries(Object.entries(run.rtoPhases).map(([k, v]) => [k, round(v)])),
      setupSeconds: round(performed.setupSeconds),
    },
    rpo: {
      seconds: run.rpo.seconds === null ? null : round(run.rpo.seconds),
      targetSeconds: facts.rpoTargetSeconds,
      met: verdict.rpoMet,
      detail: run.rpo.backups ? rpoDetail(run.rpo.backups) : null,
      ...(run.rpo.note !== undefined ? { note: run.rpo.note } : {}),
    },
    passed: verdict.passed,
    failures: verdict.failures,
  };
}

/** The RPO measure without its headline seconds, which the report holds beside it. */
function rpoDetail(measure: RpoMeasure): Omit<RpoMeasure, 'seconds'> {
  const { seconds: _seconds, ...detail } = measure;
  return detail;
}

function round(n: number): number {
  return Math.round(n * 1000) / 1000;
}
