import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { once } from 'node:events';
import { PassThrough, Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { StagedEntry, StoredFile } from '../catalog/store';
import { failure, isLifelineError, usageError } from '../errors';
import type { Logger } from '../logger';
import { randomBytes } from 'node:crypto';
import { lastLines, LocalRunner, runText, type Runner } from '../runner/runner';
import { decodeUrlPart } from '../settings/secrets';

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
  if (parsed.protocol !== 'redis:' && parsed.protocol !== 'rediss:') {
    throw usageError('BAD_URL', `the Redis URL uses the scheme ${parsed.protocol}`, 'write it as redis://:password@host:6379/0 (rediss:// for TLS)');
  }
  const decode = (part: string, value: string) => decodeUrlPart('Redis', part, value);
  return {
    host: decode('host', parsed.hostname.replace(/^\[|\]$/g, '')) || '127.0.0.1',
    port: parsed.port ? Number(parsed.port) : 6379,
    username: parsed.username ? decode('user name', parsed.username) : undefined,
    password: parsed.password ? decode('password', parsed.password) : undefined,
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
    throw failure('REDIS_CONNECT', `cannot read INFO keyspace from redis://${target.host}:${target.port}: ${lastLines(result.stderr || result.stdout, 2)}`, {
      fix: 'check the Redis URL (REDIS_URL / --redis-url) and its password',
    });
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
  /** redis-check-rdb itself is missing where it was to run (detail names the fix). */
  toolMissing?: boolean;
}

/**
 * Inside a container the snapshot arrives on stdin into a private file (umask 077, a random name,
 * noclobber) that is removed whatever redis-check-rdb answers; never through a shared path.
 */
const CHECK_IN_CONTAINER =
  'command -v redis-check-rdb >/dev/null 2>&1 || { echo "lifeline: redis-check-rdb: not found" >&2; exit 127; }; umask 077 && set -C && f="${TMPDIR:-/tmp}/$1" && { cat > "$f" || { rm -f "$f"; exit 125; }; } && { redis-check-rdb "$f"; s=$?; rm -f "$f"; exit $s; }';

function missingToolCheck(runner: Runner): RdbCheck {
  const fix =
    runner instanceof LocalRunner
      ? 'install it (Debian: apt-get install redis-tools), set redis.binDir, or set redis.service so it runs in the Redis container'
      : "use a Redis image that has redis-check-rdb (the official redis images do), or remove redis.service to use this host's (Debian: apt-get install redis-tools)";
  return { ok: false, keysRead: 0, expires: 0, toolMissing: true, detail: `redis-check-rdb was not found (${runner.where}); fix: ${fix}` };
}

/**
 * `redis-check-rdb FILE`: the snapshot parses end to end and its checksum matches. Runs where the
 * runner runs: on this host, or inside the Redis service's container (the file streamed in).
 * A missing redis-check-rdb is a failed check that says so and how to fix it, never an exception.
 */
export async function checkRdb(
  runner: Runner,
  path: string,
  /** The plaintext as a stream (a decrypted snapshot) instead of `path`; only where the check runs in a container. */ source?: Readable,
): Promise<RdbCheck> {
  let result;
  if (source && runner instanceof LocalRunner) throw failure('INTERNAL_INVARIANT', 'internal error: checkRdb: a stream source needs a container runner');
  try {
    result =
      runner instanceof LocalRunner
        ? await runText(runner, { tool: 'redis-check-rdb', args: [path] })
        : await runText(runner, {
            tool: 'sh',
            args: ['-c', CHECK_IN_CONTAINER, 'lifeline-check', `lifeline-${randomBytes(12).toString('hex')}.rdb`],
            stdin: source ?? createReadStream(path, { highWaterMark: 1024 * 1024 }),
          });
  } catch (error) {
    if (isLifelineError(error) && error.code === 'TOOL_MISSING') return missingToolCheck(runner);
    throw error;
  }
  const output = `${result.stdout}\n${result.stderr}`;
  if (result.exitCode === 127 && /redis-check-rdb: not found/.test(output)) return missingToolCheck(runner);
  if (result.exitCode === 125) return { ok: false, keysRead: 0, expires: 0, detail: `could not copy the snapshot into ${runner.where} for redis-check-rdb: ${lastLines(result.stderr, 2)}` };
  const keysRead = Number(/(\d+) keys read/.exec(output)?.[1] ?? 0);
  const expires = Number(/(\d+) expires/.exec(output)?.[1] ?? 0);
  const ok = result.exitCode === 0 && /RDB looks OK/.test(output);
  return { ok, keysRead, expires, detail: ok ? `RDB looks OK, ${keysRead} keys` : `redis-check-rdb: ${lastLines(output, 3)}` };
}

export interface SnapshotOptions {
  runner: Runner;
  checkRunner: Runner;
  target: RedisTarget;
  logger: Logger;
  /** The payload's name in the staged entry (the caller's entry format decides it). */
  fileName: string;
}

/** The stored snapshot, the keys per database at snapshot time, and the redis-check-rdb verdict. */
export type RedisSnapshot = StoredFile & { keys: Record<string, number>; check: RdbCheck };

/**
 * Takes a snapshot with `redis-cli --rdb -` (works remotely and inside a Compose service),
 * validates it with redis-check-rdb and adds it to the staged backup.
 *
 * With diskless replication redis-cli cannot truncate stdout after the transfer, so the stream
 * ends with the 40-byte EOF marker; the payload length it reports on stderr says where to cut.
 */
export async function snapshotRedis(staged: StagedEntry, options: SnapshotOptions): Promise<RedisSnapshot> {
  if (staged.encryptTo) return snapshotRedisEncrypted(staged, options);
  const scratch = staged.scratchFile(`${options.fileName}.part`);
  const raw = scratch.path;
  try {
    const running = options.runner.start(redisCli(options.target, ['--rdb', '-']));
    await pipeline(running.stdout, scratch.stream);
    const result = await running.done;
    if (result.exitCode !== 0) {
      throw failure('REDIS_SNAPSHOT_FAILED', `redis-cli --rdb failed against redis://${options.target.host}:${options.target.port}: ${lastLines(result.stderr, 3)}`, {
        fix: 'check the Redis URL and password, and that the user may run SYNC/REPLCONF',
      });
    }
    const reported = /Transfer finished with success after (\d+) bytes/.exec(result.stderr);
    const { size } = await stat(raw);
    const bytes = reported ? Number(reported[1]) : size;
    if (bytes <= 0 || bytes > size) throw failure('REDIS_SNAPSHOT_FAILED', `redis-cli reported ${bytes} bytes but wrote ${size}`);
    const file = await staged.addStream(options.fileName, createReadStream(raw, { start: 0, end: bytes - 1 }));
    const check = await checkRdb(options.checkRunner, staged.path(options.fileName));
    if (check.toolMissing)
      throw failure('REDIS_CHECK_MISSING', `the Redis snapshot cannot be validated: ${check.detail}`, {
        fix: 'make redis-check-rdb available where the check runs (see above), or back up with --verify false',
      });
    if (!check.ok) throw failure('REDIS_SNAPSHOT_INVALID', `the Redis snapshot does not validate: ${check.detail}`, { fix: 'retry the backup; if it keeps failing, check the Redis server log' });
    const keys = await redisKeyspace(options.runner, options.target);
    options.logger.info(`redis snapshot: ${file.bytes} bytes, ${check.keysRead} keys`);
    return { name: options.fileName, bytes: file.bytes, sha256: file.sha256, keys, check };
  } finally {
    await scratch.remove();
  }
}

/** Bytes redis-cli may append after the payload with diskless replication (the EOF marker). */
const EOF_MARKER_BYTES = 40;

/**
 * The encrypted form of `snapshotRedis`: no plaintext ever touches the disk. redis-cli's stream
 * goes through a transform that holds back its last 40 bytes until redis-cli has said how long the
 * payload is, then into the entry (encrypted as it streams) and, at the same time, into
 * `redis-check-rdb /dev/stdin`, so the snapshot is checked on its plaintext side.
 */
async function snapshotRedisEncrypted(staged: StagedEntry, options: SnapshotOptions): Promise<RedisSnapshot> {
  const running = options.runner.start(redisCli(options.target, ['--rdb', '-']));
  let held: Buffer = Buffer.alloc(0);
  let passed = 0;
  let payloadBytes = 0;
  const trim = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      held = held.length ? Buffer.concat([held, chunk]) : chunk;
      if (held.length > EOF_MARKER_BYTES) {
        const out = held.subarray(0, held.length - EOF_MARKER_BYTES);
        held = Buffer.from(held.subarray(held.length - EOF_MARKER_BYTES));
        passed += out.length;
        cb(null, out);
      } else cb();
    },
    flush(cb) {
      running.done.then(
        (result) => {
          if (result.exitCode !== 0)
            return cb(
              failure('REDIS_SNAPSHOT_FAILED', `redis-cli --rdb failed against redis://${options.target.host}:${options.target.port}: ${lastLines(result.stderr, 3)}`, {
                fix: 'check the Redis URL and password, and that the user may run SYNC/REPLCONF',
              }),
            );
          const reported = /Transfer finished with success after (\d+) bytes/.exec(result.stderr);
          const size = passed + held.length;
          payloadBytes = reported ? Number(reported[1]) : size;
          if (payloadBytes <= 0 || payloadBytes > size || payloadBytes < passed) return cb(failure('REDIS_SNAPSHOT_FAILED', `redis-cli reported ${payloadBytes} bytes but wrote ${size}`));
          cb(null, held.subarray(0, payloadBytes - passed));
        },
        (error: Error) => cb(error),
      );
    },
  });
  const check = new PassThrough({ highWaterMark: 1024 * 1024 });
  const checker = options.checkRunner.start(rdbCheckFromStdin(check));
  let checkOutput = '';
  checker.stdout.setEncoding('utf8');
  checker.stdout.on('data', (text: string) => {
    if (checkOutput.length < 64 * 1024) checkOutput += text;
  });
  const checkDone = checker.done;
  checkDone.catch(() => {});
  const writer = staged.addWriter(options.fileName);
  let checkerGone = false;
  checkDone.then(
    () => (checkerGone = true),
    () => (checkerGone = true),
  );
  try {
    running.stdout.pipe(trim);
    running.stdout.on('error', (error) => trim.destroy(error));
    for await (const chunk of trim as AsyncIterable<Buffer>) {
      const waits: Promise<unknown>[] = [];
      if (!writer.stream.write(chunk)) waits.push(once(writer.stream, 'drain'));
      if (!checkerGone && !check.write(chunk)) waits.push(Promise.race([once(check, 'drain'), checkDone.catch(() => {})]));
      if (waits.length) await Promise.all(waits);
    }
    writer.stream.end();
    check.end();
  } catch (error) {
    running.kill('SIGTERM');
    checker.kill('SIGTERM');
    writer.stream.destroy();
    check.destroy();
    await Promise.all([writer.done().catch(() => {}), checkDone.catch(() => {}), running.done.catch(() => {})]);
    throw error;
  }
  const file = await writer.done();
  const checked = await checkDone;
  const output = `${checkOutput}\n${checked.stderr}`;
  const keysRead = Number(/(\d+) keys read/.exec(output)?.[1] ?? 0);
  const expires = Number(/(\d+) expires/.exec(output)?.[1] ?? 0);
  const ok = checked.exitCode === 0 && /RDB looks OK/.test(output);
  const rdb: RdbCheck = { ok, keysRead, expires, detail: ok ? `RDB looks OK, ${keysRead} keys (read on the plaintext side, before encryption)` : `redis-check-rdb: ${lastLines(output, 3)}` };
  if (!ok) throw failure('REDIS_SNAPSHOT_INVALID', `the Redis snapshot does not validate: ${rdb.detail}`, { fix: 'retry the backup; if it keeps failing, check the Redis server log' });
  const keys = await redisKeyspace(options.runner, options.target);
  options.logger.info(`redis snapshot: ${file.encryption?.plaintextBytes ?? file.bytes} bytes (${file.bytes} encrypted), ${keysRead} keys`);
  return { name: file.name, bytes: file.bytes, sha256: file.sha256, keys, ...(file.encryption ? { encryption: file.encryption } : {}), check: rdb };
}

/**
 * `redis-check-rdb` reading a stream: it opens its argument as a file, and /dev/stdin cannot be
 * opened when stdin is the socket Node hands a child, so `cat` turns it into a pipe first.
 */
export function rdbCheckFromStdin(stdin: import('node:stream').Readable) {
  return { tool: 'sh', args: ['-c', 'cat | exec redis-check-rdb /dev/stdin'], stdin };
}
