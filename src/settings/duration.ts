import { usageError } from '../errors';

const UNITS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86400, w: 604800 };

/** Parses `90s`, `15m`, `4h`, `7d`, `2w` (or a bare number of seconds) into seconds. */
export function parseDuration(value: string, keyPath = 'duration'): number {
  const text = value.trim();
  const match = /^(\d+(?:\.\d+)?)\s*([smhdw]?)$/i.exec(text);
  if (!match) {
    throw usageError('BAD_DURATION', `${keyPath}: "${value}" is not a duration`, 'write a number followed by s, m, h, d or w, e.g. 90s, 15m, 4h, 7d');
  }
  const amount = Number(match[1]);
  const unit = (match[2] || 's').toLowerCase();
  return Math.round(amount * UNITS[unit]!);
}

/**
 * A wait or a target that must be more than zero: a zero `--lock-timeout` would be PostgreSQL's
 * "wait forever", and a zero RTO or RPO target would make every drill fail.
 */
export function parsePositiveDuration(value: string, keyPath = 'duration', fix = 'write a duration of at least 1s, e.g. 90s, 15m, 4h, 7d'): number {
  const seconds = parseDuration(value, keyPath);
  if (seconds <= 0) throw usageError('BAD_DURATION', `${keyPath}: "${value}" is zero`, fix);
  return seconds;
}

export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds)) return 'n/a';
  if (seconds < 120) return `${Math.round(seconds * 10) / 10}s`;
  if (seconds < 7200) return `${Math.round(seconds / 6) / 10}m`;
  if (seconds < 172800) return `${Math.round(seconds / 360) / 10}h`;
  return `${Math.round(seconds / 8640) / 10}d`;
}
