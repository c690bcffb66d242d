import { execFileSync } from 'node:child_process';
import { openSync, writeSync, closeSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Catalog } from '../../src/catalog/store';
import { createMemoryLogger } from '../../src/logger';
import { findBackup, type BackupMetadata } from '../../src/backup/metadata';
import { restoreRedisIsolated } from '../../src/backup/redis-isolated';
import { startThrowawayRedis, type ThrowawayRedis } from '../../src/redis/server';
import { lifeline } from '../helpers/cli';
import { createSampleDatabase, dropDatabase, tempDir } from '../helpers/db';
import { readFileSync } from 'node:fs';

const noEnv = { DATABASE_URL: undefined, REDIS_URL: undefined, LIFELINE_STORE: undefined, LIFELINE_ENV: undefined, LIFELINE_CONFIG: undefined };
const PASSWORD = 'redis-secret-for-lifeline';

function redisCli(redis: ThrowawayRedis, args: string[], input?: string): string {
  return execFileSync('redis-cli', ['-p', String(redis.port), '--no-auth-warning', ...args], { env: { ...process.env, REDISCLI_AUTH: PASSWORD }, input, encoding: 'utf8' });
}

describe('Redis snapshots in backups', () => {
  let db: Awaited<ReturnType<typeof createSampleDatabase>>;
  let redis: ThrowawayRedis;
  const store = tempDir('lifeline-redis-');

  beforeAll(async () => {
    db = await createSampleDatabase(1, 'rds');
    // A private server: the suite's shared Redis belongs to everyone's tests.
    redis = await startThrowawayRedis({ password: PASSWORD });
    const commands = [
      ...Array.from({ length: 500 }, (_, i) => `SET cache:menu:${i} ${'x'.repeat(50)}`),
      ...Array.from({ length: 20 }, (_, i) => `SET ratelimit:${i} 5 EX 3600`),
      'SELECT 2',
      ...Array.from({ length: 30 }, (_, i) => `HSET realtime:order:${i} status placed`),
    ];
    redisCli(redis, [], `${commands.join('\n')}\n`);
  });
  afterAll(async () => {
    await redis?.stop();
    await dropDatabase(db.name);
    store.cleanup();
  });

  let backupId: string;

  it('adds a validated RDB snapshot with per-database key counts to the same SHA256SUMS', async () => {
    const run = await lifeline(['backup', '--store', store.path, '--database-url', db.url, '--redis-url', redis.url, '--json'], { env: noEnv });
    expect(run.code, run.stderr).toBe(0);
    expect(run.stderr).not.toContain(PASSWORD);
    const { id, path } = JSON.parse(run.stdout);
    backupId = id;
    const metadata = JSON.parse(readFileSync(join(path, 'backup.json'), 'utf8')) as BackupMetadata;
    expect(metadata.files.redis).toMatchObject({ name: 'redis.rdb', keys: { db0: 520, db2: 30 } });
    expect(statSync(join(path, 'redis.rdb')).size).toBe(metadata.files.redis!.bytes);
    expect(readFileSync(join(path, 'SHA256SUMS'), 'utf8')).toContain(`${metadata.files.redis!.sha256}  redis.rdb`);
    execFileSync('sha256sum', ['-c', 'SHA256SUMS'], { cwd: path });
    expect(execFileSync('redis-check-rdb', [join(path, 'redis.rdb')], { encoding: 'utf8' })).toContain('RDB looks OK');
    expect(metadata.verified?.checks.find((c) => c.name.startsWith('redis.rdb (redis-check-rdb)'))?.ok).toBe(true);
  });

  it('restores the snapshot into an isolated redis-server and compares key counts', async () => {
    const backup = await findBackup(new Catalog(store.path), 'default', backupId);
    const report = await restoreRedisIsolated(backup, { logger: createMemoryLogger() });
    expect(report).toMatchObject({ ok: true, keysInSnapshot: 550, keysWithTtl: 20, keysLoaded: { db0: 520, db2: 30 } });
  });

  it('a snapshot with a flipped byte fails verify (checksum)', async () => {
    const backup = await findBackup(new Catalog(store.path), 'default', backupId);
    const file = join(backup.dir, 'redis.rdb');
    const fd = openSync(file, 'r+');
    writeSync(fd, Buffer.from('Z'), 0, 1, 100);
    closeSync(fd);
    const run = await lifeline(['verify', backupId, '--store', store.path], { env: noEnv });
    expect(run.code).toBe(1);
    expect(run.stdout).toMatch(/FAIL\s+redis\.rdb checksum/);
  });

  it('a wrong Redis password fails the backup and nothing lists', async () => {
    const other = tempDir('lifeline-redis-badpw-');
    try {
      const run = await lifeline(['backup', '--store', other.path, '--database-url', db.url, '--redis-url', `redis://:wrong-redis-pw@127.0.0.1:${redis.port}/0`], { env: noEnv });
      expect(run.code).toBe(1);
      expect(run.stderr).not.toContain('wrong-redis-pw');
      expect(run.stderr).toMatch(/redis/i);
      const list = await lifeline(['backups', '--store', other.path, '--json'], { env: noEnv });
      expect(JSON.parse(list.stdout)).toEqual([]);
    } finally {
      other.cleanup();
    }
  });
});
