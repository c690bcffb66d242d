import type { ComposeSettings, EnvironmentSettings } from '../settings/resolve';
import { serviceContainerId } from './compose';
import { postgresServerBinDirs } from './postgres-binaries';
import { ContainerRunner, ImageRunner, LocalRunner, type Runner } from './runner';

// The one runner factory (issue #23): where the PostgreSQL and Redis tools run, built from the
// settings. Local binaries, a Compose service's running container (by `docker exec` on its id), or a
// throwaway container of an image. The Compose command lines behind it are in compose.ts.

/**
 * Where the PostgreSQL client tools run: inside the configured Compose service, or locally,
 * preferring the configured binDir, then the newest Debian major (its pg_dump reads every older server).
 */
export async function postgresRunner(settings: EnvironmentSettings): Promise<Runner> {
  if (settings.postgres.service) return composeRunner(settings.compose, settings.postgres.service);
  return localPostgresRunner(settings.postgres.binDir);
}

/** Local PostgreSQL client tools (verification reads catalog files on this host). */
export function localPostgresRunner(binDir?: string): Runner {
  return new LocalRunner({ binDirs: postgresServerBinDirs(binDir) });
}

/** Where redis-cli and redis-check-rdb run: inside the configured Compose service, or locally (redis.binDir, then PATH). */
export async function redisRunner(settings: EnvironmentSettings): Promise<Runner> {
  if (settings.redis?.service) return composeRunner(settings.compose, settings.redis.service);
  return localToolsRunner(settings.redis?.binDir);
}

/** Tools on this host: the one configured directory first, then PATH (with the given environment, e.g. DOCKER_HOST). */
export function localToolsRunner(binDir?: string, baseEnv?: NodeJS.ProcessEnv): LocalRunner {
  return new LocalRunner({ binDirs: binDir ? [binDir] : [], ...(baseEnv ? { baseEnv } : {}) });
}

/**
 * Runs tools inside the service's container with `docker exec` on its id, resolved once here with
 * `compose ps -q SERVICE` (each Compose v1 `exec` costs 2-10 s; `docker exec` a tenth of that).
 */
export async function composeRunner(compose: ComposeSettings, service: string): Promise<ContainerRunner> {
  return serviceContainerRunner(await serviceContainerId(compose, service), service);
}

/** `docker exec` into a Compose service's container already found by its id. */
export function serviceContainerRunner(container: string, service: string): ContainerRunner {
  return new ContainerRunner({ container, where: `compose service ${service}` });
}

/** Each tool in a fresh container of the image (`docker run --rm`, no network), for tools a stopped service's image holds. */
export function throwawayContainerRunner(image: string, where: string): ImageRunner {
  return new ImageRunner({ image, where });
}
