import { join } from 'node:path';
import { appendJournal, escapeForTerminal, readJournal, type CorruptLine } from '../catalog/journal';
import type { Catalog } from '../catalog/store';

export const HISTORY_LOG = 'history.ndjson';

/** `reconcile`: the operator accepted what the containers actually run (`lifeline history reconcile`). */
export type DeployAction = 'deploy' | 'rollback' | 'reconcile';
const ACTIONS: readonly string[] = ['deploy', 'rollback', 'reconcile'];
/** `started` is written before any container is touched; the same deploy's next line ends it. */
export type DeployResult = 'started' | 'succeeded' | 'failed' | 'refused';
const RESULTS: readonly string[] = ['started', 'succeeded', 'failed', 'refused'];

/** One line of an environment's deploy history: who moved it from which release to which, and how it went. */
export interface HistoryEvent {
  action: DeployAction;
  /** The release running before; null when none was known. */
  from: string | null;
  to: string;
  result: DeployResult;
  /** The release running once the event ended; null when that is unknown (a failed restore, a deploy in flight). */
  running: string | null;
  /** The catalog deployment (override file) the running release was started with. */
  runningDeployment: string | null;
  /** The catalog deployment this event wrote, if it got that far. */
  deployment: string | null;
  at: string;
  by: string;
  failedService?: string;
  reason?: string;
  /** On a `started` line: the ids of the containers that ran before, to tell later whether any was replaced. */
  containers?: string[];
  durationsMs: Record<string, number>;
}

/** The history as read: its events, and the lines that are not events (with their line numbers). */
export interface History {
  events: HistoryEvent[];
  /** The file line of each event, parallel to `events`. */
  lines: number[];
  corrupt: CorruptLine[];
}

function isHistoryEvent(value: unknown): value is HistoryEvent {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  const v = value as Record<string, unknown>;
  const nullableString = (x: unknown) => x === null || typeof x === 'string';
  return (
    ACTIONS.includes(v.action as string) &&
    RESULTS.includes(v.result as string) &&
    typeof v.to === 'string' &&
    nullableString(v.from) &&
    nullableString(v.running) &&
    nullableString(v.runningDeployment) &&
    nullableString(v.deployment) &&
    typeof v.at === 'string' &&
    typeof v.by === 'string' &&
    typeof v.durationsMs === 'object' &&
    v.durationsMs !== null
  );
}

export function historyPath(catalog: Catalog, env: string): string {
  return join(catalog.envDir(env), HISTORY_LOG);
}

/** Reads the whole history; lines that are not events come back in `corrupt`, for the reader to report. */
export async function loadHistory(catalog: Catalog, env: string): Promise<History> {
  const content = await readJournal(historyPath(catalog, env), isHistoryEvent);
  return { events: content.records.map((r) => r.value), lines: content.records.map((r) => r.line), corrupt: content.corrupt };
}

/** The events only. Callers that decide anything must use `loadHistory` and report `corrupt`. */
export async function readHistory(catalog: Catalog, env: string): Promise<HistoryEvent[]> {
  return (await loadHistory(catalog, env)).events;
}

export async function appendHistory(catalog: Catalog, env: string, event: HistoryEvent): Promise<void> {
  await appendJournal(historyPath(catalog, env), event);
}

/** One sentence naming the corrupt lines of the history, for warnings and refusals. */
export function describeCorruptLines(catalog: Catalog, env: string, corrupt: CorruptLine[]): string {
  const shown = corrupt.slice(0, 5).map((c) => `line ${c.line}: ${c.excerpt}`);
  return `${historyPath(catalog, env)} has ${corrupt.length} line${corrupt.length === 1 ? '' : 's'} that ${corrupt.length === 1 ? 'is' : 'are'} not a history event (torn by a crash or edited): ${shown.join('; ')}${corrupt.length > 5 ? '; ...' : ''}`;
}

/** What is running according to the history; undefined before the first deploy. A deploy in flight (or killed) leaves it unknown (null). */
export function currentRelease(history: HistoryEvent[]): { release: string | null; deployment: string | null } | undefined {
  const last = history.at(-1);
  return last ? { release: last.running, deployment: last.runningDeployment } : undefined;
}

/**
 * The in-progress record of a deploy or rollback that never wrote its end: killed, or still
 * running. Lines written after it by other commands (a refused deploy, a failed verification) do
 * not end it; only a line of the same deployment, or a later success, does.
 */
export function unfinishedEvent(history: HistoryEvent[]): HistoryEvent | undefined {
  const ended = new Set<string>();
  for (let i = history.length - 1; i >= 0; i--) {
    const event = history[i]!;
    if (event.result === 'started') return event.deployment && ended.has(event.deployment) ? undefined : event;
    if (event.result === 'succeeded') return undefined;
    if (event.deployment) ended.add(event.deployment);
  }
  return undefined;
}

/** The releases that ran, oldest first, without repeats of the same release in a row. */
export function runningSequence(history: HistoryEvent[]): string[] {
  const sequence: string[] = [];
  for (const event of history) {
    if (event.running && sequence.at(-1) !== event.running) sequence.push(event.running);
  }
  return sequence;
}

/** `rollback --to previous`: the latest release that ran before the current one. */
export function previousRelease(history: HistoryEvent[], skip: ReadonlySet<string> = new Set()): string | undefined {
  const current = currentRelease(history)?.release;
  return runningSequence(history)
    .reverse()
    .find((release) => release !== current && !skip.has(release));
}

/**
 * `previous` as a rollback may use it: only from the events after the last corrupt line (a lost
 * line could have been a release that ran in between), and never a revoked release.
 */
export function trustedPrevious(history: History, revoked: ReadonlySet<string>): { release?: string; skippedRevoked: string[]; cutAtLine?: number } {
  const cutAtLine = history.corrupt.at(-1)?.line;
  const events = cutAtLine === undefined ? history.events : history.events.filter((_, i) => history.lines[i]! > cutAtLine);
  const current = currentRelease(history.events)?.release;
  const skippedRevoked: string[] = [];
  for (const release of runningSequence(events).reverse()) {
    if (release === current) continue;
    if (revoked.has(release)) {
      if (!skippedRevoked.includes(release)) skippedRevoked.push(release);
      continue;
    }
    return { release, skippedRevoked, cutAtLine };
  }
  return { skippedRevoked, cutAtLine };
}

/**
 * Releases that rollback may still need, which release pruning must keep: the running one and
 * the `keepLast` distinct releases that ran before it (retention.keepLast).
 */
export async function releasesInUse(catalog: Catalog, env: string, keepLast: number): Promise<Set<string>> {
  const history = await readHistory(catalog, env);
  const keep = new Set<string>();
  const current = currentRelease(history)?.release;
  if (current) keep.add(current);
  // A deploy in flight or killed: the release it was moving from, and the one it was moving to, may both be running.
  const unfinished = unfinishedEvent(history);
  if (unfinished) {
    keep.add(unfinished.to);
    if (unfinished.from) keep.add(unfinished.from);
  }
  const distinct = [...new Set(runningSequence(history).reverse())];
  for (const release of distinct.slice(0, Math.max(keepLast, 1) + 1)) keep.add(release);
  return keep;
}

/** A history value as it may be printed: control characters escaped, so no value can forge a line. */
export function printable(value: string | null | undefined, fallback = '-'): string {
  return value === null || value === undefined ? fallback : escapeForTerminal(value);
}

/** What the history alone says runs: nothing recorded, a known release, or unknown (and why). */
export type RecordedRunning = { state: 'none' } | { state: 'known'; release: string } | { state: 'unknown'; detail: string };

/**
 * The running release as the history records it, without asking the engine (the gate runs where
 * Docker may not be reachable). A last event that started and never ended (a killed or cancelled
 * deploy), one that ended with the running release unknown, or an unreadable line after the last
 * event all make it unknown: deploy and rollback would refuse such a history until it is reconciled.
 */
export function recordedRunning(history: History): RecordedRunning {
  const last = history.events.at(-1);
  const lastLine = history.lines.at(-1) ?? 0;
  const corruptAfter = history.corrupt.filter((c) => c.line > lastLine);
  if (corruptAfter.length > 0) return { state: 'unknown', detail: `line ${corruptAfter.map((c) => c.line).join(', ')} of ${HISTORY_LOG}, after the last readable event, cannot be read` };
  if (!last) return { state: 'none' };
  // The same rule deploy, rollback and the drill apply: a started event whose own end was never recorded.
  const unfinished = unfinishedEvent(history.events);
  if (unfinished)
    return {
      state: 'unknown',
      detail: `the ${unfinished.action} of ${JSON.stringify(unfinished.to)} started at ${unfinished.at} by ${JSON.stringify(unfinished.by)} never finished (a killed or cancelled run)`,
    };
  if (last.running === null) return { state: 'unknown', detail: `after the ${last.action} of ${JSON.stringify(last.to)} (${last.result} at ${last.at}) the running release is unknown` };
  return { state: 'known', release: last.running };
}
