import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Catalog } from '../catalog/store';
import type { Logger } from '../logger';
import { listBackups, type BackupEntry } from './metadata';

export interface RetentionPolicy {
  keepLast: number;
  keepDaily: number;
  keepWeekly: number;
}

export interface RetentionDecision {
  id: string;
  createdAt: string;
  label: string;
  keep: boolean;
  /** Why it is kept (every rule that holds it), or why it may go. */
  reasons: string[];
}

/**
 * Which backups the policy keeps: the newest `keepLast`; the newest of each of the last
 * `keepDaily` days and `keepWeekly` ISO weeks that have backups (UTC); always the newest verified
 * backup and every backup a release manifest references. Pure: the caller deletes.
 */
export function planRetention(backups: readonly BackupEntry[], policy: RetentionPolicy, referenced: ReadonlyMap<string, string[]>): RetentionDecision[] {
  const newestFirst = [...backups].sort((a, b) => b.metadata.createdAt.localeCompare(a.metadata.createdAt) || b.id.localeCompare(a.id));
  const reasons = new Map<string, string[]>(newestFirst.map((b) => [b.id, []]));
  newestFirst.slice(0, policy.keepLast).forEach((b, i) => reasons.get(b.id)!.push(`last ${i + 1} of ${policy.keepLast}`));
  keepNewestPerBucket(newestFirst, policy.keepDaily, (d) => d.toISOString().slice(0, 10), 'daily', reasons);
  keepNewestPerBucket(newestFirst, policy.keepWeekly, isoWeek, 'weekly', reasons);
  const newestVerified = newestFirst.find((b) => b.metadata.verified?.ok);
  if (newestVerified) reasons.get(newestVerified.id)!.push('newest verified backup');
  for (const [id, releases] of referenced) reasons.get(id)?.push(`referenced by release ${releases.join(', ')}`);
  return newestFirst.map((b) => {
    const held = reasons.get(b.id)!;
    return { id: b.id, createdAt: b.metadata.createdAt, label: b.metadata.label, keep: held.length > 0, reasons: held.length ? held : ['outside every retention rule'] };
  });
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
 * Backup ids referenced by the environment's release manifests
 * (`<store>/<env>/releases/<version>/manifest.json`). Read defensively: an in-toto statement's
 * `predicate.backup.id` or a top-level `backup.id`; an unreadable manifest is reported, and
 * since it might protect a backup, nothing is pruned while one is unreadable.
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
    const path = join(dir, version, 'manifest.json');
    let text: string;
    try {
      text = await readFile(path, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') continue;
      unreadable.push(path);
      continue;
    }
    let id: unknown;
    try {
      const doc = JSON.parse(text) as { predicate?: { backup?: { id?: unknown } }; backup?: { id?: unknown } };
      id = doc?.predicate?.backup?.id ?? doc?.backup?.id;
    } catch {
      unreadable.push(path);
      continue;
    }
    if (typeof id === 'string' && id) referenced.set(id, [...(referenced.get(id) ?? []), version]);
  }
  return { referenced, unreadable };
}

export interface PruneResult {
  applied: boolean;
  decisions: RetentionDecision[];
  deleted: string[];
  /** Manifests that could not be read; while any exist nothing is deleted. */
  unreadableManifests: string[];
}

/** Plans retention and, with `apply`, removes the backups the plan lets go. */
export async function pruneBackups(catalog: Catalog, env: string, policy: RetentionPolicy, options: { apply: boolean; logger: Logger }): Promise<PruneResult> {
  const backups = await listBackups(catalog, env);
  const { referenced, unreadable } = await backupsReferencedByReleases(catalog, env);
  const decisions = planRetention(backups, policy, referenced);
  const deleted: string[] = [];
  if (options.apply && unreadable.length === 0) {
    for (const decision of decisions) {
      if (decision.keep) continue;
      const entry = backups.find((b) => b.id === decision.id)!;
      await catalog.remove(entry);
      deleted.push(decision.id);
      options.logger.info(`deleted backup ${decision.id} (${decision.createdAt}, ${decision.label})`);
    }
  }
  for (const path of unreadable) options.logger.warn(`cannot read release manifest ${path}; nothing is deleted until it is fixed`);
  return { applied: options.apply && unreadable.length === 0, decisions, deleted, unreadableManifests: unreadable };
}
