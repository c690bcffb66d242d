import { readFile } from 'node:fs/promises';
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
import type { Runner } from '../runner/runner';
import { checkRdb, redisKeyspace, snapshotRedis, type RdbCheck, type RedisTarget } from '../redis/snapshot';
import { parseRdbHeader, rdbCompatibility, readRdbHeader } from '../redis/rdb-version';
import { readPersistence, readServerInfo, waitForPong, type LiveServer, type RedisPersistence } from '../redis/live-server';
import { redisFileOwner, removeStaleAofFiles, replaceContainerData, type FileOwner } from '../redis/container-files';
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
    let server: LiveServer | undefined;
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
      owner = await redisFileOwner(runner, container, inContainer, persistence.dir);
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
      staleFiles = await replaceContainerData(
        runner,
        container,
        persistence,
        owner,
        isEncrypted(source.file)
          ? { open: () => openPlaintext(source.dir, source.file, options.identity, `${source.kind} ${source.id}`), size: source.file.encryption.plaintextBytes }
          : { path: checked.path, expectedBytes: source.file.bytes },
        logger,
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
      await waitForPong(inContainer, options.target, {
        timeoutMs: (options.startTimeoutSeconds ?? 300) * 1000,
        logger,
        containerState: async () => (await driver.inspect([container]))[0],
      });
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

/**
 * Refuses (exit 3), before anything stops, a snapshot whose RDB version the live server cannot
 * load: it would stop Redis and leave it unable to start.
 */
async function requireLoadableRdb(path: string, source: RedisSnapshotSource, service: string, server: LiveServer | undefined, logger: Logger, plaintextStart?: Buffer): Promise<void> {
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
