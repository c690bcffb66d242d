import { access, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Catalog } from '../catalog/store';
import { checkSums, parseSums, SUMS_FILE } from '../catalog/sums';
import { isLifelineError } from '../errors';
import type { VerificationPolicy } from '../manifest/types';
import { verifySignedFile } from '../manifest/verify';
import { BACKUP_METADATA_FILE, POSTGRES_ARCHIVE_FILE, type BackupMetadata } from '../backup/metadata';
import { renderMarkdownTable, renderTextTable, type Table } from '../report/table';
import { formatDuration } from '../settings/duration';
import { DRILL_BUNDLE_FILE, DRILL_REPORT_FILE, DRILL_REPORT_PAYLOAD_TYPE, drillIdTime, listDrillEntries, listDrillReports, type DamagedDrillEntry, type DrillEntry, type DrillReport } from './report';

/** How far in the future a timestamp may be before it counts as forged or a broken clock. */
export const CLOCK_SKEW_SECONDS = 300;

/** What the gate found when it re-checked the drill it relies on (gathered by `gatherGateInputs`). */
export interface NewestDrillEvidence {
  /** report.json and every file SHA256SUMS lists, re-hashed; report.json must be listed. */
  integrity: { ok: boolean; detail: string };
  /** The report's signature under the manifest policy; null when no policy is configured. */
  signature: { ok: boolean; detail: string } | null;
  /** The drilled backup, still in the catalog and matching its SHA256SUMS; null for a point-in-time drill (pgBackRest keeps its backups). */
  backup: { ok: boolean; detail: string } | null;
}

export interface GateInputs {
  environment: string;
  /** The environment's drill reports as the catalog lists them (directory name and report.json), newest first. */
  drills: Pick<DrillEntry, 'id' | 'metadata'>[];
  /**
   * Drill entry directories whose report.json cannot be read (`listDrillEntries`). One as new as
   * the newest believable drill, or newer, fails the gate: it may be a failed drill someone damaged.
   */
  damaged?: DamagedDrillEntry[];
  /** The re-checks of the drill `chooseNewestDrill` picks; without them that drill fails the integrity checks. */
  evidence?: NewestDrillEvidence;
  /** The environment's backups, newest first. */
  backups: BackupMetadata[];
  maxDrillAgeSeconds: number;
  /** Targets in force now (config or flags), never the ones recorded in the report. */
  rpoSeconds?: number;
  rtoSeconds?: number;
  now: Date;
  clockSkewSeconds?: number;
  /**
   * What the deploy history records as running (`recordedRunning`). Unknown fails the gate: a
   * deploy would refuse that history anyway, after the pre-migration backup and the migration.
   */
  deployHistory?: { state: 'none' } | { state: 'known'; release: string } | { state: 'unknown'; detail: string };
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
  /** What the gate did not check, said plainly (e.g. no signature policy). */
  notes: string[];
  newestDrillId: string | null;
  newestVerifiedBackupId: string | null;
}

const ageOf = (iso: string, now: Date) => (now.getTime() - Date.parse(iso)) / 1000;

/** Why a timestamp cannot be believed (unreadable, or in the future beyond the skew), else undefined. */
function timestampProblem(iso: unknown, now: Date, skewSeconds: number): string | undefined {
  if (typeof iso !== 'string' || Number.isNaN(Date.parse(iso))) return `has no readable timestamp (${JSON.stringify(iso)})`;
  const ahead = -ageOf(iso, now);
  if (ahead > skewSeconds) return `is dated ${iso}, ${formatDuration(ahead)} in the future (allowed clock skew ${formatDuration(skewSeconds)})`;
  return undefined;
}

/** Why a drill report cannot be this environment's drill at all, else undefined. */
export function drillReportProblem(entry: Pick<DrillEntry, 'id' | 'metadata'>, env: string, now: Date, skewSeconds = CLOCK_SKEW_SECONDS): string | undefined {
  const report = entry.metadata;
  if (report.environment !== env) return `was recorded for environment ${JSON.stringify(report.environment)}, not ${env} (copied from another catalog?)`;
  if (report.id !== entry.id) return `is stored as ${entry.id} but its report.json says ${JSON.stringify(report.id)}`;
  return (
    timestampProblem(report.createdAt, now, skewSeconds) ?? (report.finishedAt === undefined ? undefined : timestampProblem(report.finishedAt, now, skewSeconds)?.replace(/^is dated/, 'finished'))
  );
}

/**
 * The drill the gate relies on: the newest report of this environment whose timestamps are
 * believable. A future-dated or foreign report is never it (it fails its own check instead), so
 * it cannot hide a newer failed drill.
 */
export function chooseNewestDrill<E extends Pick<DrillEntry, 'id' | 'metadata'>>(drills: readonly E[], env: string, now: Date, skewSeconds = CLOCK_SKEW_SECONDS): E | undefined {
  return [...drills].filter((d) => !drillReportProblem(d, env, now, skewSeconds)).sort((a, b) => Date.parse(b.metadata.createdAt) - Date.parse(a.metadata.createdAt) || b.id.localeCompare(a.id))[0];
}

/**
 * The drill's own verdict, recomputed from its recorded checks, steps and objectives instead of
 * its `passed` field: every reason it did not pass, empty when it did.
 */
export function drillVerdictProblems(report: DrillReport): string[] {
  // A drill that says it failed is taken at its word; only a claimed pass needs proving.
  if (report.passed !== true) return [`it failed: ${report.failures?.[0] ?? 'see its report'}${(report.failures?.length ?? 0) > 1 ? ` (+${report.failures.length - 1} more)` : ''}`];
  const problems: string[] = [];
  const checks = Array.isArray(report.checks) ? report.checks : [];
  for (const c of checks) {
    if (c.status === 'fail') problems.push(`its check "${c.name}" failed (${c.detail})`);
    else if (c.status !== 'pass' && c.status !== 'skipped') problems.push(`its check "${c.name}" has no valid result (${JSON.stringify(c.status)})`);
  }
  for (const s of Array.isArray(report.steps) ? report.steps : []) if (s.status === 'failed') problems.push(`its step "${s.title}" failed`);
  if ((report.failures?.length ?? 0) > 0) problems.push(`it says passed but lists failures (${report.failures[0]})`);
  const passedIn = (step: string) => checks.some((c) => c.step === step && c.status === 'pass');
  if (!passedIn('restore')) problems.push('it records no successful restore');
  if (report.mode === 'logical' && !passedIn('verify-backup')) problems.push('it records no passing checksum verification of the backup');
  if (report.mode === 'logical' && !passedIn('check-data')) problems.push('it records no passing data check (row counts, fingerprint, migration head)');
  if (report.rto?.met === false) problems.push('it missed its RTO target');
  if (report.rpo?.met === false) problems.push('it missed its RPO target');
  // A report whose passed: true hides a failure is not the drill's own output: say so once.
  return problems.length ? [...problems.slice(0, 3), ...(problems.length > 3 ? [`+${problems.length - 3} more`] : []), 'the report contradicts its passed: true (edited?)'] : problems;
}

/** The release gate: fails closed, one reason per failed check, and every check is shown either way. */
export function evaluateGate(inputs: GateInputs): GateResult {
  const { environment: env, now } = inputs;
  const skew = inputs.clockSkewSeconds ?? CLOCK_SKEW_SECONDS;
  const checks: GateCheck[] = [];
  const notes: string[] = [];
  const add = (check: GateCheck) => checks.push(check);

  for (const entry of inputs.drills) {
    const problem = drillReportProblem(entry, env, now, skew);
    if (problem)
      add({
        name: `drill report ${entry.id}`,
        value: 'not believable',
        limit: `${env}, not in the future`,
        passed: false,
        reason: `drill report ${entry.id} ${problem}; it is not counted as a drill: check the clock of the host that wrote it, and remove the report`,
      });
  }
  for (const b of inputs.backups) {
    const problem = timestampProblem(b.createdAt, now, skew);
    if (problem)
      add({
        name: `backup ${b.id}`,
        value: 'not believable',
        limit: 'not in the future',
        passed: false,
        reason: `backup ${b.id} ${problem}; it does not count toward the RPO: check the clock of the host that took it`,
      });
  }

  const newestEntry = chooseNewestDrill(inputs.drills, env, now, skew);
  // Ids are creation stamps, so a damaged entry is ordered by its id (its report cannot be read);
  // one whose id is no stamp cannot be shown to be older, so it counts as newer.
  const newestTime = newestEntry ? (drillIdTime(newestEntry.id) ?? Date.parse(newestEntry.metadata.createdAt)) : undefined;
  for (const d of inputs.damaged ?? []) {
    const time = drillIdTime(d.id);
    if (newestEntry && newestTime !== undefined && time !== undefined && time < newestTime) {
      notes.push(`drill entry ${d.id} cannot be read (${d.problem}); it is older than the newest drill ${newestEntry.id}, so the gate does not rely on it: look at ${d.dir} and remove it`);
      continue;
    }
    const than = newestEntry
      ? `${time === undefined ? 'its id is not a drill timestamp, so it cannot be shown to be older' : 'it is as new as or newer'} than the newest readable drill ${newestEntry.id}`
      : 'there is no readable drill';
    add({
      name: `drill entry ${d.id}`,
      value: 'unreadable',
      limit: 'a readable report',
      passed: false,
      reason: `drill entry ${d.id} cannot be read: ${d.problem}; ${than}, and it may be a failed drill, so the gate cannot pass: run lifeline drill --env ${env} for a new drill, or look at ${d.dir} and remove it if it is damaged`,
    });
  }

  const drill = newestEntry?.metadata;
  const evidence = inputs.evidence;
  let drillPassed = false;
  if (!drill) {
    add({ name: 'newest drill passed', value: 'no drill', limit: 'a passing drill', passed: false, reason: `no restore drill has run for ${env}: run lifeline drill --env ${env}` });
    add({
      name: 'newest drill age',
      value: 'no drill',
      limit: `<= ${formatDuration(inputs.maxDrillAgeSeconds)}`,
      passed: false,
      reason: `no drill within ${formatDuration(inputs.maxDrillAgeSeconds)} for ${env}`,
    });
  } else {
    const problems = drillVerdictProblems(drill);
    add({
      name: 'newest drill passed',
      value: `${drill.id}: ${problems.length ? 'failed' : 'passed'} (recomputed from ${drill.checks?.length ?? 0} checks)`,
      limit: 'every check passed',
      passed: problems.length === 0,
      reason: !problems.length
        ? undefined
        : drill.passed !== true
          ? `the newest drill ${drill.id} ${problems[0]!.replace(/^it /, '')}`
          : `the newest drill ${drill.id} did not pass: ${problems.join('; ')}`,
    });
    const age = ageOf(drill.createdAt, now);
    const fresh = age <= inputs.maxDrillAgeSeconds;
    add({
      name: 'newest drill age',
      value: formatDuration(Math.max(0, age)),
      limit: `<= ${formatDuration(inputs.maxDrillAgeSeconds)}`,
      passed: fresh,
      reason: fresh ? undefined : `the newest drill ${drill.id} is ${formatDuration(age)} old; the limit is ${formatDuration(inputs.maxDrillAgeSeconds)}`,
    });
    const integrity = evidence?.integrity ?? { ok: false, detail: 'not checked' };
    add({
      name: 'newest drill report intact',
      value: integrity.ok ? integrity.detail : 'FAILED',
      limit: `report.json listed in ${SUMS_FILE} and matching`,
      passed: integrity.ok,
      reason: integrity.ok ? undefined : `the newest drill's report ${drill.id} fails its checksums: ${integrity.detail}`,
    });
    const signature = evidence ? evidence.signature : { ok: false, detail: 'not checked' };
    if (signature === null) {
      add({ name: 'newest drill report signature', value: 'not checked', limit: 'no signing policy configured', passed: true });
      notes.push(
        `drill report signatures are NOT checked: ${env} has no manifest.publicKey or manifest.certificateIdentity, so anyone who can write the catalog can forge a passing report (and its ${SUMS_FILE}). Configure signing to close this.`,
      );
    } else {
      add({
        name: 'newest drill report signature',
        value: signature.ok ? signature.detail : 'FAILED',
        limit: 'signed as the manifest policy demands',
        passed: signature.ok,
        reason: signature.ok ? undefined : `the newest drill's report ${drill.id} fails signature verification: ${signature.detail}`,
      });
    }
    const backup = evidence ? evidence.backup : { ok: false, detail: 'not checked' };
    if (backup === null) {
      add({ name: 'drilled backup intact', value: `pgBackRest ${drill.backup?.id ?? 'backup'}: not checked`, limit: 'in the catalog, checksums match', passed: true });
      notes.push(
        `the newest drill ${drill.id} is a point-in-time drill; its pgBackRest base backup ${drill.backup?.id ?? ''} lives in the pgBackRest repository and is not re-checked by the gate (pgbackrest verify does that).`,
      );
    } else {
      add({
        name: 'drilled backup intact',
        value: backup.ok ? backup.detail : 'FAILED',
        limit: 'in the catalog, checksums match',
        passed: backup.ok,
        reason: backup.ok ? undefined : `the backup the newest drill ${drill.id} restored cannot be relied on: ${backup.detail}`,
      });
    }
    drillPassed = problems.length === 0 && integrity.ok && (signature?.ok ?? true) && (backup?.ok ?? true);
  }

  const verified = inputs.backups.find((b) => !timestampProblem(b.createdAt, now, skew) && (b.verified ? b.verified.ok : drillPassed && drill?.mode === 'logical' && drill.backup?.id === b.id));
  if (inputs.rpoSeconds === undefined) {
    add({
      name: 'newest verified backup age',
      value: verified ? formatDuration(ageOf(verified.createdAt, now)) : 'none',
      limit: 'no RPO target',
      passed: false,
      reason: `no RPO target for ${env}: set rpo: in lifeline.yml or pass --rpo`,
    });
  } else if (!verified) {
    add({
      name: 'newest verified backup age',
      value: 'none',
      limit: `<= ${formatDuration(inputs.rpoSeconds)}`,
      passed: false,
      reason: `${env} has no verified backup: run lifeline verify latest --env ${env} or lifeline drill --env ${env}`,
    });
  } else {
    const age = Math.max(0, ageOf(verified.createdAt, now));
    const ok = age <= inputs.rpoSeconds;
    add({
      name: 'newest verified backup age',
      value: `${formatDuration(age)} (${verified.id})`,
      limit: `<= ${formatDuration(inputs.rpoSeconds)} (RPO)`,
      passed: ok,
      reason: ok ? undefined : `the newest verified backup ${verified.id} is ${formatDuration(age)} old; the RPO target is ${formatDuration(inputs.rpoSeconds)}`,
    });
  }

  addObjective(add, 'RTO', env, drill, drill?.rto?.seconds ?? null, inputs.rtoSeconds);
  addObjective(add, 'RPO', env, drill, drill?.rpo?.seconds ?? null, inputs.rpoSeconds);

  const recorded = inputs.deployHistory;
  if (recorded?.state === 'unknown') {
    add({
      name: 'running release recorded',
      value: 'unknown',
      limit: 'the deploy history says what runs',
      passed: false,
      reason: `the deploy history of ${env} does not say what runs: ${recorded.detail}; run lifeline status --env ${env}, then lifeline rollback --env ${env} --to <release> (or lifeline history reconcile --env ${env} if what runs is right)`,
    });
  } else if (recorded?.state === 'known') {
    add({ name: 'running release recorded', value: recorded.release, limit: 'the deploy history says what runs', passed: true });
  }

  // One missing target fails two checks; say it once.
  const reasons = [...new Set(checks.filter((c) => !c.passed).map((c) => c.reason!))];
  return { environment: env, passed: reasons.length === 0, checks, reasons, notes, newestDrillId: drill?.id ?? null, newestVerifiedBackupId: verified?.id ?? null };
}

/** The drill's measured RTO or RPO against the target in force now (a target loosened in the report does not count). */
function addObjective(add: (c: GateCheck) => void, which: 'RTO' | 'RPO', env: string, drill: DrillReport | undefined, measured: number | null, target: number | undefined): void {
  const name = `newest drill ${which}`;
  const key = which.toLowerCase();
  if (target === undefined) {
    add({
      name,
      value: measured != null ? formatDuration(measured) : 'none',
      limit: `no ${which} target`,
      passed: false,
      reason: `no ${which} target for ${env}: set ${key}: in lifeline.yml or pass --${key}`,
    });
  } else if (!drill || typeof measured !== 'number' || !Number.isFinite(measured) || measured < 0) {
    add({ name, value: 'not measured', limit: `<= ${formatDuration(target)}`, passed: false, reason: `no drill of ${env} measured an ${which}` });
  } else {
    const ok = measured <= target;
    add({
      name,
      value: formatDuration(measured),
      limit: `<= ${formatDuration(target)}`,
      passed: ok,
      reason: ok ? undefined : `the newest drill's ${which} was ${formatDuration(measured)}; the target is ${formatDuration(target)}`,
    });
  }
}

export interface GatherOptions {
  catalog: Catalog;
  env: string;
  /** The manifest verification policy; undefined when signing is not configured. */
  policy?: VerificationPolicy;
  now: Date;
  clockSkewSeconds?: number;
}

/** Reads the catalog and re-checks the drill the gate will rely on: its checksums, its signature, its backup. */
export async function gatherGateEvidence(options: GatherOptions): Promise<{ drills: DrillEntry[]; damaged: DamagedDrillEntry[]; evidence?: NewestDrillEvidence }> {
  const { catalog, env } = options;
  const { drills, damaged } = await listDrillEntries(catalog, env);
  const newest = chooseNewestDrill(drills, env, options.now, options.clockSkewSeconds);
  if (!newest) return { drills, damaged };
  return {
    drills,
    damaged,
    evidence: {
      integrity: await entryIntegrity(newest.dir, DRILL_REPORT_FILE),
      signature: options.policy ? await reportSignature(newest, options.policy) : null,
      backup: await drilledBackup(catalog, env, newest.metadata),
    },
  };
}

async function entryIntegrity(dir: string, mustList: string): Promise<{ ok: boolean; detail: string }> {
  let results;
  try {
    results = await checkSums(dir);
  } catch (error) {
    return { ok: false, detail: `cannot read ${join(dir, SUMS_FILE)} (${(error as Error).message})` };
  }
  if (!results.some((r) => r.file === mustList)) return { ok: false, detail: `${SUMS_FILE} does not list ${mustList} (a report written before reports were covered, or edited): run a new drill` };
  const bad = results.filter((r) => !r.ok);
  if (bad.length) return { ok: false, detail: bad.map((r) => `${r.file} ${r.error ?? `has sha256 ${r.actual}, ${SUMS_FILE} says ${r.expected}`}`).join('; ') };
  return { ok: true, detail: `${results.length} file(s) match ${SUMS_FILE}` };
}

async function sumsListing(dir: string) {
  return parseSums(await readFile(join(dir, SUMS_FILE), 'utf8'));
}

async function reportSignature(entry: DrillEntry, policy: VerificationPolicy): Promise<{ ok: boolean; detail: string }> {
  // An unsigned report (a drill run by hand on the host) is said as such, before a keyless check
  // would fetch Sigstore's trust root and fail on something else.
  if (
    !(await access(join(entry.dir, DRILL_BUNDLE_FILE)).then(
      () => true,
      () => false,
    ))
  ) {
    const keyless = !('publicKey' in policy && policy.publicKey);
    return {
      ok: false,
      detail: keyless
        ? `drill report ${entry.id}: it is not signed (${DRILL_BUNDLE_FILE} is missing), and manifest.certificateIdentity accepts only drill reports signed keyless inside GitHub Actions by a listed identity: run the drill action with keyless: true (its job needs id-token: write) and list its workflow's identity in manifest.certificateIdentity, or use manifest.publicKey and sign drills with --signing-key`
        : `drill report ${entry.id}: it is not signed (${DRILL_BUNDLE_FILE} is missing), and manifest.publicKey accepts only signed drills: run lifeline drill with --signing-key (or LIFELINE_SIGNING_KEY) holding the matching private key`,
    };
  }
  try {
    const { signer } = await verifySignedFile({
      filePath: join(entry.dir, DRILL_REPORT_FILE),
      bundlePath: join(entry.dir, DRILL_BUNDLE_FILE),
      payloadType: DRILL_REPORT_PAYLOAD_TYPE,
      policy,
      what: `drill report ${entry.id}`,
      codePrefix: 'DRILL_REPORT',
    });
    return { ok: true, detail: signer.identity ? `signed by ${signer.identity}` : `signed by key ${signer.publicKeyHint?.slice(0, 12)}` };
  } catch (error) {
    // A policy that cannot be used (no key file, both kinds given) is a configuration error, not a failed report.
    if (isLifelineError(error) && error.kind === 'usage') throw error;
    return { ok: false, detail: (error as Error).message };
  }
}

async function drilledBackup(catalog: Catalog, env: string, report: DrillReport): Promise<NewestDrillEvidence['backup']> {
  if (report.mode === 'pitr') return null;
  const id = report.backup?.id;
  if (typeof id !== 'string' || !id) return { ok: false, detail: 'the report names no backup' };
  let entry;
  try {
    entry = await catalog.get<BackupMetadata>(env, 'backups', id, BACKUP_METADATA_FILE);
  } catch (error) {
    return { ok: false, detail: `backup ${JSON.stringify(id)} cannot be read (${(error as Error).message})` };
  }
  if (!entry) return { ok: false, detail: `backup ${id} is no longer in the catalog (deleted or pruned): run a new drill` };
  if (entry.metadata.createdAt !== report.backup?.createdAt)
    return { ok: false, detail: `backup ${id} in the catalog was taken ${entry.metadata.createdAt}, the drill restored one taken ${report.backup?.createdAt}` };
  const archive = entry.metadata.files?.postgres;
  const integrity = await entryIntegrity(entry.dir, archive?.name ?? POSTGRES_ARCHIVE_FILE);
  if (integrity.ok && archive?.sha256 && !(await sumsListing(entry.dir)).some((s) => s.file === archive.name && s.sha256 === archive.sha256)) {
    return { ok: false, detail: `backup ${id}: backup.json records sha256 ${archive.sha256} for ${archive.name}, ${SUMS_FILE} another` };
  }
  return integrity.ok ? { ok: true, detail: `${id}: ${integrity.detail}` } : { ok: false, detail: `backup ${id}: ${integrity.detail}` };
}

/**
 * The backups the release gate depends on, with why: the backup of the drill it relies on now and
 * of the newest drill that passed. Retention keeps them, so pruning never fails the gate.
 */
export async function backupsTheGateNeeds(catalog: Catalog, env: string, now = new Date()): Promise<Map<string, string>> {
  const drills = await listDrillReports(catalog, env);
  const needed = new Map<string, string>();
  const newest = chooseNewestDrill(drills, env, now);
  const newestPassing = chooseNewestDrill(
    drills.filter((d) => drillVerdictProblems(d.metadata).length === 0),
    env,
    now,
  );
  for (const [drill, why] of [
    [newestPassing, 'newest passing drill'],
    [newest, 'newest drill'],
  ] as const) {
    if (drill?.metadata.mode === 'logical' && drill.metadata.backup?.id && !needed.has(drill.metadata.backup.id))
      needed.set(drill.metadata.backup.id, `restored by the ${why} ${drill.id} (the release gate relies on it)`);
  }
  return needed;
}

/**
 * The drills the gate would believe passed, newest first, with the catalog backup each restored:
 * this environment's, not future-dated, passing by their recorded checks (not their `passed` flag).
 * Retention uses it so a forged or future-dated report never decides which backups stay.
 */
export async function believedPassingDrills(catalog: Catalog, env: string, now = new Date()): Promise<{ id: string; backupId: string }[]> {
  const drills = await listDrillReports(catalog, env);
  return drills
    .filter((d) => !drillReportProblem(d, env, now) && drillVerdictProblems(d.metadata).length === 0 && d.metadata.mode === 'logical' && typeof d.metadata.backup?.id === 'string')
    .sort((a, b) => Date.parse(b.metadata.createdAt) - Date.parse(a.metadata.createdAt) || b.id.localeCompare(a.id))
    .map((d) => ({ id: d.id, backupId: d.metadata.backup!.id }));
}

export function gateTable(result: GateResult): Table {
  return { headers: ['check', 'value', 'limit', 'result'], rows: result.checks.map((c) => [c.name, c.value, c.limit, c.passed ? 'pass' : 'FAIL']) };
}

export function renderGateText(result: GateResult): string {
  return [
    `release gate for ${result.environment}: ${result.passed ? 'PASSED' : 'FAILED'}`,
    '',
    renderTextTable(gateTable(result)),
    ...(result.notes.length ? ['', ...result.notes.map((n) => `note: ${n}`)] : []),
    ...(result.reasons.length ? ['', ...result.reasons.map((r) => `FAIL: ${r}`)] : []),
  ].join('\n');
}

export function renderGateMarkdown(result: GateResult): string {
  return [
    `## Release gate ${result.passed ? 'passed' : 'FAILED'}: ${result.environment}`,
    '',
    renderMarkdownTable(gateTable(result)),
    ...(result.notes.length ? ['', ...result.notes.map((n) => `> **Note:** ${n}`)] : []),
    ...(result.reasons.length ? ['', ...result.reasons.map((r) => `- ${r}`)] : []),
    '',
  ].join('\n');
}
