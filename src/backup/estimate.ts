import type { Catalog } from '../catalog/store';
import type { Logger } from '../logger';
import { queryOnce } from '../runner/psql';
import type { Runner } from '../runner/runner';
import type { PgConnection } from '../runner/postgres-env';
import { formatCompression, type Compression } from '../settings/compression';
import { listBackups } from './metadata';

export interface BackupSizeEstimate {
  /** Expected bytes of pg_dump's output (the archive before any encryption). */
  bytes: number;
  /** Where the figure comes from, for the log. */
  source: string;
}

/** A size read from a catalog entry counts only when it is a plain positive number (a hostile backup.json is ignored). */
function plausible(bytes: unknown): bytes is number {
  return typeof bytes === 'number' && Number.isFinite(bytes) && bytes > 0 && bytes < 2 ** 53;
}

/**
 * How many bytes pg_dump will write, for the backup's percent and ETA. The byte count the dump's
 * stream reports is the compressed archive (before encryption), so:
 * - the newest earlier backup of the same database with the same compression (its plaintext
 *   archive size): what a scheduled backup has nearly always;
 * - with compression none, the sum of the user tables' sizes (heap and TOAST, not indexes),
 *   one cheap catalog query;
 * - otherwise nothing: a compressed first backup shows bytes and rate only (the ratio of the
 *   compressed archive to the table sizes is not known before the dump).
 * Never fails the backup: any problem just means no estimate.
 */
export async function estimateBackupBytes(options: {
  catalog: Catalog;
  environment: string;
  conn: PgConnection;
  runner: Runner;
  /** The compression asked for; undefined is the default (any earlier default backup matches). */
  compression?: Compression;
  logger: Logger;
}): Promise<BackupSizeEstimate | undefined> {
  const wanted = options.compression ? formatCompression(options.compression) : undefined;
  try {
    const earlier = (await listBackups(options.catalog, options.environment))
      .filter((b) => b.metadata.database === options.conn.database)
      .filter((b) => wanted === undefined || (b.metadata.compression ? formatCompression(b.metadata.compression) === wanted : false))
      .sort((a, b) => String(b.metadata.createdAt).localeCompare(String(a.metadata.createdAt)));
    for (const entry of earlier) {
      const archive = entry.metadata.files.postgres;
      const bytes = archive.encryption ? archive.encryption.plaintextBytes : archive.bytes;
      if (plausible(bytes)) return { bytes, source: `the size of backup ${entry.id}` };
    }
  } catch (error) {
    options.logger.debug(`no size estimate from the catalog: ${(error as Error).message}`);
  }
  if (options.compression?.method !== 'none') return undefined;
  try {
    const rows = await queryOnce<{ bytes: number | string | null }>(
      options.runner,
      options.conn,
      `SELECT sum(pg_table_size(c.oid))::bigint AS bytes FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%'`,
    );
    const bytes = Number(rows[0]?.bytes);
    return plausible(bytes) ? { bytes, source: 'the size of its tables' } : undefined;
  } catch (error) {
    options.logger.debug(`no size estimate from the database: ${(error as Error).message}`);
    return undefined;
  }
}
