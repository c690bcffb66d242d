/** A backup as RPO sees it: when it was taken, and whether it is known to be bad. */
export interface BackupPoint {
  id: string;
  createdAt: string;
  /** False when a verification found it damaged: it cannot be restored, so it is no recovery point. */
  usable: boolean;
}

export interface RpoMeasure {
  /** Age of the drilled backup at drill time: the data a restore from it would lose. */
  backupAgeSeconds: number;
  /** The largest gap between consecutive usable backups over the window, counting the gap up to now. */
  largestGapSeconds: number;
  /** Where the largest gap lies. */
  largestGap: { from: string | null; to: string };
  windowSeconds: number;
  /** Usable backups taken within the window. */
  backupsInWindow: number;
  /** The worse of the two: the RPO the environment actually achieves. */
  seconds: number;
}

/**
 * RPO over a window: the worst case is the longest stretch with no usable backup. A gap that
 * straddles the window's start counts in full (data written then was still exposed), and the
 * stretch from the newest backup to `now` counts too; with no usable backup at all, the whole
 * window is exposed.
 */
export function measureRpo(backups: BackupPoint[], drilledCreatedAt: string, now: Date, windowSeconds: number): RpoMeasure {
  const nowMs = now.getTime();
  const windowStart = nowMs - windowSeconds * 1000;
  const times = backups
    .filter((b) => b.usable)
    .map((b) => ({ iso: b.createdAt, ms: Date.parse(b.createdAt) }))
    .filter((t) => Number.isFinite(t.ms) && t.ms <= nowMs)
    .sort((a, b) => a.ms - b.ms);
  let largest = { seconds: 0, from: null as string | null, to: now.toISOString() };
  const consider = (fromMs: number | null, fromIso: string | null, toMs: number, toIso: string) => {
    const seconds = (toMs - (fromMs ?? windowStart)) / 1000;
    if (seconds > largest.seconds) largest = { seconds, from: fromIso, to: toIso };
  };
  const inWindow = times.filter((t) => t.ms >= windowStart);
  // Before the environment's first backup there was nothing to lose: that stretch is no gap.
  let previous = times.filter((t) => t.ms < windowStart).pop() ?? null;
  for (const t of inWindow) {
    if (previous) consider(previous.ms, previous.iso, t.ms, t.iso);
    previous = t;
  }
  consider(previous?.ms ?? null, previous?.iso ?? null, nowMs, now.toISOString());
  const backupAgeSeconds = Math.max(0, (nowMs - Date.parse(drilledCreatedAt)) / 1000);
  return {
    backupAgeSeconds,
    largestGapSeconds: largest.seconds,
    largestGap: { from: largest.from, to: largest.to },
    windowSeconds,
    backupsInWindow: inWindow.length,
    seconds: Math.max(backupAgeSeconds, largest.seconds),
  };
}
