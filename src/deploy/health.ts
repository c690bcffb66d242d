import type { Logger } from '../logger';
import { freshHttpStatus, proveHealthOwner, UNTIED_HEALTH, type HealthProof } from '../runner/listeners';
import type { ComposeDriver, ContainerState } from '../runner/compose';

export interface HealthTarget {
  /** The Compose service name. */
  service: string;
  /** When set, a 2xx answer from this URL is required, on top of the Compose healthcheck when the service has one. */
  healthUrl?: string;
  /** The image reference the service must be running, so an old container never counts as healthy. */
  expectedImage?: string;
}

export interface HealthOptions {
  timeoutSeconds: number;
  /** After every target is first healthy, how long every check must keep passing with the same containers, none restarted or exited. */
  settleSeconds?: number;
  /** Containers that ran before this deploy: they never count, whatever they answer. */
  previousContainers?: ReadonlySet<string>;
  overrideFile?: string;
  logger: Logger;
  /** When the process answering a healthUrl cannot be tied to the service's container: fail (true) or warn (default). */
  requireOwnedHealth?: boolean;
  /** False when the Docker engine is on another host: the answering process cannot be looked up here. */
  engineOnThisHost?: boolean;
}

export type HealthOutcome = { healthy: true; elapsedMs: number; warnings: string[] } | { healthy: false; elapsedMs: number; service: string; reason: string; fix?: string; warnings: string[] };

const POLL_MS = 250;
const HTTP_TIMEOUT_MS = 2000;

/**
 * Waits until every target is healthy, then for the settle window, or until one of them fails. A
 * service fails at once when its container exits or Docker marks it `unhealthy` (its healthcheck
 * failed `retries` times in a row, after its `start_period`); otherwise it fails when the timeout
 * is reached. In the settle window any failed check, restart, exit or replaced container fails it:
 * a release that crashes a few seconds after its first answer is not healthy.
 */
export async function waitForHealth(driver: ComposeDriver, targets: HealthTarget[], options: HealthOptions): Promise<HealthOutcome> {
  const started = Date.now();
  const deadline = started + options.timeoutSeconds * 1000;
  const settleMs = Math.max(0, (options.settleSeconds ?? 0) * 1000);
  const pending = new Map(targets.map((t) => [t.service, t]));
  const lastSeen = new Map<string, string>();
  // What each service looked like when it was first healthy: the same containers, not restarted, must stay so.
  const baseline = new Map<string, Map<string, number>>();
  let settleUntil: number | undefined;
  // The engine's events wake the wait as soon as a container changes (a healthcheck passing, a
  // crash), so Lifeline notices within milliseconds, not at its next poll; polling stays the rule.
  const wake = new Wakeup();
  const watcher = driver.watchEvents(() => wake.notify(), options.timeoutSeconds + settleMs / 1000);
  try {
    // Listing goes through Compose (slow with v1); afterwards only `docker inspect` polls the known ids.
    let known: string[] | undefined;
    for (;;) {
      const containers = known ? await driver.inspect(known).catch(() => undefined) : await driver.projectContainers(options.overrideFile);
      if (!containers) {
        // A known container is gone: in the settle window that is a replaced container, so list again and judge.
        known = undefined;
        continue;
      }
      known = containers.map((c) => c.id);
      if (settleUntil === undefined) {
        for (const target of [...pending.values()]) {
          const own = containers.filter((c) => c.service === target.service);
          const verdict = await judge(target, own, options.previousContainers);
          lastSeen.set(target.service, verdict.detail);
          if (verdict.relist) known = undefined;
          if (verdict.state === 'healthy') {
            if (verdict.noHealthcheck) options.logger.warn(`${target.service} has no Compose healthcheck and no healthUrl: counting "running" as healthy`);
            pending.delete(target.service);
            baseline.set(target.service, new Map(own.map((c) => [c.id, c.restartCount])));
            options.logger.info(`${target.service}: healthy (${verdict.detail})`);
          } else if (verdict.state === 'failed') {
            return { healthy: false, elapsedMs: Date.now() - started, service: target.service, reason: verdict.detail, warnings: [] };
          }
        }
        if (pending.size === 0) {
          if (settleMs === 0) return finish(await proveAnswers(targets, containers, options), started);
          settleUntil = Date.now() + settleMs;
          options.logger.info(`all healthy; every check must keep passing for ${settleMs / 1000}s (settle window)`);
          known = undefined;
          continue;
        }
        if (Date.now() >= deadline) {
          const [service] = pending.keys();
          return {
            healthy: false,
            elapsedMs: Date.now() - started,
            service: service!,
            reason: `not healthy within ${options.timeoutSeconds}s (last seen: ${lastSeen.get(service!) ?? 'nothing'})`,
            warnings: [],
          };
        }
        await wake.wait(Math.min(POLL_MS, Math.max(deadline - Date.now(), 0)));
        continue;
      }

      const into = ((settleMs - (settleUntil - Date.now())) / 1000).toFixed(1);
      for (const target of targets) {
        const own = containers.filter((c) => c.service === target.service);
        const seen = baseline.get(target.service)!;
        const changed = own.find((c) => !seen.has(c.id) || seen.get(c.id) !== c.restartCount) ?? (own.length < seen.size ? undefined : null);
        if (changed !== null) {
          const what = changed
            ? `container ${changed.id.slice(0, 12)} ${seen.has(changed.id) ? `restarted (restart count ${changed.restartCount})` : 'replaced the one that was healthy'}`
            : 'a container that was healthy is gone';
          return { healthy: false, elapsedMs: Date.now() - started, service: target.service, reason: `${what} ${into}s into the ${settleMs / 1000}s settle window`, warnings: [] };
        }
        const verdict = await judge(target, own, options.previousContainers);
        if (verdict.state !== 'healthy') {
          return {
            healthy: false,
            elapsedMs: Date.now() - started,
            service: target.service,
            reason: `stopped being healthy ${into}s into the ${settleMs / 1000}s settle window: ${verdict.detail}`,
            warnings: [],
          };
        }
      }
      // At the end of the settle window: what answers each health URL must be the service's new container.
      if (Date.now() >= settleUntil) return finish(await proveAnswers(targets, containers, options), started);
      await wake.wait(Math.min(POLL_MS, Math.max(settleUntil - Date.now(), 0)));
    }
  } finally {
    watcher.stop();
  }
}

interface ProofResult {
  failed?: { service: string; reason: string; fix: string };
  warnings: string[];
}

function finish(result: ProofResult, started: number): HealthOutcome {
  const elapsedMs = Date.now() - started;
  if (result.failed) return { healthy: false, elapsedMs, ...result.failed, warnings: result.warnings };
  return { healthy: true, elapsedMs, warnings: result.warnings };
}

/**
 * For each service with a healthUrl: the process holding the URL's listening socket must belong to
 * one of the service's containers seen now (the new ones: old ones never count as healthy). A
 * stray process that took the port while the old container was stopped fails the service; an
 * answer that cannot be tied to any process here is a warning, or a failure with requireOwnedHealth.
 */
async function proveAnswers(targets: HealthTarget[], containers: ContainerState[], options: HealthOptions): Promise<ProofResult> {
  const warnings: string[] = [];
  for (const target of targets) {
    if (!target.healthUrl) continue;
    const own = containers.filter((c) => c.service === target.service && c.running && !options.previousContainers?.has(c.id));
    let proof: HealthProof;
    try {
      proof = await proveHealthOwner(
        target.healthUrl,
        own.map((c) => ({ id: c.id, pid: c.pid, addresses: c.addresses })),
        { engineOnThisHost: options.engineOnThisHost },
      );
    } catch (error) {
      proof = { status: 'unknown', reason: `looking it up failed: ${(error as Error).message}` };
    }
    const verdict = judgeProof(target.service, target.healthUrl, proof, options.requireOwnedHealth ?? false);
    if (verdict.failed) return { failed: verdict.failed, warnings };
    if (verdict.warning) {
      options.logger.warn(verdict.warning);
      warnings.push(verdict.warning);
    }
    if (verdict.info) options.logger.info(verdict.info);
  }
  return { warnings };
}

/** What a proof means for a service: the failure (with its fix), the warning, or the line to log. Shared with the drill's app check. */
export function judgeProof(service: string, url: string, proof: HealthProof, requireOwned: boolean): { failed?: { service: string; reason: string; fix: string }; warning?: string; info?: string } {
  if (proof.status === 'owned') return { info: `${service}: ${url} ${proof.detail}` };
  if (proof.status === 'other' && proof.strangers.length === 0) {
    return {
      failed: {
        service,
        reason: `${url} answered 2xx, but ${proof.detail}, so the answer proves nothing about ${service}`,
        fix: `make ${service} listen on port ${proof.port} as its healthUrl says (or point compose.services.<role>.healthUrl at the port it listens on); if something else answered there during the deploy, find and stop it, then deploy again`,
      },
    };
  }
  if (proof.status === 'other') {
    const pids = proof.strangers.map((p) => p.pid).join(' ');
    return {
      failed: {
        service,
        reason: `${url} is not answered by ${service}'s new container: ${proof.detail}; its 2xx may come from that process, so it proves nothing about ${service}`,
        fix: `stop what holds port ${proof.port} (kill ${pids}; ss -ltnp 'sport = :${proof.port}' lists it), make ${service} listen on port ${proof.port} as its healthUrl says (or point compose.services.<role>.healthUrl at the port it listens on), then deploy again`,
      },
    };
  }
  const message = `${service}: ${UNTIED_HEALTH} (${url}: ${proof.reason})`;
  if (requireOwned) {
    return {
      failed: {
        service,
        reason: `${message}; compose.requireOwnedHealth is true`,
        fix: 'run Lifeline as root on the engine host, with a health URL on this host (127.0.0.1 and the host network), or set compose.requireOwnedHealth: false to accept the answer with a warning',
      },
    };
  }
  return { warning: `${message}; its 2xx was accepted (set compose.requireOwnedHealth: true to refuse such answers)` };
}

/** A sleep that an event cuts short; an event that arrived while nobody waited is not lost. */
class Wakeup {
  private pending = false;
  private wakeWaiter?: () => void;

  notify(): void {
    this.pending = true;
    this.wakeWaiter?.();
  }

  wait(ms: number): Promise<void> {
    if (this.pending) {
      this.pending = false;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.wakeWaiter = undefined;
        this.pending = false;
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.wakeWaiter = done;
    });
  }
}

interface Verdict {
  state: 'healthy' | 'waiting' | 'failed';
  detail: string;
  noHealthcheck?: boolean;
  /** The containers seen are not the ones to watch yet: list the project again. */
  relist?: boolean;
}

/** Both the Compose healthcheck and the health URL must pass, where both exist, for the service's own new containers. */
async function judge(target: HealthTarget, containers: ContainerState[], previous: ReadonlySet<string> | undefined): Promise<Verdict> {
  if (containers.length === 0) return { state: 'waiting', detail: 'no container yet', relist: true };
  for (const container of containers) {
    const id = container.id.slice(0, 12);
    if (previous?.has(container.id)) return { state: 'waiting', detail: `container ${id} ran before this deploy (not recreated yet)`, relist: true };
    if (target.expectedImage && container.imageRef !== target.expectedImage) return { state: 'waiting', detail: `container ${id} still runs ${container.imageRef}`, relist: true };
    if (!container.running) return { state: container.status === 'restarting' ? 'waiting' : 'failed', detail: `container ${id} ${container.status} (exit code ${container.exitCode})` };
    if (container.health === 'unhealthy') return { state: 'failed', detail: 'Docker marked it unhealthy (its Compose healthcheck kept failing)' };
    if (container.health !== undefined && container.health !== 'healthy') return { state: 'waiting', detail: `healthcheck ${container.health}` };
    if (target.healthUrl) {
      const answer = await httpStatus(target.healthUrl);
      if (!answer.ok) return { state: 'waiting', detail: `${target.healthUrl}: ${answer.detail}` };
    }
  }
  const checks = [containers[0]!.health !== undefined ? 'Compose healthcheck healthy' : '', target.healthUrl ? `${target.healthUrl} answered 2xx` : ''].filter(Boolean);
  if (checks.length === 0) return { state: 'healthy', detail: 'running', noHealthcheck: true };
  return { state: 'healthy', detail: checks.join(', ') };
}

/** One GET of a health URL; never throws. */
export function httpStatus(url: string): Promise<{ ok: boolean; answered: boolean; detail: string }> {
  // A connection of its own per check: a pooled keep-alive connection to a process that has since
  // handed the port over would keep answering 2xx while the ownership proof sees the new listener.
  return freshHttpStatus(url, HTTP_TIMEOUT_MS);
}
