import { createWriteStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { AgeIdentity } from '../crypto/age';
import { isEncrypted, openPlaintext } from '../crypto/payload';
import { entryFilePath } from '../catalog/confine';
import { failure } from '../errors';
import type { Logger } from '../logger';
import { localToolsRunner, throwawayContainerRunner } from '../runner/factory';
import type { Runner } from '../runner/runner';
import { startContainerRedis } from '../redis/container-server';
import type { BackupEntry } from './metadata';
import { startThrowawayRedis } from '../redis/server';
import { checkRdb, parseRedisUrl, redisKeyspace } from '../redis/snapshot';

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
 *
 * With `image` (the Redis service's image, when redis.service is set) the check and the server run
 * in throwaway containers of that image, so this host needs no Redis tools.
 */
export async function restoreRedisIsolated(
  backup: BackupEntry,
  options: { binDir?: string; logger: Logger; keep?: boolean; image?: string; labels?: Record<string, string>; nameSuffix?: string; identity?: AgeIdentity },
): Promise<RedisRestoreReport & { server?: { stop(): Promise<void> } }> {
  const file = backup.metadata.files.redis;
  if (!file) throw failure('NO_REDIS_SNAPSHOT', `backup ${backup.id} has no Redis snapshot`, { fix: 'configure redis: in lifeline.yml (or pass --redis-url) so backups include it' });
  if (!isEncrypted(file)) return restoreRedisFile(backup, await entryFilePath(backup.dir, file.name), options);
  // redis-server loads a file: the snapshot is decrypted (and checked against its recorded
  // plaintext) into a private 0600 file in a 0700 directory, removed as soon as the check is over.
  const dir = await mkdtemp(join(tmpdir(), 'lifeline-redis-'));
  try {
    const path = join(dir, 'dump.rdb');
    const plain = await openPlaintext(backup.dir, file, options.identity, `backup ${backup.id}`);
    await pipeline(plain, createWriteStream(path, { flags: 'wx', mode: 0o600 }));
    return await restoreRedisFile(backup, path, options);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function restoreRedisFile(
  backup: BackupEntry,
  path: string,
  options: { binDir?: string; logger: Logger; keep?: boolean; image?: string; labels?: Record<string, string>; nameSuffix?: string },
): Promise<RedisRestoreReport & { server?: { stop(): Promise<void> } }> {
  const runner: Runner = options.image ? throwawayContainerRunner(options.image, "a throwaway container of the Redis service's image") : localToolsRunner(options.binDir);
  const check = await checkRdb(runner, path);
  if (!check.ok)
    throw failure(
      check.toolMissing ? 'REDIS_CHECK_MISSING' : 'REDIS_SNAPSHOT_INVALID',
      `the Redis snapshot of ${backup.id} ${check.toolMissing ? 'cannot be checked' : 'does not validate'}: ${check.detail}`,
    );
  let server: { stop(): Promise<void> } | undefined;
  let keysLoaded: Record<string, number>;
  try {
    if (options.image) {
      const started = await startContainerRedis({
        image: options.image,
        rdbFile: path,
        nameSuffix: options.nameSuffix ?? `redis-${backup.id}`,
        labels: options.labels ?? {},
        purpose: `isolated Redis restore of backup ${backup.id}`,
      });
      server = started;
      keysLoaded = await redisKeyspace(started.runner, started.target);
    } else {
      const started = await startThrowawayRedis({ rdbFile: path, binDir: options.binDir });
      server = started;
      keysLoaded = await redisKeyspace(runner, parseRedisUrl(started.url));
    }
  } catch (error) {
    // startContainerRedis and startThrowawayRedis clean up after themselves when they fail.
    await server?.stop().catch(() => undefined);
    throw error;
  }
  const started = server;
  try {
    const total = Object.values(keysLoaded).reduce((a, b) => a + b, 0);
    const ok = total <= check.keysRead && total >= check.keysRead - check.expires;
    const detail = `${total} keys loaded, snapshot holds ${check.keysRead}${check.expires ? ` (${check.expires} with a TTL)` : ''}`;
    options.logger.info(`${ok ? 'ok  ' : 'FAIL'} redis restore: ${detail}`);
    const report = { ok, keysInSnapshot: check.keysRead, keysWithTtl: check.expires, keysLoaded, detail };
    if (options.keep) return { ...report, server: started };
    await started.stop();
    return report;
  } catch (error) {
    await started.stop();
    throw error;
  }
}
