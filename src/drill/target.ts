import { usageError } from '../errors';
import type { Logger } from '../logger';
import { maintenanceConnection } from '../backup/restore';
import { findServerBinDir } from '../runner/postgres-binaries';
import { startThrowawayCluster, type ThrowawayCluster } from '../postgres/cluster';
import { composeRunner } from '../runner/factory';
import { drillServerImage, startContainerCluster, type ContainerCluster } from '../postgres/container-cluster';
import { drillRedisImage } from '../redis/container-server';
import { quoteIdent, quoteLiteral, withDatabase, type PgConnection } from '../runner/postgres-env';
import { PsqlSession, queryOnce } from '../runner/psql';
import { findExecutable, type ContainerRunner, type Runner } from '../runner/runner';
import type { EnvironmentSettings } from '../settings/resolve';

/** Where a logical drill restores: a throwaway container or cluster it started, or a given database. */
export type IsolatedTarget =
  | { kind: 'container'; container: ContainerCluster }
  | { kind: 'cluster'; cluster: ThrowawayCluster }
  /** `created`: the drill created the database on the given server, so it drops it afterwards. */
  | { kind: 'url'; conn: PgConnection; created: boolean };

/** An isolated target ready to restore into: the database, the runner for pg_restore and psql, and the set-up time. */
export interface PreparedTarget {
  target: IsolatedTarget;
  conn: PgConnection;
  runner: Runner;
  /** Starting a throwaway server is the drill's own set-up, not part of a real restore's RTO. */
  setupSeconds: number;
}

export interface TargetRequest {
  settings: EnvironmentSettings;
  drillId: string;
  backupId: string;
  database: string;
  labels: Record<string, string>;
  /** The db service's image (postgres.service), for a throwaway container. */
  pgImage?: string;
  /** A given isolated database (already checked not to be the live one). */
  targetConn?: PgConnection;
  /** The environment's PostgreSQL client runner (local tools, or the db service's container). */
  runner: Runner;
}

/**
 * Where the drill's throwaway PostgreSQL and Redis come from: the Compose services' images when
 * postgres.service / redis.service are set (checked to hold the server binaries), else this
 * host's binaries (checked to exist). Refuses with the fix before anything is restored.
 */
export async function throwawaySources(
  settings: EnvironmentSettings,
  pgService: ContainerRunner | undefined,
  hasTarget: boolean,
  hasRedis: boolean,
): Promise<{ pgImage?: string; redisImage?: string }> {
  let pgImage: string | undefined;
  const service = settings.postgres.service;
  if (!hasTarget) {
    if (pgService && service) pgImage = await drillServerImage(pgService, service);
    else if (!findServerBinDir(settings.postgres.binDir)) {
      throw usageError(
        'NO_POSTGRES_SERVER',
        'the drill needs a throwaway PostgreSQL server, and no server binaries (initdb, pg_ctl) are on this host; nothing was restored and no drill report was written',
        "install them (Debian: apt-get install postgresql-15, the major of your backups), set postgres.binDir, set postgres.service so the drill uses the db service's image, or drill into a separate database (drill.targetUrlEnv / --target-env)",
      );
    }
  }
  let redisImage: string | undefined;
  if (hasRedis) {
    if (settings.redis?.service) redisImage = await drillRedisImage(await composeRunner(settings.compose, settings.redis.service), settings.redis.service);
    else if (!findExecutable('redis-server', settings.redis?.binDir ? [settings.redis.binDir] : []) || !findExecutable('redis-check-rdb', settings.redis?.binDir ? [settings.redis.binDir] : [])) {
      throw usageError(
        'NO_REDIS_SERVER',
        'the backup holds a Redis snapshot and the drill loads it into a private redis-server, but redis-server / redis-check-rdb are not on this host; nothing was restored and no drill report was written',
        "install them (Debian: apt-get install redis-server), set redis.binDir, or set redis.service so the drill uses the Redis service's image",
      );
    }
  }
  return { pgImage, redisImage };
}

/**
 * Readies the isolated database a logical drill restores into: starts a throwaway container of the
 * db service's image or a throwaway cluster from this host's binaries, or, for a given database,
 * notes whether the drill creates it (and so drops it afterwards).
 */
export async function prepareIsolatedTarget(request: TargetRequest): Promise<PreparedTarget> {
  const { settings, drillId, backupId, database, pgImage, targetConn, runner } = request;
  if (!targetConn && pgImage) {
    const began = Date.now();
    const container = await startContainerCluster({
      image: pgImage,
      nameSuffix: `${drillId}-pg`,
      labels: request.labels,
      purpose: `drill ${drillId} of ${settings.name}: throwaway PostgreSQL container restored from backup ${backupId}`,
    });
    const setupSeconds = (Date.now() - began) / 1000;
    // pg_restore and psql run inside it, against 127.0.0.1: the same major as production, none needed here.
    return { target: { kind: 'container', container }, conn: withDatabase(container.conn, database), runner: container.runner, setupSeconds };
  }
  if (!targetConn) {
    const began = Date.now();
    const cluster = await startThrowawayCluster({ binDir: settings.postgres.binDir, fast: true, purpose: `drill ${drillId} of ${settings.name}: throwaway cluster restored from backup ${backupId}` });
    const setupSeconds = (Date.now() - began) / 1000;
    return { target: { kind: 'cluster', cluster }, conn: withDatabase(cluster.conn, database), runner, setupSeconds };
  }
  const created = !(await databaseExists(runner, targetConn));
  return { target: { kind: 'url', conn: targetConn, created }, conn: targetConn, runner, setupSeconds: 0 };
}

/** Removes what the drill started or created; what cannot be removed is a warning, never a failure. */
export async function removeIsolatedTarget(target: IsolatedTarget, runner: Runner, logger: Logger): Promise<void> {
  if (target.kind === 'cluster') await target.cluster.stop().catch((error) => logger.warn(`could not remove the throwaway cluster: ${(error as Error).message}`));
  else if (target.kind === 'container') await target.container.stop().catch((error) => logger.warn(`could not remove the throwaway PostgreSQL container: ${(error as Error).message}`));
  else if (target.created) await dropDatabase(runner, target.conn, logger);
}

async function databaseExists(runner: Runner, conn: PgConnection): Promise<boolean> {
  const maintenance = maintenanceConnection(conn);
  const rows = await queryOnce(runner, maintenance, `SELECT 1 AS present FROM pg_database WHERE datname = ${quoteLiteral(conn.database)}`);
  return rows.length > 0;
}

/** Drops the database the drill created on a given target, so the next drill finds it free. */
async function dropDatabase(runner: Runner, conn: PgConnection, logger: Logger): Promise<void> {
  const maintenance = maintenanceConnection(conn);
  const session = PsqlSession.open(runner, maintenance);
  try {
    await session.exec(`DROP DATABASE IF EXISTS ${quoteIdent(conn.database)} WITH (FORCE)`);
  } catch (error) {
    logger.warn(`could not drop the drill database ${conn.database}: ${(error as Error).message}`);
  } finally {
    await session.close();
  }
}
