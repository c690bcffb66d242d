import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { lockStatus, withLock } from '../catalog/lock';
import { sha256File } from '../catalog/files';
import { entryFilePath } from '../catalog/confine';
import { newEntryId, type Catalog, type EntryMetadata, type StagedEntry } from '../catalog/store';
import { parseSums, SUMS_FILE } from '../catalog/sums';
import { ComposeDriver, composeHint, type ComposeProject } from '../runner/compose';
import { serviceContainerRunner, throwawayContainerRunner } from '../runner/factory';
import { failure, refusal, usageError } from '../errors';
import type { Logger } from '../logger';
import { listBackups, REDIS_SNAPSHOT_FILE, type RedisBackupFile } from './metadata';
import { firstTarFile, tarStream, type TarMember } from '../catalog/tar';
import { describeExit, lastLines, runText, type Runner } from '../runner/runner';
import { checkRdb, parseKeyspace, redisCli, redisKeyspace, snapshotRedis, type RdbCheck, type RedisTarget } from '../redis/snapshot';
import { parseRdbHeader, parseServerIdentity, rdbCompatibility, readRdbHeader, type ServerIdentity } from '../redis/rdb-version';
import { PassThrough, type Readable } from 'node:stream';
import type { AgeIdentity } from '../crypto/age';
import { isEncrypted, openPlaintext, requireIdentityFor } from '../crypto/payload';

/** Pre-restore snapshots of a live Redis live beside the backups, under their own kind. */
export const REDIS_SNAPSHOT_KIND = 'redis-snapshots' as const;
export const REDIS_SNAPSHOT_METADATA_FILE = 'snapshot.json';
/** One line per live Redis restore (attempted or done), in the environment's directory. */
export const REDIS_RESTORE_LOG = 'redis-restores.jsonl';

export interface RedisSnapshotMetadata extends EntryMetadata {
  schemaVersion: 1;
  id: string;
  environment: string;
  label: 'pre-restore';
  createdAt: string;
  /** The Compose service the snapshot was taken from. */
  service: string;
  /** The backup whose restore this snapshot can undo. */
  takenBeforeRestoring: string;
  /** The live server's settings and file owner: an undo needs them when the restore left the service down. */
  persistence: RedisPersistence;
  owner: FileOwner;
  files: { redis: RedisBackupFile };
}

export interface FileOwner {
  uid: number;
  gid: number;
}

/** A Redis snapshot in the catalog: a backup's `redis.rdb`, or a pre-restore snapshot. */
export interface RedisSnapshotSource {
  kind: 'backup' | 'pre-restore snapshot';
  id: string;
  dir: string;
  file: RedisBackupFile;
  /** A pre-restore snapshot's record of the server it came from. */
  recorded?: { service: string; persistence: RedisPersistence; owner: FileOwner };
}

/**
 * The snapshot to restore: a backup id, a pre-restore snapshot id (to undo a restore), or
 * `latest`, the newest backup that has a Redis snapshot, is not a pre-restore backup and did not
 * fail verification.
 */
export async function findRedisSnapshot(catalog: Catalog, env: string, idOrLatest: string): Promise<RedisSnapshotSource> {
  const wanted = idOrLatest.trim();
  if (wanted === '' || wanted === 'latest') {
    const newest = (await listBackups(catalog, env)).find((b) => b.metadata.label !== 'pre-restore' && b.metadata.verified?.ok !== false && b.metadata.files.redis);
    if (!newest) {
      throw usageError(
        'NO_REDIS_BACKUPS',
        `environment ${env} has no usable backup with a Redis snapshot in ${catalog.root}`,
        `take one with Redis configured (redis: in lifeline.yml, or --redis-url): lifeline backup --env ${env}; or pass --backup ID`,
      );
    }
    return { kind: 'backup', id: newest.id, dir: newest.dir, file: newest.metadata.files.redis! };
  }
  const backup = await catalog.get<EntryMetadata & { files?: { redis?: RedisBackupFile } }>(env, 'backups', wanted, 'backup.json');
  if (backup) {
    if (!backup.metadata.files?.redis) {
      throw usageError('NO_REDIS_SNAPSHOT', `backup ${wanted} has no Redis snapshot`, `pick a backup that has one (lifeline backups --env ${env} --json shows "redis": true), or pass --backup latest`);
    }
    return { kind: 'backup', id: backup.id, dir: backup.dir, file: backup.metadata.files.redis };
  }
  const snapshot = await catalog.get<RedisSnapshotMetadata>(env, REDIS_SNAPSHOT_KIND, wanted, REDIS_SNAPSHOT_METADATA_FILE);
  if (snapshot) {
    const { service, persistence, owner } = snapshot.metadata;
    return { kind: 'pre-restore snapshot', id: snapshot.id, dir: snapshot.dir, file: snapshot.metadata.files.redis, ...(persistence && owner ? { recorded: { service, persistence, owner } } : {}) };
  }
  throw usageError(
    'BACKUP_NOT_FOUND',
    `neither a backup nor a pre-restore Redis snapshot ${wanted} exists in environment ${env} (store ${catalog.root})`,
    `list the backups with: lifeline backups --env ${env} (or pass --backup latest)`,
  );
}

export interface SnapshotFileCheck {
  path: string;
  checksumVerified: boolean;
  rdb: RdbCheck;
}

/**
 * The snapshot's sha256 against the entry's SHA256SUMS (unless skipped), then redis-check-rdb.
 * A bad snapshot is refused (exit 3) before anything else happens.
 */
export async function checkSnapshotFile(
  source: RedisSnapshotSource,
  options: {
    checkRunner: Runner;
    skipVerify: boolean;
    logger: Logger;
    /** Runs after the checksum, before redis-check-rdb (which may not know a newer format). */ beforeParse?: (path: string, header?: Buffer) => Promise<void>;
    identity?: AgeIdentity;
  },
): Promise<SnapshotFileCheck> {
  const fix = 'restore another backup (lifeline backups lists them); this snapshot is damaged';
  // The name comes from the entry's metadata: confined to the entry (no '..', no symlink, no FIFO).
  const path = await entryFilePath(source.dir, source.file.name).catch((error: Error) => {
    throw refusal('BACKUP_CORRUPT', `${source.kind} ${source.id}: ${error.message}`, fix);
  });
  if (options.skipVerify) {
    options.logger.warn('checksum verification skipped (--skip-verify); this is recorded with the restore');
  } else {
    let sums: ReturnType<typeof parseSums>;
    try {
      sums = parseSums(await readFile(join(source.dir, SUMS_FILE), 'utf8').catch(() => ''));
    } catch (error) {
      throw refusal('BACKUP_CORRUPT', `${source.kind} ${source.id}: ${SUMS_FILE} is damaged (${(error as Error).message})`, fix);
    }
    const expected = sums.find((s) => s.file === source.file.name)?.sha256;
    if (!expected) throw refusal('BACKUP_CORRUPT', `${source.kind} ${source.id} lists no checksum for ${source.file.name} in ${SUMS_FILE}`, fix);
    const actual = await sha256File(path).catch((error: Error) => {
      throw refusal('BACKUP_CORRUPT', `${source.kind} ${source.id}: ${source.file.name} cannot be read (${error.message})`, fix);
    });
    if (actual.sha256 !== expected) {
      throw refusal('BACKUP_CORRUPT', `${source.kind} ${source.id}: ${source.file.name} fails its checksum (sha256 ${actual.sha256}, ${SUMS_FILE} says ${expected}), so it will not be restored`, fix);
    }
    options.logger.info(`ok   ${source.file.name} checksum (${actual.bytes} bytes)`);
  }
  if (isEncrypted(source.file)) {
    // The plaintext is never written on this host: the header is read from the start of a
    // decrypting stream, and redis-check-rdb reads a second one (checked at its end against the
    // plaintext sha256 and size backup.json records) inside the container.
    const what = `${source.kind} ${source.id}`;
    const head = await openPlaintext(source.dir, source.file, options.identity, what);
    const first = await readFirstBytes(head, 64);
    await options.beforeParse?.(path, first);
    const plain = await openPlaintext(source.dir, source.file, options.identity, what);
    // A chunk that fails authentication ends the check's stdin (so it never waits for more) and is what is reported.
    let sourceError: Error | undefined;
    const feed = new PassThrough();
    plain.on('error', (error) => {
      sourceError ??= error;
      feed.end();
    });
    plain.pipe(feed);
    const rdb = await checkRdb(options.checkRunner, path, feed);
    if (sourceError) throw sourceError;
    if (!rdb.ok) throw refusal('REDIS_SNAPSHOT_INVALID', `${source.kind} ${source.id}: ${source.file.name} does not validate once decrypted (${rdb.detail}), so it will not be restored`, fix);
    options.logger.info(`ok   ${source.file.name} decrypted in the stream: ${rdb.detail}${rdb.expires ? ` (${rdb.expires} with a TTL)` : ''}`);
    return { path, checksumVerified: !options.skipVerify, rdb };
  }
  await options.beforeParse?.(path);
  const rdb = await checkRdb(options.checkRunner, path);
  if (!rdb.ok) throw refusal('REDIS_SNAPSHOT_INVALID', `${source.kind} ${source.id}: ${source.file.name} does not validate (${rdb.detail}), so it will not be restored`, fix);
  options.logger.info(`ok   ${source.file.name}: ${rdb.detail}${rdb.expires ? ` (${rdb.expires} with a TTL)` : ''}`);
  return { path, checksumVerified: !options.skipVerify, rdb };
}

/** Where and how the live server keeps its data (`CONFIG GET`). */
export interface RedisPersistence {
  dir: string;
  dbfilename: string;
  appendonly: boolean;
  appenddirname?: string;
  appendfilename: string;
}

const PERSISTENCE_PARAMETERS = ['dir', 'dbfilename', 'appendonly', 'appenddirname', 'appendfilename'] as const;

export function parseConfigGet(output: string): Record<string, string> {
  const lines = output.replace(/\r/g, '').split('\n');
  if (lines.at(-1) === '') lines.pop();
  const values: Record<string, string> = {};
  for (let i = 0; i + 1 < lines.length; i += 2) values[lines[i]!] = lines[i + 1]!;
  return values;
}

const REDIS_ERROR = /^(ERR|NOAUTH|WRONGPASS|NOPERM|LOADING|MISCONF)\b/m;

async function readPersistence(runner: Runner, target: RedisTarget): Promise<RedisPersistence> {
  // Redis 7 answers several parameters at once; older servers take one per call.
  let result = await runText(runner, redisCli(target, ['CONFIG', 'GET', ...PERSISTENCE_PARAMETERS]));
  let values: Record<string, string> = {};
  if (result.exitCode === 0 && !REDIS_ERROR.test(result.stdout)) values = parseConfigGet(result.stdout);
  else {
    for (const name of PERSISTENCE_PARAMETERS) {
      result = await runText(runner, redisCli(target, ['CONFIG', 'GET', name]));
      if (result.exitCode !== 0 || REDIS_ERROR.test(result.stdout)) break;
      Object.assign(values, parseConfigGet(result.stdout));
    }
  }
  if (!values.dir || !values.dbfilename || !values.appendonly) {
    throw failure('REDIS_CONFIG_UNREADABLE', `cannot read the live server's persistence settings with CONFIG GET (${runner.where}): ${lastLines(result.stderr || result.stdout, 2)}`, {
      fix: 'the Redis user in the URL must be allowed CONFIG GET (and CONFIG must not be renamed); check the URL and password (REDIS_URL / --redis-url)',
    });
  }
  for (const name of ['dbfilename', 'appenddirname', 'appendfilename'] as const) {
    const value = values[name];
    if (value !== undefined && !/^[A-Za-z0-9][A-Za-z0-9._+-]{0,80}$/.test(value)) {
      throw failure('REDIS_CONFIG_UNSUPPORTED', `the live server's ${name} ${JSON.stringify(value)} is not a plain file name`, {
        fix: `set ${name} to a plain name (letters, digits, '.', '_', '-') in the Redis configuration`,
      });
    }
  }
  if (!values.dir.startsWith('/')) throw failure('REDIS_CONFIG_UNSUPPORTED', `the live server's dir ${JSON.stringify(values.dir)} is not an absolute path`);
  return {
    dir: values.dir,
    dbfilename: values.dbfilename,
    appendonly: values.appendonly === 'yes',
    appenddirname: values.appenddirname,
    appendfilename: values.appendfilename ?? 'appendonly.aof',
  };
}

/** The uid and gid redis-server runs as inside the container (`docker top`), so the files copied in stay its own. */
export function parseTopOwner(output: string): { uid: number; gid: number } | undefined {
  const lines = output.split('\n').filter((l) => l.trim());
  for (const line of lines.slice(1)) {
    const [, uid, gid, ...args] = line.trim().split(/\s+/);
    if (args.join(' ').includes('redis-server') && /^\d+$/.test(uid ?? '') && /^\d+$/.test(gid ?? '')) return { uid: Number(uid), gid: Number(gid) };
  }
  return undefined;
}

/** The files a Redis 7 AOF manifest lists (`file NAME seq N type b|h|i`). */
export function manifestFiles(manifest: string): string[] {
  return [...manifest.matchAll(/^file\s+(\S+)\s/gm)].map((m) => m[1]!);
}

/** The multi-part AOF layout that makes Redis 7 load `base` as its whole dataset. */
export function aofLayout(appendfilename: string): { base: string; incr: string; manifestName: string; manifest: string } {
  const base = `${appendfilename}.1.base.rdb`;
  const incr = `${appendfilename}.1.incr.aof`;
  return { base, incr, manifestName: `${appendfilename}.manifest`, manifest: `file ${base} seq 1 type b\nfile ${incr} seq 1 type i\n` };
}

export interface KeyCountComparison {
  ok: boolean;
  total: number;
  detail: string;
  /** Databases whose count differs from backup.json's (read just after the snapshot was taken, so informational). */
  perDbDifferences: { db: string; expected: number; loaded: number }[];
}

/**
 * The same rule as the isolated restore: the total loaded equals the snapshot's key count, minus
 * at most the keys with a TTL (they can expire between snapshot and load).
 */
export function compareKeyCounts(rdb: Pick<RdbCheck, 'keysRead' | 'expires'>, expectedPerDb: Record<string, number>, loaded: Record<string, number>): KeyCountComparison {
  const total = Object.values(loaded).reduce((a, b) => a + b, 0);
  const ok = total <= rdb.keysRead && total >= rdb.keysRead - rdb.expires;
  const perDbDifferences = [...new Set([...Object.keys(expectedPerDb), ...Object.keys(loaded)])]
    .sort()
    .map((db) => ({ db, expected: expectedPerDb[db] ?? 0, loaded: loaded[db] ?? 0 }))
    .filter((d) => d.loaded > d.expected || d.loaded < d.expected - rdb.expires);
  const perDb =
    Object.entries(loaded)
      .map(([db, n]) => `${db}=${n}`)
      .join(', ') || 'none';
  const detail = `${total} keys loaded (${perDb}), snapshot holds ${rdb.keysRead}${rdb.expires ? ` (${rdb.expires} with a TTL)` : ''}`;
  return { ok, total, detail, perDbDifferences };
}

/**
 * Refuses (exit 3) unless `confirm` is exactly the service name: no trimming, no case folding.
 * `keys` is null when the server is down and its keys cannot be counted.
 */
export function requireServiceConfirmation(service: string, confirm: string | undefined, keys: number | null): void {
  if (confirm === service) return;
  const fix = `pass --confirm ${service} (exactly the Compose service name) to replace its data; a pre-restore snapshot is taken first`;
  if (confirm === undefined || confirm === '') {
    throw refusal(
      'CONFIRMATION_REQUIRED',
      `restoring into the live Redis of service "${service}" replaces ${keys === null ? 'its data (it is not running, so its keys cannot be counted)' : `its ${keys} keys`}, and --confirm was not given; nothing was changed`,
      fix,
    );
  }
  throw refusal('CONFIRMATION_MISMATCH', `--confirm ${JSON.stringify(confirm)} does not match the service ${JSON.stringify(service)} exactly; nothing was changed`, fix);
}

export interface LiveRestoreOptions {
  catalog: Catalog;
  environment: string;
  source: RedisSnapshotSource;
  /** The Compose service that runs Redis. */
  service: string;
  compose: ComposeProject;
  /** redis-cli's connection inside the service's container. */
  target: RedisTarget;
  confirm?: string;
  skipVerify?: boolean;
  /** Spawns docker and Compose on this host. */
  runner: Runner;
  /** Runs redis-check-rdb; default: inside the service's container (a fresh container of its image when it is stopped). */
  checkRunner?: Runner;
  logger: Logger;
  startTimeoutSeconds?: number;
  lockWaitSeconds?: number;
  /** The age identity, for a snapshot stored encrypted: decrypted in the stream into the check and into the container. */
  identity?: AgeIdentity;
  /** age recipients (encryption.recipients): the pre-restore snapshot is stored encrypted to them. */
  encryptTo?: readonly string[];
}

export interface LiveRestoreResult {
  ok: boolean;
  source: { kind: RedisSnapshotSource['kind']; id: string; file: string; sha256: string; bytes: number };
  service: string;
  container: string;
  mode: 'rdb' | 'aof';
  persistence: RedisPersistence;
  checksumsVerified: boolean;
  /** Null when the service was not running (an undo after a failed start). */
  keysBefore: Record<string, number> | null;
  keysAfter: Record<string, number>;
  snapshotKeys: number;
  snapshotKeysWithTtl: number;
  preRestoreSnapshot: { id: string; path: string } | null;
  /** AOF files of the old dataset that could not be removed (Redis ignores them: its manifest no longer lists them). */
  staleFilesLeft: string[];
  perDbDifferences: KeyCountComparison['perDbDifferences'];
  detail: string;
  seconds: number;
}

/**
 * Replaces the data of a live Redis run by Compose with a snapshot from the catalog, deciding
 * everything under the environment lock: read the live server's settings, version and keys →
 * check the snapshot (checksum, RDB version against the live server, redis-check-rdb) →
 * confirmation → pre-restore snapshot → count the keys again → stop → copy the snapshot in (RDB,
 * or a Redis 7 multi-part AOF base) → start → wait for PONG → compare key counts. Nothing is
 * touched before the confirmation and the pre-restore snapshot succeeded; keys written while the
 * restore waited for the lock are counted, and keys that appear in an empty Redis before the stop
 * refuse an unconfirmed restore (exit 3).
 */
export async function restoreRedisLive(options: LiveRestoreOptions): Promise<LiveRestoreResult> {
  const { logger, source, service, runner } = options;
  const started = Date.now();
  const step = (n: number, text: string) => logger.info(`[${n}/7] ${text}`);
  const envDir = options.catalog.envDir(options.environment);
  const waitSeconds = options.lockWaitSeconds ?? 30;
  const holder = await lockStatus(envDir).catch(() => undefined);
  if (holder?.held && !holder.stale && holder.info) {
    logger.info(`waiting up to ${waitSeconds} s for the lock of ${options.environment}, held by ${holder.info.owner} (pid ${holder.info.pid}, "${holder.info.command}")`);
  }

  // An encrypted snapshot needs an identity (exit 2) that is among its recipients (exit 1), before anything is looked at.
  requireIdentityFor([source.file], options.identity, `the Redis snapshot of ${source.kind} ${source.id}`);
  return withLock(envDir, options.environment, { command: `redis-restore ${source.id} into ${service}`, waitSeconds }, async () => {
    step(1, `inspect the live Redis of service ${service}`);
    const driver = new ComposeDriver(runner, options.compose);
    const found = await serviceContainer(runner, driver, options.compose, service);
    const container = found.id;
    // `docker exec` on the id found above: a Compose v1 `exec` costs seconds per call.
    const inContainer = serviceContainerRunner(container, service);
    const checkRunner = options.checkRunner ?? (found.running ? inContainer : throwawayContainerRunner(found.imageId, `a throwaway container of service ${service}'s image`));
    let persistence: RedisPersistence;
    let owner: FileOwner;
    let keysBefore: Record<string, number> | null;
    let server: { identity: ServerIdentity; relaxed: boolean } | undefined;
    if (found.running) {
      persistence = await readPersistence(inContainer, options.target);
      if (persistence.appendonly && !persistence.appenddirname) {
        throw refusal(
          'REDIS_AOF_UNSUPPORTED',
          `service ${service} runs with appendonly yes on a Redis older than 7 (no appenddirname); only the Redis 7 multi-part AOF is supported; nothing was changed`,
          `set appendonly no for the restore (then BGREWRITEAOF and turn it back on), or upgrade to Redis 7`,
        );
      }
      // One INFO: the version and the keys (each exec into the container costs seconds).
      ({ server, keys: keysBefore } = await readServerInfo(inContainer, options.target));
      owner = await redisOwner(runner, container, inContainer, persistence.dir);
    } else if (source.recorded && source.recorded.service === service) {
      // A restore that left the service down is undone with its pre-restore snapshot, which
      // recorded the settings the stopped server cannot answer for.
      ({ persistence, owner } = source.recorded);
      keysBefore = null;
      logger.warn(`service ${service} is not running (${found.status}); using the settings recorded with pre-restore snapshot ${source.id}`);
    } else {
      throw failure('REDIS_SERVICE_NOT_RUNNING', `the container of service ${service} is not running (${found.status}); its settings cannot be read; nothing was changed`, {
        fix: `start it (${composeHint(options.compose, `up -d ${service}`)}); if a restore left it unable to start, restore that restore's pre-restore snapshot by id (it recorded the settings)`,
      });
    }
    const totalBefore = keysBefore ? sumKeys(keysBefore) : null;
    const serverName = server ? `${server.identity.product === 'valkey' ? 'Valkey' : 'Redis'} ${server.identity.version}` : 'version unknown';
    logger.info(
      `     container ${container.slice(0, 12)}, ${serverName}, ${persistence.appendonly ? `appendonly yes (${persistence.dir}/${persistence.appenddirname})` : `appendonly no (${persistence.dir}/${persistence.dbfilename})`}, ${totalBefore ?? 'unknown (not running)'} keys, files owned by ${owner.uid}:${owner.gid}`,
    );

    step(2, `check ${source.kind} ${source.id}: ${source.file.name}`);
    const checked = await checkSnapshotFile(source, {
      checkRunner,
      skipVerify: Boolean(options.skipVerify),
      logger,
      identity: options.identity,
      beforeParse: (path, header) => requireLoadableRdb(path, source, service, server, logger, header),
    });

    step(3, 'confirmation');
    if (totalBefore === 0) logger.info('     the live Redis holds no keys: no confirmation needed');
    else {
      requireServiceConfirmation(service, options.confirm, totalBefore);
      logger.info(`     --confirm ${service} matches the service`);
    }

    step(4, 'pre-restore snapshot of the live Redis');
    let preRestore: { id: string; path: string } | null = null;
    const snapshotNow = async () => {
      preRestore = await takePreRestoreSnapshot(options, inContainer, persistence, owner);
      logger.info(`     pre-restore snapshot ${preRestore.id} at ${preRestore.path}`);
      logger.info(`     to undo: lifeline redis-restore --env ${options.environment} --backup ${preRestore.id} --confirm ${service}`);
    };
    if (totalBefore) await snapshotNow();
    else logger.info(totalBefore === 0 ? '     skipped: the live Redis holds no keys' : '     skipped: the service is not running, so there is no live data to snapshot');

    step(5, `stop ${service} and replace its data`);
    if (found.running) {
      // The decision was made on a key count: a Redis that gained keys since is decided again.
      const totalNow = sumKeys(await redisKeyspace(inContainer, options.target));
      if (!preRestore && totalNow > 0) {
        if (options.confirm !== service) {
          throw refusal(
            'REDIS_CHANGED',
            `the live Redis of service "${service}" held no keys when the restore was decided and holds ${totalNow} now (written since); restoring would replace them without --confirm or a pre-restore snapshot; nothing was changed`,
            `stop the writers, or pass --confirm ${service} (exactly the Compose service name) to replace its data after a pre-restore snapshot`,
          );
        }
        logger.info(`     the live Redis gained ${totalNow} keys since the decision; --confirm ${service} was given: taking the pre-restore snapshot now`);
        await snapshotNow();
      } else if (totalBefore !== null && totalNow !== totalBefore) {
        logger.warn(`the live Redis holds ${totalNow} keys now, ${totalBefore} when the pre-restore snapshot was taken: writes since the snapshot are replaced too`);
      }
    }
    const taken = preRestore as { id: string; path: string } | null;
    const undo = taken ? `; the data from before is in pre-restore snapshot ${taken.id} (lifeline redis-restore --env ${options.environment} --backup ${taken.id} --confirm ${service})` : '';
    const record = async (entry: Record<string, unknown>) =>
      options.catalog
        .appendLog(options.environment, REDIS_RESTORE_LOG, {
          at: new Date().toISOString(),
          source: source.id,
          service,
          checksumsVerified: checked.checksumVerified,
          preRestoreSnapshot: taken?.id ?? null,
          ...entry,
        })
        .catch((error: Error) => logger.warn(`could not record the restore in ${REDIS_RESTORE_LOG}: ${error.message}`));

    await driver.stop(service).catch(async (error: Error) => {
      await record({ ok: false, stage: 'stop', error: error.message });
      throw failure('REDIS_STOP_FAILED', `${error.message}; the live data was not replaced${undo}`, { fix: `check the service with: ${composeHint(options.compose, `ps ${service}`)}`, cause: error });
    });
    let staleFiles: string[] = [];
    try {
      staleFiles = await replaceData(
        runner,
        container,
        persistence,
        owner,
        checked.path,
        source.file.bytes,
        logger,
        isEncrypted(source.file) ? { open: () => openPlaintext(source.dir, source.file, options.identity, `${source.kind} ${source.id}`), size: source.file.encryption.plaintextBytes } : undefined,
      );
    } catch (error) {
      await record({ ok: false, stage: 'copy', error: (error as Error).message });
      throw failure('REDIS_COPY_FAILED', `copying the snapshot into ${service} failed: ${(error as Error).message}; the service is stopped and its data files may be partly replaced${undo}`, {
        fix: `fix the cause, then re-run the restore${taken ? ` (or restore pre-restore snapshot ${taken.id} to go back)` : ''}; the service stays stopped until then`,
        cause: error,
      });
    }

    step(6, `start ${service} and wait until it answers PING`);
    await driver.start(service).catch(async (error: Error) => {
      await record({ ok: false, stage: 'start', error: error.message });
      throw failure('REDIS_START_FAILED', `${service} did not start after its data was replaced: ${error.message}${undo}`, {
        fix: `read its log: ${composeHint(options.compose, `logs --tail 50 ${service}`)}`,
        cause: error,
      });
    });
    try {
      await waitForPong(inContainer, driver, container, options.target, (options.startTimeoutSeconds ?? 300) * 1000, logger);
    } catch (error) {
      const logs = await driver.logsTail(service, 10);
      await record({ ok: false, stage: 'start', error: (error as Error).message });
      throw failure(
        'REDIS_START_FAILED',
        `${service} did not come back after its data was replaced (${(error as Error).message})${undo}\n  last lines of its log:\n${logs
          .split('\n')
          .map((l) => `    ${l}`)
          .join('\n')}`,
        {
          fix: `read its log: ${composeHint(options.compose, `logs --tail 100 ${service}`)}`,
          cause: error,
        },
      );
    }

    step(7, 'compare key counts with the snapshot');
    const keysAfter = await redisKeyspace(inContainer, options.target);
    const comparison = compareKeyCounts(checked.rdb, source.file.keys ?? {}, keysAfter);
    logger.info(`${comparison.ok ? 'ok  ' : 'FAIL'} ${comparison.detail}`);
    for (const d of comparison.perDbDifferences)
      logger.warn(`${d.db}: ${d.loaded} keys loaded, the backup's record says ${d.expected} (counted just after the snapshot, so writes in between show here)`);
    const staleFilesLeft = staleFiles.length ? await removeStaleAofFiles(inContainer, persistence, staleFiles, logger) : [];
    const result: LiveRestoreResult = {
      ok: comparison.ok,
      source: { kind: source.kind, id: source.id, file: source.file.name, sha256: source.file.sha256, bytes: source.file.bytes },
      service,
      container,
      mode: persistence.appendonly ? 'aof' : 'rdb',
      persistence,
      checksumsVerified: checked.checksumVerified,
      keysBefore,
      keysAfter,
      snapshotKeys: checked.rdb.keysRead,
      snapshotKeysWithTtl: checked.rdb.expires,
      preRestoreSnapshot: taken,
      staleFilesLeft,
      perDbDifferences: comparison.perDbDifferences,
      detail: comparison.detail,
      seconds: (Date.now() - started) / 1000,
    };
    await record({ ok: result.ok, stage: 'done', mode: result.mode, keysAfter, detail: result.detail });
    return result;
  });
}

function sumKeys(keys: Record<string, number>): number {
  return Object.values(keys).reduce((a, b) => a + b, 0);
}

/** The live server's product, version and keys from one `INFO`, and for Valkey its rdb-version-check. */
async function readServerInfo(inContainer: Runner, target: RedisTarget): Promise<{ server: { identity: ServerIdentity; relaxed: boolean } | undefined; keys: Record<string, number> }> {
  const info = await runText(inContainer, redisCli(target, ['INFO']));
  if (info.exitCode !== 0 || /^(ERR|NOAUTH|WRONGPASS|NOPERM)/m.test(info.stdout)) {
    throw failure('REDIS_CONNECT', `cannot read INFO from redis://${target.host}:${target.port} (${inContainer.where}): ${lastLines(info.stderr || info.stdout, 2)}`, {
      fix: 'check the Redis URL (REDIS_URL / --redis-url) and its password',
    });
  }
  const keys = parseKeyspace(info.stdout);
  const identity = parseServerIdentity(info.stdout);
  if (!identity) return { server: undefined, keys };
  let relaxed = false;
  if (identity.product === 'valkey') {
    const check = await runText(inContainer, redisCli(target, ['CONFIG', 'GET', 'rdb-version-check'])).catch(() => undefined);
    relaxed = check?.exitCode === 0 && parseConfigGet(check.stdout)['rdb-version-check'] === 'relaxed';
  }
  return { server: { identity, relaxed }, keys };
}

/**
 * Refuses (exit 3), before anything stops, a snapshot whose RDB version the live server cannot
 * load: it would stop Redis and leave it unable to start.
 */
async function requireLoadableRdb(
  path: string,
  source: RedisSnapshotSource,
  service: string,
  server: { identity: ServerIdentity; relaxed: boolean } | undefined,
  logger: Logger,
  plaintextStart?: Buffer,
): Promise<void> {
  const header = plaintextStart ? parseRdbHeader(plaintextStart) : await readRdbHeader(path);
  const fix = `restore a snapshot taken from a server of this version or older, or run a server that loads it in service ${service}`;
  if (!header)
    throw refusal(
      'REDIS_SNAPSHOT_INVALID',
      `${source.kind} ${source.id}: ${source.file.name} has neither a REDIS nor a VALKEY header, so it will not be restored; nothing was changed`,
      'restore another backup (lifeline backups lists them); this snapshot is damaged',
    );
  if (!server) {
    logger.warn(`the snapshot is RDB version ${header.version} (${header.text}); the live server's version is unknown (it is not running, or INFO server failed), so it is not compared`);
    return;
  }
  const verdict = rdbCompatibility(header, server.identity, { relaxed: server.relaxed });
  if (verdict.verdict === 'refuses') {
    throw refusal('REDIS_RDB_INCOMPATIBLE', `${source.kind} ${source.id} cannot be loaded by the live server of service ${service}: ${verdict.detail}; nothing was changed`, fix, {
      rdbVersion: header.version,
      header: header.text,
      server: server.identity,
    });
  }
  if (verdict.verdict === 'unknown') logger.warn(`${verdict.detail}: the restore goes ahead; if the server does not come back, restore the pre-restore snapshot`);
  else logger.info(`ok   ${verdict.detail}`);
}

export async function serviceContainer(runner: Runner, driver: ComposeDriver, project: ComposeProject, service: string): Promise<{ id: string; running: boolean; status: string; imageId: string }> {
  // Stopped ones too: a container a failed restore left stopped is still the one to restore into.
  const ids = await driver.serviceContainerIds(service);
  if (ids.length === 0)
    throw failure('REDIS_SERVICE_NOT_RUNNING', `service ${service} has no container; nothing was changed`, {
      fix: `start it (${composeHint(project, `up -d ${service}`)}) and check redis.service in lifeline.yml`,
    });
  if (ids.length > 1)
    throw failure('REDIS_SERVICE_SCALED', `service ${service} has ${ids.length} containers; a live restore needs exactly one; nothing was changed`, {
      fix: 'scale the Redis service to one container',
    });
  const [state] = await driver.inspect(ids);
  if (!state) throw failure('REDIS_SERVICE_NOT_RUNNING', `the container of service ${service} disappeared; nothing was changed`);
  // A container in a restart loop reports Running between crashes: it is not a server to read from.
  return { id: state.id, running: state.running && state.status === 'running', status: state.status, imageId: state.imageId };
}

/** Who owns Redis' files: the uid/gid redis-server runs as (`docker top`), else the owner of its dir. */
async function redisOwner(runner: Runner, container: string, inContainer: Runner, dir: string): Promise<FileOwner> {
  const top = await runText(runner, { tool: 'docker', args: ['top', container, '-o', 'pid,uid,gid,args'] }).catch(() => undefined);
  const fromTop = top?.exitCode === 0 ? parseTopOwner(top.stdout) : undefined;
  if (fromTop) return fromTop;
  const statted = await runText(inContainer, { tool: 'stat', args: ['-c', '%u:%g', dir] }).catch(() => undefined);
  const match = statted?.exitCode === 0 ? /^(\d+):(\d+)\s*$/.exec(statted.stdout) : null;
  if (match) return { uid: Number(match[1]), gid: Number(match[2]) };
  throw failure('REDIS_OWNER_UNKNOWN', `cannot tell which user redis-server runs as in container ${container.slice(0, 12)} (docker top and stat both failed); nothing was changed`, {
    fix: 'check that docker top works against this engine',
  });
}

async function takePreRestoreSnapshot(options: LiveRestoreOptions, inContainer: Runner, persistence: RedisPersistence, owner: FileOwner): Promise<{ id: string; path: string }> {
  const { catalog, environment, logger } = options;
  const now = new Date();
  const id = newEntryId(now);
  let staged: StagedEntry | undefined;
  try {
    staged = await catalog.begin(environment, REDIS_SNAPSHOT_KIND, id, REDIS_SNAPSHOT_METADATA_FILE, { encryptTo: options.encryptTo });
    const snap = await snapshotRedis(staged, { runner: inContainer, checkRunner: options.checkRunner ?? inContainer, target: options.target, logger, fileName: REDIS_SNAPSHOT_FILE });
    const metadata: RedisSnapshotMetadata = {
      schemaVersion: 1,
      id,
      environment,
      label: 'pre-restore',
      createdAt: now.toISOString(),
      service: options.service,
      takenBeforeRestoring: options.source.id,
      persistence,
      owner,
      files: { redis: { name: snap.name, bytes: snap.bytes, sha256: snap.sha256, keys: snap.keys, ...(snap.encryption ? { encryption: snap.encryption } : {}) } },
    };
    await staged.commit(metadata);
    return { id, path: staged.finalDir };
  } catch (error) {
    await staged?.abort();
    throw failure('PRE_RESTORE_SNAPSHOT_FAILED', `the pre-restore snapshot of the live Redis failed, so nothing was changed: ${(error as Error).message}`, {
      fix: 'fix the cause (space in the store, the Redis user may run SYNC), then re-run the restore',
      cause: error,
    });
  }
}

/**
 * Copies the snapshot into the stopped container with `docker cp` (a tar stream, so file owners
 * are the Redis user's). With AOF on, Redis loads only what its manifest lists, so the snapshot
 * becomes the base of a fresh one-part AOF; `dbfilename` gets it too, so turning AOF off later
 * does not bring the old data back. Returns the old AOF files the new manifest no longer lists.
 */
async function replaceData(
  runner: Runner,
  container: string,
  persistence: RedisPersistence,
  owner: FileOwner,
  snapshotPath: string,
  expectedBytes: number,
  logger: Logger,
  plaintext?: { open: () => Promise<Readable>; size: number },
): Promise<string[]> {
  let size: number;
  if (plaintext) size = plaintext.size;
  else {
    size = (await stat(snapshotPath)).size;
    if (size !== expectedBytes) throw failure('SNAPSHOT_CHANGED', `${snapshotPath} is ${size} bytes, the catalog recorded ${expectedBytes}`);
  }
  // An encrypted snapshot is decrypted in the stream into docker cp's tar (once per member), never onto this host's disk.
  const body = (): { path: string; size: number } | { open: () => Promise<Readable>; size: number } => (plaintext ? { open: plaintext.open, size } : { path: snapshotPath, size });
  const entries: TarMember[] = [{ name: persistence.dbfilename, ...body(), ...owner }];
  let stale: string[] = [];
  if (persistence.appendonly) {
    const dirName = persistence.appenddirname!;
    const layout = aofLayout(persistence.appendfilename);
    const oldManifest = await readContainerFile(runner, container, `${persistence.dir}/${dirName}/${layout.manifestName}`);
    const keep = new Set([layout.base, layout.incr, layout.manifestName]);
    stale = oldManifest ? manifestFiles(oldManifest.toString('utf8')).filter((name) => !keep.has(name) && /^[A-Za-z0-9][A-Za-z0-9._+-]*$/.test(name)) : [];
    entries.push(
      { name: dirName, directory: true, ...owner },
      { name: `${dirName}/${layout.base}`, ...body(), ...owner },
      { name: `${dirName}/${layout.incr}`, text: '', ...owner },
      { name: `${dirName}/${layout.manifestName}`, text: layout.manifest, ...owner },
    );
  }
  const tar = tarStream(entries);
  let tarError: Error | undefined;
  const running = runner.start({ tool: 'docker', args: ['cp', '-', `${container}:${persistence.dir}`], stdin: tar });
  // A member that fails while it streams (a decrypted chunk that fails authentication, a file that changed) stops docker cp.
  tar.on('error', (error) => {
    tarError ??= error;
    running.kill('SIGTERM');
  });
  running.stdout.resume();
  const result = await running.done;
  if (tarError) throw new Error(`the snapshot failed while it was copied in: ${tarError.message}`);
  if (result.exitCode !== 0) throw new Error(`docker cp ${describeExit(result)}: ${lastLines(result.stderr, 3)}`);
  logger.info(
    `     wrote ${persistence.dir}/${persistence.dbfilename}${persistence.appendonly ? ` and a one-part AOF in ${persistence.dir}/${persistence.appenddirname} (${aofLayout(persistence.appendfilename).manifestName})` : ''}`,
  );
  return stale;
}

/** A small file out of a (stopped) container, or undefined when it does not exist. */
async function readContainerFile(runner: Runner, container: string, path: string): Promise<Buffer | undefined> {
  const running = runner.start({ tool: 'docker', args: ['cp', `${container}:${path}`, '-'] });
  const chunks: Buffer[] = [];
  let bytes = 0;
  running.stdout.on('data', (chunk: Buffer) => {
    bytes += chunk.length;
    if (bytes <= 1024 * 1024) chunks.push(chunk);
  });
  const result = await running.done;
  if (result.exitCode !== 0) {
    if (/no such file|could not find/i.test(result.stderr)) return undefined;
    throw new Error(`reading ${path} from the container failed (docker cp ${describeExit(result)}): ${lastLines(result.stderr, 2)}`);
  }
  if (bytes > 1024 * 1024) throw new Error(`${path} is larger than a manifest should be (${bytes} bytes)`);
  return firstTarFile(Buffer.concat(chunks));
}

async function waitForPong(inContainer: Runner, driver: ComposeDriver, container: string, target: RedisTarget, timeoutMs: number, logger: Logger): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let loadingSeen = false;
  for (let attempt = 1; ; attempt++) {
    const ping = await runText(inContainer, redisCli(target, ['PING'])).catch(() => undefined);
    const answer = ping?.stdout.trim() ?? '';
    if (answer === 'PONG') return;
    if (answer.startsWith('LOADING') && !loadingSeen) {
      loadingSeen = true;
      logger.info('     LOADING the dataset');
    }
    // A server that cannot load its data exits: say so now rather than at the timeout.
    if (attempt % 4 === 0 || !ping || ping.exitCode !== 0) {
      const [state] = await driver.inspect([container]).catch(() => []);
      if (state && (!state.running || state.status === 'restarting'))
        throw new Error(`the container ${state.status === 'restarting' ? 'is restarting (it crashed' : `exited (${state.status}`}, exit code ${state.exitCode})`);
    }
    if (Date.now() > deadline) throw new Error(`no PONG within ${Math.round(timeoutMs / 1000)} s (last answer: ${answer || 'none'})`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** Removes old AOF files the new manifest no longer lists; Redis ignores them, so a failure is a warning. */
async function removeStaleAofFiles(inContainer: Runner, persistence: RedisPersistence, names: string[], logger: Logger): Promise<string[]> {
  const paths = names.map((name) => `${persistence.dir}/${persistence.appenddirname}/${name}`);
  const result = await runText(inContainer, { tool: 'rm', args: ['-f', '--', ...paths] }).catch((error: Error) => ({ exitCode: 1, stderr: error.message, stdout: '' }));
  if (result.exitCode === 0) {
    logger.info(`     removed ${names.length} old AOF file(s) the new manifest does not list`);
    return [];
  }
  logger.warn(`the old AOF files ${paths.join(', ')} are left in place (rm: ${lastLines(result.stderr, 1)}); Redis ignores them, remove them by hand`);
  return paths;
}

/** The first `n` bytes of a stream (fewer if it is shorter); the stream is destroyed after. */
async function readFirstBytes(stream: Readable, n: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let have = 0;
  try {
    for await (const chunk of stream) {
      chunks.push(chunk as Buffer);
      have += (chunk as Buffer).length;
      if (have >= n) break;
    }
  } finally {
    stream.destroy();
  }
  return Buffer.concat(chunks).subarray(0, n);
}
