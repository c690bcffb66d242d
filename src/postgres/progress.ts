import type { Logger } from '../logger';

export interface ProgressSink {
  /** Called often with the bytes so far; for a terminal progress line. */
  onBytes?(what: string, bytes: number, bytesPerSecond: number): void;
}

/** Logs `what: N MB at R MB/s` every `intervalMs`, and feeds a live sink on every chunk. */
export function progressReporter(logger: Logger, what: string, sink: ProgressSink = {}, intervalMs = 10_000): (bytes: number) => void {
  const started = Date.now();
  let lastLog = started;
  return (bytes: number) => {
    const now = Date.now();
    const rate = bytes / Math.max((now - started) / 1000, 0.001);
    sink.onBytes?.(what, bytes, rate);
    if (now - lastLog >= intervalMs) {
      lastLog = now;
      logger.info(`${what}: ${formatBytes(bytes)} at ${formatBytes(rate)}/s`);
    }
  };
}

export function formatBytes(bytes: number): string {
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit++;
  }
  return `${value.toFixed(unit === 0 ? 0 : 1)} ${units[unit]}`;
}
