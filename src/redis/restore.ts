import { entryFilePath } from '../catalog/confine';
import { failure } from '../errors';
import type { Logger } from '../logger';
import { LocalRunner } from '../runner/runner';
import type { BackupEntry } from '../postgres/metadata';
import { startThrowawayRedis, type ThrowawayRedis } from './server';
import { checkRdb, parseRedisUrl, redisKeyspace } from './snapshot';

export interface RedisRestoreReport {
  ok: boolean;
  /** Keys the snapshot holds (redis-check-rdb). */
  keysInSnapshot: number;
  /** Keys with a TTL in the snapshot: those may have expired by the time it loads. */
  keysWithTtl: number;
  /** Keys per database once loaded. */
  keysLoaded: Record<string, number>;
  detail: string;
}

/**
 * Loads a backup's Redis snapshot into a private redis-server and compares its key count with the
 * snapshot's. Only keys with a TTL may be missing (they can expire in between). The server is
 * stopped afterwards unless `keep` is set (a drill may want to run checks against it).
 */
export async function restoreRedisIsolated(backup: BackupEntry, options: { binDir?: string; logger: Logger; keep?: boolean }): Promise<RedisRestoreReport & { server?: ThrowawayRedis }> {
  const file = backup.metadata.files.redis;
  if (!file) throw failure('NO_REDIS_SNAPSHOT', `backup ${backup.id} has no Redis snapshot`, { fix: 'configure redis: in lifeline.yml (or pass --redis-url) so backups include it' });
  const path = await entryFilePath(backup.dir, file.name);
  const runner = new LocalRunner({ binDirs: options.binDir ? [options.binDir] : [] });
  const check = await checkRdb(runner, path);
  if (!check.ok) throw failure('REDIS_SNAPSHOT_INVALID', `the Redis snapshot of ${backup.id} does not validate: ${check.detail}`);
  const server = await startThrowawayRedis({ rdbFile: path, binDir: options.binDir });
  try {
    const keysLoaded = await redisKeyspace(runner, parseRedisUrl(server.url));
    const total = Object.values(keysLoaded).reduce((a, b) => a + b, 0);
    const ok = total <= check.keysRead && total >= check.keysRead - check.expires;
    const detail = `${total} keys loaded, snapshot holds ${check.keysRead}${check.expires ? ` (${check.expires} with a TTL)` : ''}`;
    options.logger.info(`${ok ? 'ok  ' : 'FAIL'} redis restore: ${detail}`);
    const report = { ok, keysInSnapshot: check.keysRead, keysWithTtl: check.expires, keysLoaded, detail };
    if (options.keep) return { ...report, server };
    await server.stop();
    return report;
  } catch (error) {
    await server.stop();
    throw error;
  }
}
