import { usageError } from '../errors';
import type { Catalog, CatalogEntry, EntryMetadata } from '../catalog/store';
import type { Compression } from '../settings/compression';
import type { DatabaseLevelState } from '../postgres/inspect';
import type { PayloadEncryption } from '../crypto/age';

export const BACKUP_METADATA_FILE = 'backup.json';
export const POSTGRES_ARCHIVE_FILE = 'postgres.dump';
export const GLOBALS_FILE = 'globals.sql';
export const REDIS_SNAPSHOT_FILE = 'redis.rdb';

export const BACKUP_LABELS = ['scheduled', 'pre-migration', 'manual', 'pre-restore'] as const;
export type BackupLabel = (typeof BACKUP_LABELS)[number];

export interface BackupFile {
  /** The stored name (`postgres.dump.age` when encrypted). */
  name: string;
  /** Size and sha256 of the stored bytes (the age file when encrypted): what SHA256SUMS lists. */
  bytes: number;
  sha256: string;
  /** Set when the payload is stored as an age file: recipients and the plaintext's sha256 and size. */
  encryption?: PayloadEncryption;
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
  /** The server's system identifier (pg_control_system()), when it could be read: which cluster the database was on. */
  systemIdentifier?: string;
  /** Privileges, settings, per-role settings, connection limit and comment of the database itself. */
  databaseState?: DatabaseLevelState;
  serverVersion: string;
  pgDumpVersion: string;
  format: 'custom';
  /** How pg_dump compressed the archive (absent in backups taken before it was recorded: gzip at `compressLevel`). */
  compression?: Compression;
  /** The gzip level (0 = none); only for gzip and uncompressed archives. */
  compressLevel?: number;
  files: {
    postgres: BackupFile;
    globals?: BackupFile;
    redis?: RedisBackupFile;
  };
  migrationHead: string | null;
  schemaFingerprint: string;
  /** Exact counts taken in the dump's own snapshot, keyed `schema.table`. */
  rowCounts: Record<string, number>;
  /** contentsChecked: false when an encrypted backup was verified without an identity (ciphertext checksums only). */
  verified?: { at: string; ok: boolean; checks: VerificationCheck[]; contentsChecked?: boolean };
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
      throw usageError(
        'NO_BACKUPS',
        `environment ${env} has no usable backups in ${catalog.root} (pre-restore backups and backups that failed verification are only used by id)`,
        `take one first: lifeline backup --env ${env}; or pass the id from lifeline backups --env ${env}`,
      );
    }
    return newest;
  }
  const entry = await catalog.get<BackupMetadata>(env, 'backups', wanted, BACKUP_METADATA_FILE);
  if (!entry) {
    throw usageError(
      'BACKUP_NOT_FOUND',
      `backup ${wanted} does not exist in environment ${env} (store ${catalog.root})`,
      `list the backups with: lifeline backups --env ${env} (or pass --backup latest)`,
    );
  }
  return entry;
}

/**
 * The backup a restore into `target` uses: an id as given, or for `latest` the newest usable
 * backup (not pre-restore, not failed verification) of the target's own database, by name and,
 * where both are known, the server's system identifier. Another database's backup is only ever
 * restored by its id: `latest` never picks a one-off backup of a different database.
 */
export async function findBackupForTarget(catalog: Catalog, env: string, idOrLatest: string, target: { database: string; systemIdentifier?: string; describe: string }): Promise<BackupEntry> {
  const wanted = idOrLatest.trim();
  if (wanted !== '' && wanted !== 'latest') return findBackup(catalog, env, wanted);
  const usable = (await listBackups(catalog, env)).filter((b) => b.metadata.label !== 'pre-restore' && b.metadata.verified?.ok !== false);
  const sameServer = (b: BackupEntry) => !b.metadata.systemIdentifier || !target.systemIdentifier || b.metadata.systemIdentifier === target.systemIdentifier;
  const match = usable.find((b) => b.metadata.database === target.database && sameServer(b));
  if (match) return match;
  const sameName = usable.filter((b) => b.metadata.database === target.database);
  const others = usable.slice(0, 3).map((b) => `${b.id} (database ${b.metadata.database}${b.metadata.systemIdentifier ? `, server ${b.metadata.systemIdentifier}` : ''})`);
  const why = sameName.length
    ? `its backups of ${target.database} were taken on another server (system identifier ${sameName[0]!.metadata.systemIdentifier}, this one is ${target.systemIdentifier})`
    : others.length
      ? `its newest backups are of other databases: ${others.join(', ')}`
      : 'it has no usable backups';
  throw usageError(
    'NO_BACKUP_OF_TARGET',
    `"latest" means the newest backup of the target's own database, and environment ${env} has none for ${target.describe}: ${why}`,
    `to restore another database's backup (or one from another server) into ${target.database}, pass its id explicitly: --backup <id> (lifeline backups --env ${env} lists the database and server of each)`,
  );
}
