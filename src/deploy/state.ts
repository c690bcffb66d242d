import type { Catalog } from '../catalog/store';
import { refusal } from '../errors';
import { SERVICE_ROLES, type ComposeSettings, type ServiceRole } from '../settings/resolve';
import type { ComposeDriver } from '../runner/compose';
import { currentRelease, describeCorruptLines, printable, unfinishedEvent, type History, type HistoryEvent } from './history';
import type { ReleaseVerifier, VerifiedRelease } from './release';

/** One container of api, web or worker as the engine reports it, and the release its image belongs to. */
export interface ServiceContainer {
  role: ServiceRole;
  service: string;
  /** Null when the service has no container at all. */
  containerId: string | null;
  imageRef: string | null;
  imageId: string | null;
  status: string;
  health: string | null;
  /** The verified release whose manifest names this image, or null ("unknown"). */
  release: string | null;
}

/** What actually runs, read from the engine (`docker inspect`), never from the history. */
export interface RunningState {
  services: ServiceContainer[];
  /** The release all three run, when they all run one and the same verified release; else null. */
  release: string | null;
  /** Every container is running. */
  allRunning: boolean;
}

/** What the history claims compared with what runs. */
export interface Reconciliation {
  /** True when the history and the containers agree (or there is no history yet). */
  consistent: boolean;
  /** What the history says runs: null when it does not know (a deploy killed mid-way, a failed put-back). */
  claimed: string | null;
  /** The deploy or rollback that wrote `started` and never its end. */
  unfinished?: HistoryEvent;
  state: RunningState;
  /** One plain sentence per difference. */
  differences: string[];
}

/**
 * Reads what each service actually runs and names the release of each image, among the releases
 * the history mentions (each one's manifest verified: a release is only named from a verified manifest).
 */
export async function observeRunning(
  driver: ComposeDriver,
  services: ComposeSettings['services'],
  verifier: ReleaseVerifier,
  candidates: string[],
): Promise<{ state: RunningState; verified: Map<string, VerifiedRelease> }> {
  const verified = new Map<string, VerifiedRelease>();
  for (const version of candidates) {
    if (verified.has(version)) continue;
    const release = await verifier.verify(version).catch(() => undefined);
    if (release) verified.set(version, release);
  }
  const containers = await driver.projectContainers();
  const byImage = new Map<string, string>();
  for (const [version, release] of verified) {
    for (const role of SERVICE_ROLES) if (!byImage.has(`${role} ${release.images[role]}`)) byImage.set(`${role} ${release.images[role]}`, version);
  }
  // A container started from another spelling of the same image (a tag) is matched by its local image id.
  const references = [...verified.values()].flatMap((r) => SERVICE_ROLES.map((role) => r.images[role]));
  const idOf = await driver.imageIds([...new Set(references)]);
  const byImageId = new Map<string, string>();
  for (const [version, release] of verified) {
    for (const role of SERVICE_ROLES) {
      const id = idOf.get(release.images[role]);
      if (id && !byImageId.has(`${role} ${id}`)) byImageId.set(`${role} ${id}`, version);
    }
  }

  const rows: ServiceContainer[] = [];
  for (const role of SERVICE_ROLES) {
    const service = services[role].name;
    const own = containers.filter((c) => c.service === service);
    if (own.length === 0) rows.push({ role, service, containerId: null, imageRef: null, imageId: null, status: 'no container', health: null, release: null });
    for (const c of own) {
      const release = byImage.get(`${role} ${c.imageRef}`) ?? byImageId.get(`${role} ${c.imageId}`) ?? null;
      rows.push({ role, service, containerId: c.id, imageRef: c.imageRef, imageId: c.imageId, status: c.status, health: c.health ?? null, release });
    }
  }
  const releases = new Set(rows.map((r) => r.release));
  const single = releases.size === 1 ? [...releases][0]! : null;
  return { state: { services: rows, release: single, allRunning: rows.every((r) => r.status === 'running') }, verified };
}

/** The releases a history mentions, newest first: the candidates for naming what runs. */
export function releasesMentioned(history: History): string[] {
  const names: string[] = [];
  for (const event of [...history.events].reverse()) {
    for (const name of [event.running, event.to, event.from]) if (name && !names.includes(name)) names.push(name);
  }
  return names.slice(0, 6);
}

/** Compares the history's claim with the containers. */
export function reconcile(history: History, state: RunningState): Reconciliation {
  const unfinished = unfinishedEvent(history.events);
  const current = currentRelease(history.events);
  const claimed = current?.release ?? null;
  const differences: string[] = [];
  if (history.events.length === 0) return { consistent: true, claimed: null, state, differences };
  if (unfinished) {
    differences.push(
      `a ${unfinished.action} of ${printable(unfinished.to)} started at ${unfinished.at} by ${printable(unfinished.by)} never recorded its end (killed or cancelled); it was moving from ${printable(unfinished.from, 'an unknown release')}`,
    );
  } else if (claimed === null) {
    differences.push(`the history does not know what runs (its last event, ${history.events.at(-1)!.action} of ${printable(history.events.at(-1)!.to)}, left it unknown)`);
  }
  for (const row of state.services) {
    if (!row.containerId) {
      differences.push(`${row.service} has no container`);
      continue;
    }
    // Every value here may come from a catalog file: printed escaped, so a forged name cannot add lines.
    const runs = `${row.service} runs ${printable(row.imageRef)} (${row.release ? `release ${printable(row.release)}` : 'unknown release'}), container ${printable(row.containerId.slice(0, 12))} ${printable(row.status)}`;
    if (unfinished || claimed === null || row.release !== claimed) differences.push(claimed && !unfinished ? `${runs}, but the history says ${printable(claimed)}` : runs);
    else if (row.status !== 'running') differences.push(runs);
  }
  const consistent = !unfinished && claimed !== null && state.services.every((r) => r.containerId && r.release === claimed && r.status === 'running');
  return { consistent, claimed, unfinished, state, differences };
}

/** A readable block: what the history says, and what each service actually runs. */
export function describeState(result: Reconciliation): string {
  const lines = [
    `history says: ${result.unfinished ? `unknown (a ${result.unfinished.action} of ${printable(result.unfinished.to)} never finished)` : printable(result.claimed, 'unknown')}`,
    ...result.state.services.map(
      (r) =>
        `  ${r.service}: ${r.containerId ? `${r.imageRef} -> ${r.release ? `release ${r.release}` : 'unknown release'} (container ${r.containerId.slice(0, 12)} ${r.status}${r.health ? `, ${r.health}` : ''})` : 'no container'}`,
    ),
  ];
  return lines.join('\n');
}

/** The refusal of a command that would act on a history that does not match the containers. */
export function unreconciledRefusal(env: string, result: Reconciliation, catalog: Catalog, history: History): Error {
  const fixes = [
    `put all three on a release you choose (verified, health-checked): lifeline rollback --env ${env} --to <release>`,
    result.state.release && result.state.allRunning ? `or, if ${result.state.release} is what should run, record it: lifeline history reconcile --env ${env}` : '',
  ].filter(Boolean);
  const corrupt = history.corrupt.length ? `\n${describeCorruptLines(catalog, env, history.corrupt)}` : '';
  return refusal(
    'HISTORY_UNRECONCILED',
    `the deploy history of ${env} does not match what runs, so nothing was changed:\n${result.differences.map((d) => `  - ${d}`).join('\n')}\n${describeState(result)}${corrupt}`,
    fixes.join('; '),
    { claimed: result.claimed, running: result.state.services, unfinished: result.unfinished ?? null },
  );
}
