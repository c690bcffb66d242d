import type { BackupMetadata } from '../postgres/metadata';
import { renderMarkdownTable, renderTextTable, type Table } from '../report/table';
import { formatDuration } from '../settings/duration';
import type { DrillReport } from './report';

export interface GateInputs {
  environment: string;
  /** The environment's drill reports, newest first. */
  drills: DrillReport[];
  /** The environment's backups, newest first. */
  backups: BackupMetadata[];
  maxDrillAgeSeconds: number;
  rpoSeconds?: number;
  rtoSeconds?: number;
  now: Date;
}

export interface GateCheck {
  name: string;
  value: string;
  limit: string;
  passed: boolean;
  /** The one-line reason, when it failed. */
  reason?: string;
}

export interface GateResult {
  environment: string;
  passed: boolean;
  checks: GateCheck[];
  reasons: string[];
  newestDrillId: string | null;
  newestVerifiedBackupId: string | null;
}

const ageOf = (iso: string, now: Date) => (now.getTime() - Date.parse(iso)) / 1000;

/**
 * A backup counts as verified when `lifeline verify` recorded it intact, or when a passing drill
 * restored it (the drill verified its checksums and its contents).
 */
function newestVerifiedBackup(backups: BackupMetadata[], drills: DrillReport[]): BackupMetadata | undefined {
  const drilled = new Set(drills.filter((d) => d.passed && d.mode === 'logical' && d.backup).map((d) => d.backup!.id));
  return backups.find((b) => (b.verified ? b.verified.ok : drilled.has(b.id)));
}

/** The release gate: fails closed, one reason per failed check, and every check is shown either way. */
export function evaluateGate(inputs: GateInputs): GateResult {
  const { environment: env, now } = inputs;
  const checks: GateCheck[] = [];
  const add = (check: GateCheck) => checks.push(check);
  const drill = inputs.drills[0];

  if (!drill) {
    add({ name: 'newest drill passed', value: 'no drill', limit: 'a passing drill', passed: false, reason: `no restore drill has run for ${env}: run lifeline drill --env ${env}` });
    add({ name: 'newest drill age', value: 'no drill', limit: `<= ${formatDuration(inputs.maxDrillAgeSeconds)}`, passed: false, reason: `no drill within ${formatDuration(inputs.maxDrillAgeSeconds)} for ${env}` });
  } else {
    add({
      name: 'newest drill passed',
      value: `${drill.id}: ${drill.passed ? 'passed' : 'failed'}`,
      limit: 'passed',
      passed: drill.passed,
      reason: drill.passed ? undefined : `the newest drill ${drill.id} failed: ${drill.failures[0] ?? 'see its report'}${drill.failures.length > 1 ? ` (+${drill.failures.length - 1} more)` : ''}`,
    });
    const age = ageOf(drill.createdAt, now);
    const fresh = age <= inputs.maxDrillAgeSeconds;
    add({
      name: 'newest drill age',
      value: formatDuration(age),
      limit: `<= ${formatDuration(inputs.maxDrillAgeSeconds)}`,
      passed: fresh,
      reason: fresh ? undefined : `the newest drill ${drill.id} is ${formatDuration(age)} old; the limit is ${formatDuration(inputs.maxDrillAgeSeconds)}`,
    });
  }

  const verified = newestVerifiedBackup(inputs.backups, inputs.drills);
  if (inputs.rpoSeconds === undefined) {
    add({ name: 'newest verified backup age', value: verified ? formatDuration(ageOf(verified.createdAt, now)) : 'none', limit: 'no RPO target', passed: false, reason: `no RPO target for ${env}: set rpo: in lifeline.yml or pass --rpo` });
  } else if (!verified) {
    add({ name: 'newest verified backup age', value: 'none', limit: `<= ${formatDuration(inputs.rpoSeconds)}`, passed: false, reason: `${env} has no verified backup: run lifeline verify latest --env ${env} or lifeline drill --env ${env}` });
  } else {
    const age = ageOf(verified.createdAt, now);
    const ok = age <= inputs.rpoSeconds;
    add({
      name: 'newest verified backup age',
      value: `${formatDuration(age)} (${verified.id})`,
      limit: `<= ${formatDuration(inputs.rpoSeconds)} (RPO)`,
      passed: ok,
      reason: ok ? undefined : `the newest verified backup ${verified.id} is ${formatDuration(age)} old; the RPO target is ${formatDuration(inputs.rpoSeconds)}`,
    });
  }

  if (inputs.rtoSeconds === undefined) {
    add({ name: 'newest drill RTO', value: drill?.rto.seconds != null ? formatDuration(drill.rto.seconds) : 'none', limit: 'no RTO target', passed: false, reason: `no RTO target for ${env}: set rto: in lifeline.yml or pass --rto` });
  } else if (!drill || drill.rto.seconds === null) {
    add({ name: 'newest drill RTO', value: 'not measured', limit: `<= ${formatDuration(inputs.rtoSeconds)}`, passed: false, reason: `no drill of ${env} measured an RTO` });
  } else {
    const ok = drill.rto.seconds <= inputs.rtoSeconds;
    add({
      name: 'newest drill RTO',
      value: formatDuration(drill.rto.seconds),
      limit: `<= ${formatDuration(inputs.rtoSeconds)}`,
      passed: ok,
      reason: ok ? undefined : `the newest drill's RTO was ${formatDuration(drill.rto.seconds)}; the target is ${formatDuration(inputs.rtoSeconds)}`,
    });
  }

  const reasons = checks.filter((c) => !c.passed).map((c) => c.reason!);
  return { environment: env, passed: reasons.length === 0, checks, reasons, newestDrillId: drill?.id ?? null, newestVerifiedBackupId: verified?.id ?? null };
}

export function gateTable(result: GateResult): Table {
  return { headers: ['check', 'value', 'limit', 'result'], rows: result.checks.map((c) => [c.name, c.value, c.limit, c.passed ? 'pass' : 'FAIL']) };
}

export function renderGateText(result: GateResult): string {
  return [`release gate for ${result.environment}: ${result.passed ? 'PASSED' : 'FAILED'}`, '', renderTextTable(gateTable(result)), ...(result.reasons.length ? ['', ...result.reasons.map((r) => `FAIL: ${r}`)] : [])].join('\n');
}

export function renderGateMarkdown(result: GateResult): string {
  return [`## Release gate ${result.passed ? 'passed' : 'FAILED'}: ${result.environment}`, '', renderMarkdownTable(gateTable(result)), ...(result.reasons.length ? ['', ...result.reasons.map((r) => `- ${r}`)] : []), ''].join('\n');
}
