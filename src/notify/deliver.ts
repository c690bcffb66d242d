import type { Logger } from '../logger';

/** A few seconds per try and a couple of retries: a receiver that is down must not hold a backup up. */
export const DELIVERY_TIMEOUT_MS = 4000;
export const DELIVERY_RETRIES = 2;

export interface DeliveryOptions {
  logger: Logger;
  timeoutMs?: number;
  retries?: number;
  /** Waits between tries (tests shorten it). */
  backoffMs?: number;
}

/**
 * Sends one HTTP request to a notification receiver. Never throws: a notification that cannot be
 * delivered is a warning and changes nothing about the command's outcome. The URL is a secret
 * (a webhook's path, a ping UUID): messages name only its host.
 */
export async function deliver(url: string, init: { method: 'GET' | 'POST'; body?: string; contentType?: string }, what: string, options: DeliveryOptions): Promise<boolean> {
  const retries = options.retries ?? DELIVERY_RETRIES;
  let last = '';
  for (let attempt = 0; attempt <= retries; attempt++) {
    if (attempt > 0) await new Promise((resolve) => setTimeout(resolve, (options.backoffMs ?? 500) * attempt));
    try {
      const response = await fetch(url, {
        method: init.method,
        body: init.body,
        headers: init.contentType ? { 'content-type': init.contentType } : undefined,
        signal: AbortSignal.timeout(options.timeoutMs ?? DELIVERY_TIMEOUT_MS),
        redirect: 'error',
      });
      await response.arrayBuffer().catch(() => undefined);
      if (response.ok) return true;
      last = `HTTP ${response.status}`;
      // A receiver that refuses the message will refuse it again.
      if (response.status >= 400 && response.status < 500 && response.status !== 429) break;
    } catch (error) {
      last =
        (error as Error).name === 'TimeoutError'
          ? `no answer within ${Math.round((options.timeoutMs ?? DELIVERY_TIMEOUT_MS) / 1000)}s`
          : (((error as Error).cause as Error | undefined)?.message ?? (error as Error).message);
    }
  }
  options.logger.warn(`could not deliver the ${what} to ${hostOf(url)} (${last}); the command's result is unchanged`);
  return false;
}

function hostOf(url: string): string {
  try {
    return new URL(url).host;
  } catch {
    return 'the receiver';
  }
}

/** healthchecks.io's convention: `URL/start`, `URL` (success), `URL/fail`, keeping a query string in place. */
export function pingUrl(base: string, suffix: '' | 'start' | 'fail'): string {
  if (!suffix) return base;
  const url = new URL(base);
  url.pathname = `${url.pathname.replace(/\/+$/, '')}/${suffix}`;
  return url.toString();
}
