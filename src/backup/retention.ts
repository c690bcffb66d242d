import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Catalog } from '../catalog/store';
import type { Logger } from '../logger';
import { listBackups, type BackupEntry } from './metadata';

export interface RetentionPolicy {
  keepLast: number;
  keepDaily: number;
  keepWeekly: number;
  /**
   * Pre-restore backups (taken of a restore's target, which may be any database) are their own
   * class: they never count toward, or take the place of, the environment's own backups.
   */
  preRestore: { keepLast: number; keepDays: number };
}

export interface RetentionDecision {
  id: string;
  createdAt: string;
  label: string;
  database: string;
  keep: boolean;
  /** Why it is kept (every rule that holds it), or why it may go. */
  reasons: string[];
}

/** What holds backups beyond the policy's counts. */
export interface RetentionProtections {
  /** Backup id -> the releases whose manifest (or release record) references it. */
  referenced: ReadonlyMap<string, string[]>;
  /** Passing drills, newest first: the newest one's backup is kept, and a drilled backup counts as verified (as for the gate). */
  passingDrills?: readonly { id: string; backupId: string }[];
}

const DAY_MS = 24 * 60 * 60 * 1000;

/**
 * Which backups the policy keeps. The environment's own backups: the newest `keepLast`; the
 * newest of each of the last `keepDaily` days and `keepWeekly` ISO weeks that have backups (UTC).
 * Pre-restore backups, counted apart: the newest `preRestore.keepLast` and those younger than
 * `preRestore.keepDays`. Always, in each class: the newest verified backup of each database
 * (verified by `lifeline verify` or restored by a passing drill). Always: every backup a release
 * references and the backup of the newest passing drill. Pure: the caller deletes.
 */
export function planRetention(backups: readonly BackupEntry[], policy: RetentionPolicy, protections: RetentionProtections, now = new Date()): RetentionDecision[] {
  const newestFirst = [...backups].sort((a, b) => b.metadata.createdAt.localeCompare(a.metadata.createdAt) || b.id.localeCompare(a.id));
  const reasons = new Map<string, string[]>(newestFirst.map((b) => [b.id, []]));
  const own = newestFirst.filter((b) => b.metadata.label !== 'pre-restore');
  const preRestore = newestFirst.filter((b) => b.metadata.label === 'pre-restore');

  own.slice(0, policy.keepLast).forEach((b, i) => reasons.get(b.id)!.push(`last ${i + 1} of ${policy.keepLast}`));
  keepNewestPerBucket(own, policy.keepDaily, (d) => d.toISOString().slice(0, 10), 'daily', reasons);
  keepNewestPerBucket(own, policy.keepWeekly, isoWeek, 'weekly', reasons);

  preRestore.slice(0, policy.preRestore.keepLast).forEach((b, i) => reasons.get(b.id)!.push(`pre-restore: last ${i + 1} of ${policy.preRestore.keepLast}`));
  const youngerThan = now.getTime() - policy.preRestore.keepDays * DAY_MS;
  for (const b of preRestore) {
    if (Date.parse(b.metadata.createdAt) > youngerThan) reasons.get(b.id)!.push(`pre-restore: younger than ${policy.preRestore.keepDays} days`);
  }

  const drilled = new Set((protections.passingDrills ?? []).map((d) => d.backupId));
  for (const [cls, members] of [
    ['', own],
    ['pre-restore ', preRestore],
  ] as const) {
    const seen = new Set<string>();
    for (const b of members) {
      if (!(b.metadata.verified?.ok === true || drilled.has(b.id))) continue;
      const key = databaseKey(b);
      if (seen.has(key)) continue;
      seen.add(key);
      reasons.get(b.id)!.push(`newest verified ${cls}backup of database ${b.metadata.database ?? '(unknown)'}`);
    }
  }
  for (const [id, releases] of protections.referenced) reasons.get(id)?.push(`referenced by release ${releases.join(', ')}`);
  const newestDrill = protections.passingDrills?.[0];
  if (newestDrill) reasons.get(newestDrill.backupId)?.push(`restored by the newest passing drill ${newestDrill.id}`);

  return newestFirst.map((b) => {
    const held = reasons.get(b.id)!;
    return { id: b.id, createdAt: b.metadata.createdAt, label: b.metadata.label, database: b.metadata.database, keep: held.length > 0, reasons: held.length ? held : ['outside every retention rule'] };
  });
}

/** A database is its name on its server (the system identifier, where the backup recorded one). */
function databaseKey(b: BackupEntry): string {
  return `${b.metadata.systemIdentifier ?? ''}/${b.metadata.database ?? ''}`;
}

function keepNewestPerBucket(newestFirst: readonly BackupEntry[], count: number, bucketOf: (d: Date) => string, rule: string, reasons: Map<string, string[]>): void {
  const seen = new Set<string>();
  for (const backup of newestFirst) {
    if (seen.size >= count) return;
    const bucket = bucketOf(new Date(backup.metadata.createdAt));
    if (seen.has(bucket)) continue;
    seen.add(bucket);
    reasons.get(backup.id)!.push(`${rule} ${bucket}`);
  }
}

/** ISO 8601 week, e.g. `2026-W47`. */
export function isoWeek(date: Date): string {
  const d = new Date(Date.UTC(date.getUTCFullYear(), date.getUTCMonth(), date.getUTCDate()));
  const day = d.getUTCDay() || 7;
  d.setUTCDate(d.getUTCDate() + 4 - day);
  const yearStart = Date.UTC(d.getUTCFullYear(), 0, 1);
  const week = Math.ceil(((d.getTime() - yearStart) / 86400000 + 1) / 7);
  return `${d.getUTCFullYear()}-W${String(week).padStart(2, '0')}`;
}

/**
 * Backup ids referenced by the environment's releases: the manifest
 * (`<store>/<env>/releases/<version>/manifest.json`, an in-toto statement's `predicate.backup.id`
 * or a top-level `backup.id`) and the release record beside it (`release.json`'s `backup.id`), so
 * every release a rollback may return to keeps its pre-migration backup. A file that exists but
 * cannot be read is reported, and since it might protect a backup, nothing is pruned meanwhile.
 */
export async function backupsReferencedByReleases(catalog: Catalog, env: string): Promise<{ referenced: Map<string, string[]>; unreadable: string[] }> {
  const dir = catalog.kindDir(env, 'releases');
  const referenced = new Map<string, string[]>();
  const unreadable: string[] = [];
  let versions: string[];
  try {
    versions = await readdir(dir);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return { referenced, unreadable };
    throw error;
  }
  for (const version of versions) {
    if (version.startsWith('.')) continue;
    for (const file of ['manifest.json', 'release.json']) {
      const path = join(dir, version, file);
      let text: string;
      try {
        text = await readFile(path, 'utf8');
      } catch (error) {
        const code = (error as NodeJS.ErrnoException).code;
        if (code === 'ENOENT' || code === 'ENOTDIR') continue;
        unreadable.push(path);
        continue;
      }
      let id: unknown;
      try {
        const doc = JSON.parse(text) as { predicate?: { backup?: { id?: unknown } }; backup?: { id?: unknown } } | null;
        id = doc?.predicate?.backup?.id ?? doc?.backup?.id;
      } catch {
        unreadable.push(path);
        continue;
      }
      const holders = referenced.get(id as string) ?? [];
      if (typeof id === 'string' && id && !holders.includes(version)) referenced.set(id, [...holders, version]);
    }
  }
  return { referenced, unreadable };
}

/**
 * Passing drills of restored catalog backups, newest first, as the release gate judges them: a
 * future-dated, foreign or self-contradicting report never decides which backups stay. The drill
 * room owns that judgement (`believedPassingDrills` in drill/gate), so the caller hands it in.
 */
export type PassingDrills = (catalog: Catalog, env: string, now?: Date) => Promise<{ id: string; backupId: string }[]>;

export interface PruneResult {
  applied: boolean;
  decisions: RetentionDecision[];
  deleted: string[];
  /** Manifests that could not be read; while any exist nothing is deleted. */
  unreadableManifests: string[];
}

/** Plans retention and, with `apply`, removes the backups the plan lets go. The caller holds the environment lock. */
export async function pruneBackups(
  catalog: Catalog,
  env: string,
  policy: RetentionPolicy,
  options: { apply: boolean; logger: Logger; now?: Date; passingDrills: PassingDrills },
): Promise<PruneResult> {
  const backups = await listBackups(catalog, env);
  const { referenced, unreadable } = await backupsReferencedByReleases(catalog, env);
  const decisions = planRetention(backups, policy, { referenced, passingDrills: await options.passingDrills(catalog, env, options.now) }, options.now);
  const deleted: string[] = [];
  if (options.apply && unreadable.length === 0) {
    for (const decision of decisions) {
      if (decision.keep) continue;
      const entry = backups.find((b) => b.id === decision.id)!;
      await catalog.remove(entry);
      deleted.push(decision.id);
      options.logger.info(`deleted backup ${decision.id} (${decision.createdAt}, ${decision.label}, database ${decision.database})`);
    }
  }
  for (const path of unreadable) options.logger.warn(`cannot read ${path}; nothing is deleted until it is fixed`);
  return { applied: options.apply && unreadable.length === 0, decisions, deleted, unreadableManifests: unreadable };
}
