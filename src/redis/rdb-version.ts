import { open } from 'node:fs/promises';

/**
 * Which RDB format versions a server loads. An RDB file starts with `REDIS` and four digits
 * (Redis, and Valkey up to 8.x) or, from Valkey 9, `VALKEY` and three digits.
 *
 * Redis writes, and loads up to, RDB 6 from 2.6, 7 from 3.2, 8 from 4.0, 9 from 5.0 (through 6.2),
 * 10 from 7.0, 11 from 7.2, 12 from 7.4 (`RDB_VERSION` in redis/src/rdb.h of each release); it
 * refuses any higher version and any other signature than `REDIS`.
 *
 * Valkey 7.2 and 8.x are at RDB 11; Valkey 9.0 moved to 80 and 9.2 to 81, written under the
 * `VALKEY` signature; 12-79 are reserved as "foreign" (Redis' non-open formats) and refused
 * unless `rdb-version-check` is `relaxed` (valkey/src/rdb.h and rdbIsVersionAccepted in rdb.c).
 * Valkey refuses a `REDIS` file above 79 and a `VALKEY` file at 79 or below.
 */
export interface RdbHeader {
  magic: 'REDIS' | 'VALKEY';
  version: number;
  /** The nine bytes as written, e.g. `REDIS0011`. */
  text: string;
}

export interface ServerIdentity {
  product: 'redis' | 'valkey';
  version: string;
}

/** The header of a snapshot file, or undefined when it has neither signature. */
export async function readRdbHeader(path: string): Promise<RdbHeader | undefined> {
  const handle = await open(path, 'r');
  try {
    const buffer = Buffer.alloc(9);
    const { bytesRead } = await handle.read(buffer, 0, 9, 0);
    return parseRdbHeader(buffer.subarray(0, bytesRead));
  } finally {
    await handle.close();
  }
}

export function parseRdbHeader(bytes: Uint8Array): RdbHeader | undefined {
  const text = Buffer.from(bytes).subarray(0, 9).toString('latin1');
  const redis = /^REDIS(\d{4})$/.exec(text);
  if (redis) return { magic: 'REDIS', version: Number(redis[1]), text };
  const valkey = /^VALKEY(\d{3})$/.exec(text);
  if (valkey) return { magic: 'VALKEY', version: Number(valkey[1]), text };
  return undefined;
}

/** The product and version from `INFO server` (Valkey reports `valkey_version` and `server_name:valkey`). */
export function parseServerIdentity(info: string): ServerIdentity | undefined {
  const field = (name: string) => new RegExp(`^${name}:([^\\r\\n]+)`, 'm').exec(info)?.[1]?.trim();
  const valkey = field('valkey_version');
  if (valkey) return { product: 'valkey', version: valkey };
  const redis = field('redis_version');
  if (!redis) return undefined;
  return { product: field('server_name') === 'valkey' ? 'valkey' : 'redis', version: redis };
}

const REDIS_RDB: [minVersion: [number, number], rdb: number][] = [
  [[7, 4], 12],
  [[7, 2], 11],
  [[7, 0], 10],
  [[5, 0], 9],
  [[4, 0], 8],
  [[3, 2], 7],
  [[2, 6], 6],
];
/** The newest Redis whose RDB version is in the table above; a newer one may load more. */
const REDIS_KNOWN_UP_TO: [number, number] = [7, 4];
const VALKEY_RDB: [minVersion: [number, number], rdb: number][] = [
  [[9, 2], 81],
  [[9, 0], 80],
  [[7, 2], 11],
];
const VALKEY_KNOWN_UP_TO: [number, number] = [9, 2];
const FOREIGN_MIN = 12;
const FOREIGN_MAX = 79;

function majorMinor(version: string): [number, number] | undefined {
  const match = /^(\d+)\.(\d+)/.exec(version);
  return match ? [Number(match[1]), Number(match[2])] : undefined;
}

function atLeast(a: [number, number], b: [number, number]): boolean {
  return a[0] > b[0] || (a[0] === b[0] && a[1] >= b[1]);
}

export type RdbCompatibility =
  | { verdict: 'loads'; detail: string }
  | { verdict: 'refuses'; detail: string }
  /** Not in the table (a newer server than Lifeline knows): the restore goes ahead with a warning. */
  | { verdict: 'unknown'; detail: string };

/**
 * Whether `server` loads a snapshot with `header`. `relaxed` is Valkey's `rdb-version-check
 * relaxed`, which loads foreign versions 12-79 too.
 */
export function rdbCompatibility(header: RdbHeader, server: ServerIdentity, options: { relaxed?: boolean } = {}): RdbCompatibility {
  const name = `${server.product === 'valkey' ? 'Valkey' : 'Redis'} ${server.version}`;
  const file = `RDB version ${header.version} (${header.text})`;
  const version = majorMinor(server.version);
  if (server.product === 'redis') {
    if (header.magic === 'VALKEY') return { verdict: 'refuses', detail: `the snapshot is a Valkey 9+ ${file}; ${name} reads only REDIS snapshots` };
    const max = version && REDIS_RDB.find(([min]) => atLeast(version, min))?.[1];
    if (!version || !max) return { verdict: 'unknown', detail: `${name} is not a version Lifeline knows the RDB format of; the snapshot is ${file}` };
    if (header.version <= max) return { verdict: 'loads', detail: `${name} loads RDB versions up to ${max}; the snapshot is ${file}` };
    // A Redis newer than the table may load more: say so, do not refuse on a guess.
    if (!atLeast(REDIS_KNOWN_UP_TO, version)) {
      return { verdict: 'unknown', detail: `${name} is newer than the Redis versions Lifeline knows (up to ${REDIS_KNOWN_UP_TO.join('.')}, RDB ${max}); the snapshot is ${file}` };
    }
    return { verdict: 'refuses', detail: `${name} loads RDB versions up to ${max}, and the snapshot is ${file}` };
  }
  const max = version && VALKEY_RDB.find(([min]) => atLeast(version, min))?.[1];
  if (!version || !max) return { verdict: 'unknown', detail: `${name} is not a version Lifeline knows the RDB format of; the snapshot is ${file}` };
  if (header.magic === 'VALKEY' && header.version <= FOREIGN_MAX) return { verdict: 'refuses', detail: `the snapshot's header ${header.text} is not one Valkey writes` };
  if (header.magic === 'REDIS' && header.version > FOREIGN_MAX) return { verdict: 'refuses', detail: `the snapshot's header ${header.text} is not one Valkey writes` };
  if (header.version >= FOREIGN_MIN && header.version <= FOREIGN_MAX) {
    if (options.relaxed) return { verdict: 'unknown', detail: `${name} has rdb-version-check relaxed, so it tries ${file} (a Redis 7.4+ format), and stops at the first data type it does not know` };
    return { verdict: 'refuses', detail: `the snapshot is ${file}, a Redis 7.4+ format; ${name} refuses RDB 12-79 (rdb-version-check strict)` };
  }
  if (header.version <= max) return { verdict: 'loads', detail: `${name} loads RDB versions up to ${max}; the snapshot is ${file}` };
  if (!atLeast(VALKEY_KNOWN_UP_TO, version)) {
    return { verdict: 'unknown', detail: `${name} is newer than the Valkey versions Lifeline knows (up to ${VALKEY_KNOWN_UP_TO.join('.')}, RDB ${max}); the snapshot is ${file}` };
  }
  return { verdict: 'refuses', detail: `${name} loads RDB versions up to ${max}, and the snapshot is ${file}` };
}
