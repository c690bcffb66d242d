import { lstat, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { readEntryText, UnsafeEntryFileError } from '../catalog/confine';
import { CATALOG_SCHEMA_VERSION, newEntryId, type Catalog, type CatalogEntry, type EntryMetadata } from '../catalog/store';
import { failure } from '../errors';
import { renderMarkdownTable, renderMermaidTrend, renderTextTable, type Table } from '../report/table';
import { formatDuration } from '../settings/duration';
import type { RpoMeasure } from './rpo';

export const DRILL_REPORT_FILE = 'report.json';
export const DRILL_SUMMARY_FILE = 'summary.md';
export const DRILL_REPORT_SCHEMA_VERSION = 1;

export type CheckStatus = 'pass' | 'fail' | 'skipped';

export interface DrillCheck {
  name: string;
  status: CheckStatus;
  detail: string;
  /** The runbook step this check belongs to. */
  step: string;
}

export interface DrillStepRecord {
  id: string;
  title: string;
  status: 'done' | 'failed' | 'skipped';
  detail?: string;
  seconds?: number;
}

export interface Objective {
  seconds: number | null;
  targetSeconds: number | null;
  /** null when there is no target to compare with, or nothing was measured. */
  met: boolean | null;
}

export interface DrillReport extends EntryMetadata {
  schemaVersion: typeof DRILL_REPORT_SCHEMA_VERSION;
  id: string;
  createdAt: string;
  finishedAt: string;
  environment: string;
  mode: 'logical' | 'pitr';
  /** The logical backup restored (mode logical), or the pgBackRest base backup (mode pitr). */
  backup: { id: string; createdAt: string } | null;
  pitrTarget?: string;
  /** Where the restore went, password masked. */
  target: { kind: 'throwaway-cluster' | 'url'; description: string };
  steps: DrillStepRecord[];
  checks: DrillCheck[];
  /** phases: what RTO adds up; setupSeconds: the drill's own set-up (a throwaway cluster), not counted. */
  rto: Objective & { phases: Record<string, number>; setupSeconds?: number };
  rpo: Objective & { detail: Omit<RpoMeasure, 'seconds'> | null; note?: string };
  passed: boolean;
  /** One line per reason the drill failed; empty when it passed. */
  failures: string[];
}

export type DrillEntry = CatalogEntry<DrillReport>;

/** The Sigstore bundle beside report.json, and the DSSE payload type that says "this is a Lifeline drill report". */
export const DRILL_BUNDLE_FILE = 'report.sigstore.json';
export const DRILL_REPORT_PAYLOAD_TYPE = 'application/vnd.lifeline.drill-report.v1+json';

/** Signs report.json's exact bytes (the command builds it from the release-manifest signer: key, or keyless). */
export interface DrillReportSigner {
  sign(payload: Buffer): Promise<{ kind: 'key' | 'keyless'; bundleJson: string }>;
}

export interface SavedDrillReport extends DrillEntry {
  /** How report.json was signed; `unsigned` when no signer was given, `failed` when signing failed. */
  signing: { status: 'key' | 'keyless' | 'unsigned' | 'failed'; detail?: string };
}

export function newDrillId(now = new Date()): string {
  return newEntryId(now);
}

/**
 * The bytes of report.json, exactly as the catalog writes an entry's metadata; the signature and
 * SHA256SUMS are computed over these, and the catalog's own rewrite at commit leaves them unchanged.
 */
export function drillReportBytes(report: DrillReport): Buffer {
  return Buffer.from(`${JSON.stringify(report, null, 2)}\n`);
}

/**
 * Stores the report (and its Markdown summary) as an immutable catalog entry. report.json is
 * listed in SHA256SUMS and, with a signer, signed into report.sigstore.json, so an edited report
 * fails the gate. A signing failure does not lose the drill: the report is kept unsigned (the gate
 * then refuses it when signing is required) and the failure is returned.
 */
export async function saveDrillReport(catalog: Catalog, report: DrillReport, summaryMarkdown: string, signer?: DrillReportSigner): Promise<SavedDrillReport> {
  const bytes = drillReportBytes(report);
  let signing: SavedDrillReport['signing'] = { status: 'unsigned' };
  let bundleJson: string | undefined;
  if (signer) {
    try {
      const signed = await signer.sign(bytes);
      bundleJson = signed.bundleJson;
      signing = { status: signed.kind };
    } catch (error) {
      signing = { status: 'failed', detail: (error as Error).message };
    }
  }
  const staged = await catalog.begin(report.environment, 'drills', report.id, DRILL_REPORT_FILE);
  try {
    await staged.addText(DRILL_SUMMARY_FILE, summaryMarkdown);
    await staged.addStream(DRILL_REPORT_FILE, Readable.from([bytes]));
    if (bundleJson) await staged.addText(DRILL_BUNDLE_FILE, bundleJson);
    await staged.commit(report);
  } catch (error) {
    await staged.abort();
    throw error;
  }
  const written = await readFile(join(staged.finalDir, DRILL_REPORT_FILE));
  if (!written.equals(bytes)) {
    throw failure('DRILL_REPORT_REWRITTEN', `the catalog wrote ${join(staged.finalDir, DRILL_REPORT_FILE)} differently from the bytes listed in SHA256SUMS and signed`, {
      fix: 'this is a Lifeline bug (the catalog changed how it writes metadata); report it',
    });
  }
  return { id: report.id, dir: staged.finalDir, metadata: report, signing };
}

export async function listDrillReports(catalog: Catalog, env: string): Promise<DrillEntry[]> {
  return catalog.list<DrillReport>(env, 'drills', DRILL_REPORT_FILE);
}

/** The time a drill entry id records (ids are `newDrillId` stamps), or undefined when the id is not one. */
export function drillIdTime(id: string): number | undefined {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})(\d{3})Z-[0-9a-f]+$/.exec(id);
  if (!m) return undefined;
  const [y, mo, d, h, mi, s, ms] = m.slice(1).map(Number) as [number, number, number, number, number, number, number];
  const time = Date.UTC(y, mo - 1, d, h, mi, s, ms);
  return Number.isNaN(time) ? undefined : time;
}

/** A drill entry directory whose report.json cannot be used (missing, empty, not JSON, not a report). */
export interface DamagedDrillEntry {
  id: string;
  dir: string;
  problem: string;
}

/**
 * The environment's drill reports (as `listDrillReports`) and every entry directory the listing
 * skipped because its report cannot be read. The gate must see those: a damaged report.json
 * must never make an older passing drill the newest. Only dot-directories (a writer's staging,
 * a prune's deletion) and stray files are not entries.
 */
export async function listDrillEntries(catalog: Catalog, env: string): Promise<{ drills: DrillEntry[]; damaged: DamagedDrillEntry[] }> {
  const kindDir = catalog.kindDir(env, 'drills');
  let names: string[];
  try {
    // Read the names before the listing: an entry committed in between is then simply not seen, never taken for damaged.
    names = await readdir(kindDir);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return { drills: [], damaged: [] };
    throw error;
  }
  const drills = await listDrillReports(catalog, env);
  const listed = new Set(drills.map((d) => d.id));
  const damaged: DamagedDrillEntry[] = [];
  for (const name of names.filter((n) => !n.startsWith('.') && !listed.has(n)).sort()) {
    const dir = join(kindDir, name);
    // lstat, as the listing: a link planted as an entry is never followed.
    const info = await lstat(dir).catch(() => undefined);
    if (!info) continue; // removed meanwhile (a prune)
    // A stray file beside the entries (an operator's note) is not a drill; a link or file named like one is.
    if (!info.isDirectory() && drillIdTime(name) === undefined) continue;
    // Fail closed: the listing skipped it, so even a report that reads fine now counts as damaged.
    const problem = info.isDirectory()
      ? ((await reportProblem(dir)) ?? `${DRILL_REPORT_FILE} was not readable when the catalog was listed`)
      : `the entry is ${info.isSymbolicLink() ? 'a symbolic link' : 'not a directory'}`;
    // A directory gone by now was removed by a concurrent prune, not damaged.
    if (await lstat(dir).catch(() => undefined)) damaged.push({ id: name, dir, problem });
  }
  return { drills, damaged };
}

/** Why report.json cannot be used as a drill report, or undefined when it looks usable now. */
async function reportProblem(entryDir: string): Promise<string | undefined> {
  let text: string;
  try {
    // The confined reader: a FIFO or link named report.json is damage, never a hang or a read elsewhere.
    text = await readEntryText(entryDir, DRILL_REPORT_FILE);
  } catch (error) {
    if (error instanceof UnsafeEntryFileError) return `${error.fileName === '.' ? 'the entry' : DRILL_REPORT_FILE} ${error.reason}`;
    const code = (error as NodeJS.ErrnoException).code;
    return code === 'ENOENT' ? `it has no ${DRILL_REPORT_FILE}` : `${DRILL_REPORT_FILE} cannot be read (${(error as Error).message})`;
  }
  if (!text.trim()) return `${DRILL_REPORT_FILE} is empty`;
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    return `${DRILL_REPORT_FILE} is not valid JSON`;
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) return `${DRILL_REPORT_FILE} is not a JSON object`;
  const r = doc as Partial<DrillReport>;
  if (typeof r.schemaVersion === 'number' && r.schemaVersion > CATALOG_SCHEMA_VERSION) return `${DRILL_REPORT_FILE} has schema version ${r.schemaVersion}, written by a newer Lifeline`;
  if (typeof r.createdAt !== 'string' || Number.isNaN(Date.parse(r.createdAt)) || typeof r.schemaVersion !== 'number')
    return `${DRILL_REPORT_FILE} is not a drill report (no valid createdAt or schemaVersion)`;
  return undefined;
}

/** The line `lifeline drills --json` prints per drill. */
export function drillListing(report: DrillReport) {
  return {
    id: report.id,
    createdAt: report.createdAt,
    environment: report.environment,
    mode: report.mode,
    backupId: report.backup?.id ?? null,
    passed: report.passed,
    rtoSeconds: report.rto.seconds,
    rtoTargetSeconds: report.rto.targetSeconds,
    rpoSeconds: report.rpo.seconds,
    rpoTargetSeconds: report.rpo.targetSeconds,
    failures: report.failures,
  };
}

const seconds = (value: number | null) => (value === null ? 'n/a' : formatDuration(value));
const objectiveVerdict = (o: Objective) => (o.met === null ? (o.targetSeconds === null ? 'no target' : 'n/a') : o.met ? 'met' : 'MISSED');

export function checksTable(report: DrillReport): Table {
  return { headers: ['step', 'check', 'result', 'detail'], rows: report.checks.map((c) => [c.step, c.name, c.status === 'fail' ? 'FAIL' : c.status, c.detail]) };
}

export function objectivesTable(report: DrillReport): Table {
  return {
    headers: ['objective', 'measured', 'target', 'verdict'],
    rows: [
      ['RTO (verify + restore + checks)', seconds(report.rto.seconds), seconds(report.rto.targetSeconds), objectiveVerdict(report.rto)],
      [
        `RPO (${report.rpo.detail ? `backup age ${seconds(report.rpo.detail.backupAgeSeconds)}, largest gap ${seconds(report.rpo.detail.largestGapSeconds)} over ${seconds(report.rpo.detail.windowSeconds)}` : (report.rpo.note ?? 'not measured')})`,
        seconds(report.rpo.seconds),
        seconds(report.rpo.targetSeconds),
        objectiveVerdict(report.rpo),
      ],
    ],
  };
}

export function drillsTable(reports: DrillReport[]): Table {
  return {
    headers: ['id', 'created', 'mode', 'backup', 'result', 'RTO', 'RPO'],
    rows: reports.map((r) => [
      r.id,
      r.createdAt,
      r.mode,
      r.backup?.id ?? '-',
      r.passed ? 'passed' : 'FAILED',
      `${seconds(r.rto.seconds)} / ${seconds(r.rto.targetSeconds)}`,
      `${seconds(r.rpo.seconds)} / ${seconds(r.rpo.targetSeconds)}`,
    ]),
  };
}

function headline(report: DrillReport): string {
  const what = report.mode === 'pitr' ? `point-in-time drill to ${report.pitrTarget}` : `restore drill of backup ${report.backup?.id ?? '(none)'}`;
  return `${report.passed ? 'PASSED' : 'FAILED'}: ${what} in ${report.environment} (${report.target.description})`;
}

export function renderDrillText(report: DrillReport): string {
  return [
    headline(report),
    '',
    renderTextTable(checksTable(report)),
    '',
    renderTextTable(objectivesTable(report)),
    ...(report.failures.length ? ['', 'Failed because:', ...report.failures.map((f) => `  - ${f}`)] : []),
    '',
    `report: drill ${report.id}`,
  ].join('\n');
}

/** A measured objective with its share of the target: `6.9s (0.2% of 60m)`. */
function ofTarget(objective: Objective): string {
  if (objective.seconds === null) return 'not measured';
  if (!objective.targetSeconds) return `${formatDuration(objective.seconds)} (no target)`;
  const share = (objective.seconds / objective.targetSeconds) * 100;
  return `${formatDuration(objective.seconds)} (${share < 1 ? share.toFixed(1) : Math.round(share)}% of ${formatDuration(objective.targetSeconds)})${objective.met === false ? ' **missed**' : ''}`;
}

/**
 * One objective across recent drills, in the unit that suits the measured values (seconds,
 * minutes or hours). The target is drawn as a line only when it is within 4x of the largest
 * value: a 60-minute target over 7-second drills would flatten every bar to nothing, so it is
 * then named in the title instead. Failed drills are marked in their x-axis label.
 */
function trendChart(name: 'RTO' | 'RPO', environment: string, recent: DrillReport[], measured: (r: DrillReport) => number | null, target: number | null): string {
  const values = recent.map(measured);
  const top = Math.max(0, ...values.filter((v): v is number => v !== null && Number.isFinite(v)));
  const unit = top >= 7200 ? { name: 'hours', per: 3600 } : top >= 120 ? { name: 'minutes', per: 60 } : { name: 'seconds', per: 1 };
  const drawTarget = target !== null && target > 0 && target <= Math.max(top, 1) * 4;
  const targetText = target === null ? 'no target' : drawTarget ? `line: target ${formatDuration(target)}` : `target ${formatDuration(target)}, far above every drill (not drawn)`;
  return renderMermaidTrend({
    title: `${name} per drill, ${environment}, in ${unit.name}; ${targetText}`,
    xLabels: recent.map((r) => `${r.createdAt.slice(5, 16).replace('T', ' ')}${r.passed ? '' : ' FAILED'}`),
    yLabel: `${name} (${unit.name})`,
    series: [{ kind: 'bar', values: values.map((v) => (v === null ? 0 : v / unit.per)) }, ...(drawTarget ? [{ kind: 'line' as const, values: recent.map(() => target! / unit.per) }] : [])],
  });
}

/** The job summary: checks, objectives, and the trend of recent drills (oldest to newest). */
export function renderDrillMarkdown(report: DrillReport, history: DrillReport[]): string {
  const recent = [report, ...history.filter((h) => h.id !== report.id)].slice(0, 10).reverse();
  const lines = [
    `## Restore drill ${report.passed ? 'passed' : 'FAILED'}: ${report.environment}`,
    '',
    headline(report),
    '',
    renderMarkdownTable(checksTable(report)),
    '',
    renderMarkdownTable(objectivesTable(report)),
  ];
  if (report.failures.length) lines.push('', '**Failed because:**', '', ...report.failures.map((f) => `- ${f}`));
  if (recent.length >= 2) {
    lines.push(
      '',
      `### Trend of the last ${recent.length} drills`,
      '',
      trendChart('RTO', report.environment, recent, (r) => r.rto.seconds, report.rto.targetSeconds),
      '',
      trendChart('RPO', report.environment, recent, (r) => r.rpo.seconds, report.rpo.targetSeconds),
      '',
      renderMarkdownTable({
        headers: ['drill', 'when (UTC)', 'result', 'RTO', 'RPO'],
        rows: [...recent].reverse().map((r) => [r.id, r.createdAt.slice(0, 16).replace('T', ' '), r.passed ? 'passed' : '**FAILED**', ofTarget(r.rto), ofTarget(r.rpo)]),
      }),
    );
  }
  return `${lines.join('\n')}\n`;
}
