import { usageError } from '../errors';
import type { Catalog, CatalogEntry, EntryMetadata } from '../catalog/store';

export const BACKUP_METADATA_FILE = 'backup.json';
export const POSTGRES_ARCHIVE_FILE = 'postgres.dump';
export const GLOBALS_FILE = 'globals.sql';
export const REDIS_SNAPSHOT_FILE = 'redis.rdb';

export const BACKUP_LABELS = ['scheduled', 'pre-migration', 'manual', 'pre-restore'] as const;
export type BackupLabel = (typeof BACKUP_LABELS)[number];

export interface BackupFile {
  name: string;
  bytes: number;
  sha256: string;
}

export interface RedisBackupFile extends BackupFile {
  /** Keys per logical database at snapshot time, e.g. `{ db0: 120 }`. */
  keys: Record<string, number>;
}

export interface VerificationCheck {
  name: string;
  ok: boolean;
  detail: string;
}

/** The `backup.json` of one backup: everything a restore needs to check itself against. */
export interface BackupMetadata extends EntryMetadata {
  schemaVersion: 1;
  id: string;
  environment: string;
  label: BackupLabel;
  release?: string;
  gitSha?: string;
  createdAt: string;
  startedAt: string;
  finishedAt: string;
  durationSeconds: number;
  database: string;
  serverVersion: string;
  pgDumpVersion: string;
  format: 'custom';
  compressLevel: number;
  files: {
    postgres: BackupFile;
    globals?: BackupFile;
    redis?: RedisBackupFile;
  };
  migrationHead: string | null;
  schemaFingerprint: string;
  /** Exact counts taken in the dump's own snapshot, keyed `schema.table`. */
  rowCounts: Record<string, number>;
  verified?: { at: string; ok: boolean; checks: VerificationCheck[] };
}

export type BackupEntry = CatalogEntry<BackupMetadata>;

/** The environment's complete backups, newest first. */
export async function listBackups(catalog: Catalog, env: string): Promise<BackupEntry[]> {
  const entries = await catalog.list<BackupMetadata>(env, 'backups', BACKUP_METADATA_FILE);
  // A backup.json of the wrong shape would break every reader: it is reported and the others are used.
  return entries.filter((entry) => {
    const problem = backupMetadataProblem(entry.metadata);
    if (problem) catalog.reportDamaged(`${entry.dir}/${BACKUP_METADATA_FILE}`, problem);
    return !problem;
  });
}

function backupMetadataProblem(metadata: BackupMetadata): string | undefined {
  const archive = (metadata.files as Partial<BackupMetadata['files']> | undefined)?.postgres;
  if (typeof archive?.name !== 'string' || typeof archive.sha256 !== 'string' || typeof archive.bytes !== 'number') return 'it names no PostgreSQL archive (files.postgres)';
  if (typeof metadata.label !== 'string') return 'it has no label';
  return undefined;
}

/**
 * One backup by id, or for `latest` the newest one that did not fail verification and is not a
 * `pre-restore` backup (that one may hold another database: the target of a restore, so it is
 * only ever used by id). An unknown id is the operator's mistake (exit 2).
 */
export async function findBackup(catalog: Catalog, env: string, idOrLatest: string): Promise<BackupEntry> {
  const wanted = idOrLatest.trim();
  if (wanted === '' || wanted === 'latest') {
    const newest = (await listBackups(catalog, env)).find((b) => b.metadata.label !== 'pre-restore' && b.metadata.verified?.ok !== false);
    if (!newest) {
      throw usageError('NO_BACKUPS', `environment ${env} has no usable backups in ${catalog.root} (pre-restore backups and backups that failed verification are only used by id)`, `take one first: lifeline backup --env ${env}; or pass the id from lifeline backups --env ${env}`);
    }
    return newest;
  }
  const entry = await catalog.get<BackupMetadata>(env, 'backups', wanted, BACKUP_METADATA_FILE);
  if (!entry) {
    throw usageError('BACKUP_NOT_FOUND', `backup ${wanted} does not exist in environment ${env} (store ${catalog.root})`, `list the backups with: lifeline backups --env ${env} (or pass --backup latest)`);
  }
  return entry;
}
