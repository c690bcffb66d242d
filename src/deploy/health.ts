import type { Logger } from '../logger';
import type { ComposeDriver, ContainerState } from './compose';

export interface HealthTarget {
  /** The Compose service name. */
  service: string;
  /** When set, a 2xx answer from this URL is what healthy means; otherwise the Compose healthcheck. */
  healthUrl?: string;
  /** The image reference the service must be running, so an old container never counts as healthy. */
  expectedImage?: string;
}

export type HealthOutcome = { healthy: true; elapsedMs: number } | { healthy: false; elapsedMs: number; service: string; reason: string };

const POLL_MS = 250;
const HTTP_TIMEOUT_MS = 2000;

/**
 * Waits until every target is healthy, or one of them fails. A service fails at once when its
 * container exits or Docker marks it `unhealthy` (its healthcheck failed `retries` times in a row,
 * after its `start_period`); otherwise it fails when the timeout is reached.
 */
export async function waitForHealth(driver: ComposeDriver, targets: HealthTarget[], options: { timeoutSeconds: number; overrideFile?: string; logger: Logger }): Promise<HealthOutcome> {
  const started = Date.now();
  const deadline = started + options.timeoutSeconds * 1000;
  const pending = new Map(targets.map((t) => [t.service, t]));
  const lastSeen = new Map<string, string>();
  // The engine's events wake the wait as soon as a container changes (a healthcheck passing, a
  // crash), so Lifeline notices within milliseconds, not at its next poll; polling stays the rule.
  const wake = new Wakeup();
  const watcher = driver.watchEvents(() => wake.notify(), options.timeoutSeconds);
  try {
    // Listing goes through Compose (slow with v1); afterwards only `docker inspect` polls the known ids.
    let known: string[] | undefined;
    for (;;) {
      const containers = known ? await driver.inspect(known).catch(() => undefined) : await driver.projectContainers(options.overrideFile);
      if (!containers) {
        known = undefined;
        continue;
      }
      known = containers.map((c) => c.id);
      for (const target of [...pending.values()]) {
        const verdict = await judge(target, containers.filter((c) => c.service === target.service));
        lastSeen.set(target.service, verdict.detail);
        if (verdict.relist) known = undefined;
        if (verdict.state === 'healthy') {
          if (verdict.noHealthcheck) options.logger.warn(`${target.service} has no Compose healthcheck and no healthUrl: counting "running" as healthy`);
          pending.delete(target.service);
          options.logger.info(`${target.service}: healthy (${verdict.detail})`);
        } else if (verdict.state === 'failed') {
          return { healthy: false, elapsedMs: Date.now() - started, service: target.service, reason: verdict.detail };
        }
      }
      if (pending.size === 0) return { healthy: true, elapsedMs: Date.now() - started };
      if (Date.now() >= deadline) {
        const [service] = pending.keys();
        return { healthy: false, elapsedMs: Date.now() - started, service: service!, reason: `not healthy within ${options.timeoutSeconds}s (last seen: ${lastSeen.get(service!) ?? 'nothing'})` };
      }
      await wake.wait(Math.min(POLL_MS, Math.max(deadline - Date.now(), 0)));
    }
  } finally {
    watcher.stop();
  }
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

async function judge(target: HealthTarget, containers: ContainerState[]): Promise<Verdict> {
  if (containers.length === 0) return { state: 'waiting', detail: 'no container yet', relist: true };
  for (const container of containers) {
    const id = container.id.slice(0, 12);
    if (target.expectedImage && container.imageRef !== target.expectedImage) return { state: 'waiting', detail: `container ${id} still runs ${container.imageRef}`, relist: true };
    if (!container.running) return { state: container.status === 'restarting' ? 'waiting' : 'failed', detail: `container ${id} ${container.status} (exit code ${container.exitCode})` };
    if (target.healthUrl) {
      const answer = await httpStatus(target.healthUrl);
      if (answer.ok) continue;
      return { state: 'waiting', detail: `${target.healthUrl}: ${answer.detail}` };
    }
    if (container.health === undefined) return { state: 'healthy', detail: 'running', noHealthcheck: true };
    if (container.health === 'unhealthy') return { state: 'failed', detail: 'Docker marked it unhealthy (its Compose healthcheck kept failing)' };
    if (container.health !== 'healthy') return { state: 'waiting', detail: `healthcheck ${container.health}` };
  }
  return { state: 'healthy', detail: target.healthUrl ? `${target.healthUrl} answered 2xx` : 'Compose healthcheck healthy' };
}
async function httpStatus(url: string): Promise<{ ok: boolean; detail: string }> {
  try {
    const response = await fetch(url, { signal: AbortSignal.timeout(HTTP_TIMEOUT_MS), redirect: 'manual' });
    await response.body?.cancel();
    return { ok: response.status >= 200 && response.status < 300, detail: `HTTP ${response.status}` };
  } catch (error) {
    return { ok: false, detail: (error as Error).message };
  }
}
