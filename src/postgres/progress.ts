import type { Logger } from '../logger';
import { formatBytes } from '../report/progress';

// The progress module is src/report/progress.ts; this file keeps the byte hook pg_dump's stream calls.
export { formatBytes };

export interface ProgressSink {
  /** Called often with the bytes so far; the sink shows them (src/report/progress.ts). */
  onBytes?(what: string, bytes: number, bytesPerSecond: number): void;
}

/**
 * Feeds a sink on every chunk. Without a sink (a caller that shows no progress of its own) it logs
 * `what: N MB at R MB/s` every `intervalMs`; with one, the sink decides what to show and when.
 */
export function progressReporter(logger: Logger, what: string, sink: ProgressSink = {}, intervalMs = 10_000): (bytes: number) => void {
  const started = Date.now();
  let lastLog = started;
  return (bytes: number) => {
    const now = Date.now();
    const rate = bytes / Math.max((now - started) / 1000, 0.001);
    if (sink.onBytes) {
      sink.onBytes(what, bytes, rate);
      return;
    }
    if (now - lastLog >= intervalMs) {
      lastLog = now;
      logger.info(`${what}: ${formatBytes(bytes)} at ${formatBytes(rate)}/s`);
    }
  };
}
