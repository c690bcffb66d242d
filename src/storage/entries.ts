import { lstat, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { EntryKind } from '../catalog/store';
import { parseSums, SUMS_FILE, type SumEntry } from '../catalog/sums';
import { readEntryText } from '../catalog/confine';
import { usageError } from '../errors';

/** Metadata file names Lifeline writes today; used only to break a tie, never required. */
const KNOWN_METADATA_FILES = ['backup.json', 'release.json', 'report.json', 'export.json'];

/** A complete catalog entry found on disk, whatever its kind. */
export interface LocalEntry {
  /** The path between the environment and the id: `backups`, `releases`, `tenants/acme/exports`. */
  kind: string;
  id: string;
  dir: string;
  metadataFile: string;
  sums: SumEntry[];
}

/**
 * The metadata file of an entry: the one JSON file that SHA256SUMS does not list (the catalog
 * writes it last, after the sums), or a known metadata file that SHA256SUMS covers too (a drill's
 * report.json, which is signed). Undefined when there is none, so the entry is not complete.
 */
export function metadataFileOf(fileNames: readonly string[], sums: readonly SumEntry[]): string | undefined {
  const listed = new Set(sums.map((s) => s.file));
  const candidates = fileNames.filter((name) => name.endsWith('.json') && !name.startsWith('.') && !listed.has(name));
  if (candidates.length === 1) return candidates[0];
  return candidates.find((name) => KNOWN_METADATA_FILES.includes(name)) ?? (candidates.length === 0 ? fileNames.find((name) => listed.has(name) && KNOWN_METADATA_FILES.includes(name)) : undefined);
}

/**
 * Every complete entry under `<store>/<env>`: any directory not starting with '.', holding
 * SHA256SUMS and its metadata file. Nothing kind-specific, so new kinds sync without changes here.
 */
export async function listLocalEntries(envDir: string, maxDepth = 5): Promise<LocalEntry[]> {
  const entries: LocalEntry[] = [];
  const walk = async (dir: string, relative: string[], depth: number): Promise<void> => {
    let names: string[];
    try {
      names = await readdir(dir);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT' || (error as NodeJS.ErrnoException).code === 'ENOTDIR') return;
      throw error;
    }
    if (names.includes(SUMS_FILE) && relative.length >= 2) {
      const sums = parseSums(await readEntryText(dir, SUMS_FILE));
      const metadataFile = metadataFileOf(names, sums);
      if (metadataFile) entries.push({ kind: relative.slice(0, -1).join('/'), id: relative[relative.length - 1]!, dir, metadataFile, sums });
      return;
    }
    if (depth >= maxDepth) return;
    for (const name of names.sort()) {
      if (name.startsWith('.')) continue;
      const path = join(dir, name);
      // lstat: a symlinked directory would lead the walk (and an upload) outside the catalog.
      if ((await lstat(path)).isDirectory()) await walk(path, [...relative, name], depth + 1);
    }
  };
  await walk(envDir, [], 0);
  return entries;
}

/** The catalog kinds an entry may be fetched into; anything else in a bucket is not ours. */
export function asEntryKind(kind: string): EntryKind {
  if (kind === 'backups' || kind === 'releases' || kind === 'drills' || /^tenants\/[A-Za-z0-9][A-Za-z0-9._+-]*\/exports$/.test(kind)) return kind as EntryKind;
  throw usageError('UNKNOWN_KIND', `"${kind}" is not a catalog kind`, 'use backups, releases, drills or tenants/<tenant>/exports');
}

/** Where an environment's entries live in the bucket: `<prefix><env>/<kind>/<id>/<file>`, mirroring the catalog. */
export class RemoteLayout {
  constructor(
    readonly prefix: string,
    readonly env: string,
  ) {}

  envPrefix(): string {
    return `${this.prefix}${this.env}/`;
  }

  entryPrefix(kind: string, id: string): string {
    return `${this.envPrefix()}${kind}/${id}/`;
  }

  /** Splits an object key into entry and file; undefined for keys outside this environment. */
  parse(key: string): { kind: string; id: string; file: string } | undefined {
    if (!key.startsWith(this.envPrefix())) return undefined;
    const parts = key.slice(this.envPrefix().length).split('/');
    if (parts.length < 3 || parts.some((p) => p === '')) return undefined;
    return { kind: parts.slice(0, -2).join('/'), id: parts[parts.length - 2]!, file: parts[parts.length - 1]! };
  }
}
