import type { Catalog } from '../catalog/store';

export const HISTORY_LOG = 'history.ndjson';

export type DeployAction = 'deploy' | 'rollback';

/** One line of an environment's deploy history: who moved it from which release to which, and how it went. */
export interface HistoryEvent {
  action: DeployAction;
  /** The release running before; null when none was known. */
  from: string | null;
  to: string;
  result: 'succeeded' | 'failed' | 'refused';
  /** The release running once the event ended; null when that is unknown (a failed restore). */
  running: string | null;
  /** The catalog deployment (override file) the running release was started with. */
  runningDeployment: string | null;
  /** The catalog deployment this event wrote, if it got that far. */
  deployment: string | null;
  at: string;
  by: string;
  failedService?: string;
  reason?: string;
  durationsMs: Record<string, number>;
}

export async function readHistory(catalog: Catalog, env: string): Promise<HistoryEvent[]> {
  return catalog.readLog<HistoryEvent>(env, HISTORY_LOG);
}

export async function appendHistory(catalog: Catalog, env: string, event: HistoryEvent): Promise<void> {
  await catalog.appendLog(env, HISTORY_LOG, event);
}

/** What is running according to the history; undefined before the first deploy. */
export function currentRelease(history: HistoryEvent[]): { release: string | null; deployment: string | null } | undefined {
  const last = history.at(-1);
  return last ? { release: last.running, deployment: last.runningDeployment } : undefined;
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
export function previousRelease(history: HistoryEvent[]): string | undefined {
  const current = currentRelease(history)?.release;
  return runningSequence(history)
    .reverse()
    .find((release) => release !== current);
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
  const distinct = [...new Set(runningSequence(history).reverse())];
  for (const release of distinct.slice(0, Math.max(keepLast, 1) + 1)) keep.add(release);
  return keep;
}
