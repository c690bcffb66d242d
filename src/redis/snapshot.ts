import { createReadStream, createWriteStream } from 'node:fs';
import { rm, stat } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import type { StagedEntry } from '../catalog/store';
import { failure, usageError } from '../errors';
import type { Logger } from '../logger';
import { lastLines, runText, type Runner } from '../runner/runner';
import { REDIS_SNAPSHOT_FILE, type RedisBackupFile } from '../postgres/metadata';

export interface RedisTarget {
  host: string;
  port: number;
  username?: string;
  password?: string;
  tls: boolean;
}

export function parseRedisUrl(url: string): RedisTarget {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw usageError('BAD_URL', 'the Redis URL is not a valid URL', 'write it as redis://:password@host:6379/0');
  }
  return {
    host: decodeURIComponent(parsed.hostname.replace(/^\[|\]$/g, '')) || '127.0.0.1',
    port: parsed.port ? Number(parsed.port) : 6379,
    username: parsed.username ? decodeURIComponent(parsed.username) : undefined,
    password: parsed.password ? decodeURIComponent(parsed.password) : undefined,
    tls: parsed.protocol === 'rediss:',
  };
}

/** redis-cli connection arguments; the password travels in REDISCLI_AUTH, never on argv. */
export function redisCli(target: RedisTarget, args: string[]) {
  return {
    tool: 'redis-cli',
    args: ['-h', target.host, '-p', String(target.port), ...(target.username ? ['--user', target.username] : []), ...(target.tls ? ['--tls'] : []), '--no-auth-warning', ...args],
    env: { REDISCLI_AUTH: target.password },
  };
}

/** Keys per logical database from `INFO keyspace`, e.g. `{ db0: 12, db2: 1 }`. */
export async function redisKeyspace(runner: Runner, target: RedisTarget): Promise<Record<string, number>> {
  const result = await runText(runner, redisCli(target, ['INFO', 'keyspace']));
  if (result.exitCode !== 0 || /^(ERR|NOAUTH|WRONGPASS)/m.test(result.stdout)) {
    throw failure('REDIS_CONNECT', `cannot read INFO keyspace from redis://${target.host}:${target.port}: ${lastLines(result.stderr || result.stdout, 2)}`, { fix: 'check the Redis URL (REDIS_URL / --redis-url) and its password' });
  }
  return parseKeyspace(result.stdout);
}

export function parseKeyspace(info: string): Record<string, number> {
  const keys: Record<string, number> = {};
  for (const match of info.matchAll(/^(db\d+):keys=(\d+)/gm)) keys[match[1]!] = Number(match[2]);
  return keys;
}

export interface RdbCheck {
  ok: boolean;
  keysRead: number;
  expires: number;
  detail: string;
}

/** `redis-check-rdb FILE`: the snapshot parses end to end and its checksum matches. */
export async function checkRdb(runner: Runner, path: string): Promise<RdbCheck> {
  const result = await runText(runner, { tool: 'redis-check-rdb', args: [path] });
  const output = `${result.stdout}\n${result.stderr}`;
  const keysRead = Number(/(\d+) keys read/.exec(output)?.[1] ?? 0);
  const expires = Number(/(\d+) expires/.exec(output)?.[1] ?? 0);
  const ok = result.exitCode === 0 && /RDB looks OK/.test(output);
  return { ok, keysRead, expires, detail: ok ? `RDB looks OK, ${keysRead} keys` : `redis-check-rdb: ${lastLines(output, 3)}` };
}

/**
 * Takes a snapshot with `redis-cli --rdb -` (works remotely and inside a Compose service),
 * validates it with redis-check-rdb and adds it to the staged backup.
 *
 * With diskless replication redis-cli cannot truncate stdout after the transfer, so the stream
 * ends with the 40-byte EOF marker; the payload length it reports on stderr says where to cut.
 */
export async function snapshotRedis(staged: StagedEntry, options: { runner: Runner; checkRunner: Runner; target: RedisTarget; logger: Logger }): Promise<RedisBackupFile & { check: RdbCheck }> {
  const raw = staged.path(`${REDIS_SNAPSHOT_FILE}.part`);
  try {
    const running = options.runner.start(redisCli(options.target, ['--rdb', '-']));
    await pipeline(running.stdout, createWriteStream(raw, { flags: 'wx', mode: 0o600 }));
    const result = await running.done;
    if (result.exitCode !== 0) {
      throw failure('REDIS_SNAPSHOT_FAILED', `redis-cli --rdb failed against redis://${options.target.host}:${options.target.port}: ${lastLines(result.stderr, 3)}`, { fix: 'check the Redis URL and password, and that the user may run SYNC/REPLCONF' });
    }
    const reported = /Transfer finished with success after (\d+) bytes/.exec(result.stderr);
    const { size } = await stat(raw);
    const bytes = reported ? Number(reported[1]) : size;
    if (bytes <= 0 || bytes > size) throw failure('REDIS_SNAPSHOT_FAILED', `redis-cli reported ${bytes} bytes but wrote ${size}`);
    const file = await staged.addStream(REDIS_SNAPSHOT_FILE, createReadStream(raw, { start: 0, end: bytes - 1 }));
    const check = await checkRdb(options.checkRunner, staged.path(REDIS_SNAPSHOT_FILE));
    if (!check.ok) throw failure('REDIS_SNAPSHOT_INVALID', `the Redis snapshot does not validate: ${check.detail}`, { fix: 'retry the backup; if it keeps failing, check the Redis server log' });
    const keys = await redisKeyspace(options.runner, options.target);
    options.logger.info(`redis snapshot: ${file.bytes} bytes, ${check.keysRead} keys`);
    return { name: REDIS_SNAPSHOT_FILE, bytes: file.bytes, sha256: file.sha256, keys, check };
  } finally {
    await rm(raw, { force: true });
  }
}
