import { failure, usageError } from '../errors';
import type { PsqlSession } from '../runner/psql';
import { formatPgUrl, parsePgUrl, type PgConnection } from '../runner/postgres-env';
import { detectComposeCommand, normalizeProjectName } from '../runner/compose';
import { ContainerRunner, describeExit, lastLines, LocalRunner, runText, type Runner } from '../runner/runner';
import type { ComposeSettings, EnvironmentSettings } from '../settings/resolve';
import { postgresServerBinDirs } from './binaries';

/** The URL with its password replaced by `***`: what error messages may show. */
export function maskedUrl(conn: PgConnection): string {
  return formatPgUrl({ ...conn, password: conn.password ? '***' : undefined });
}

/** The environment's PostgreSQL connection; a missing URL is a usage error that says where to set it. */
export function environmentConnection(settings: EnvironmentSettings): PgConnection {
  if (!settings.postgres.url) {
    const named = settings.postgres.urlEnv;
    // An environment that names its variable never falls back to DATABASE_URL: say which one to set.
    throw usageError(
      'NO_DATABASE_URL',
      named ? `no PostgreSQL URL for environment ${settings.name}: ${named} (its postgres.urlEnv) is not set` : `no PostgreSQL URL for environment ${settings.name}`,
      named
        ? `set ${named}, or pass --database-url postgres://user:password@host:5432/dbname`
        : 'pass --database-url postgres://user:password@host:5432/dbname, set DATABASE_URL, or set postgres.urlEnv in lifeline.yml',
    );
  }
  const conn = parsePgUrl(settings.postgres.url);
  return settings.postgres.database ? { ...conn, database: settings.postgres.database } : conn;
}

/**
 * Where the PostgreSQL client tools run: inside the configured Compose service, or locally,
 * preferring the configured binDir, then the newest Debian major (its pg_dump reads every older server).
 */
export async function postgresRunner(settings: EnvironmentSettings): Promise<Runner> {
  if (settings.postgres.service) return composeRunner(settings.compose, settings.postgres.service);
  return new LocalRunner({ binDirs: postgresServerBinDirs(settings.postgres.binDir) });
}

/** Local PostgreSQL client tools (verification reads catalog files on this host). */
export function localPostgresRunner(binDir?: string): Runner {
  return new LocalRunner({ binDirs: postgresServerBinDirs(binDir) });
}

export async function redisRunner(settings: EnvironmentSettings): Promise<Runner> {
  if (settings.redis?.service) return composeRunner(settings.compose, settings.redis.service);
  return new LocalRunner({ binDirs: settings.redis?.binDir ? [settings.redis.binDir] : [] });
}

/**
 * Runs tools inside the service's container with `docker exec` on its id, resolved once here with
 * `compose ps -q SERVICE` (each Compose v1 `exec` costs 2-10 s; `docker exec` a tenth of that).
 */
export async function composeRunner(compose: ComposeSettings, service: string): Promise<ContainerRunner> {
  const container = await serviceContainerId(compose, service);
  return new ContainerRunner({ container, where: `compose service ${service}` });
}

/** The one running container of a Compose service; a missing or scaled service is a failure with the fix. */
export async function serviceContainerId(compose: ComposeSettings, service: string): Promise<string> {
  if (compose.projectName) {
    // With a known project name the engine is asked directly by Compose's labels (running
    // containers only): Compose v1 takes 2-5 s to start, paid by every command in this layout.
    // Anything but exactly one container goes on to Compose itself, for its diagnostics.
    const labels = [`com.docker.compose.project=${normalizeProjectName(compose.projectName)}`, `com.docker.compose.service=${service}`, 'com.docker.compose.oneoff=False'];
    const byLabel = await runText(new LocalRunner(), { tool: 'docker', args: ['ps', '-q', '--no-trunc', ...labels.flatMap((l) => ['--filter', `label=${l}`])] }).catch(() => undefined);
    const found =
      byLabel?.exitCode === 0
        ? byLabel.stdout
            .split('\n')
            .map((l) => l.trim())
            .filter(Boolean)
        : [];
    if (found.length === 1) return found[0]!;
  }
  const command = await composeCommand(compose.command);
  const [tool, ...prefix] = command;
  const project = [...compose.files.flatMap((f) => ['-f', f]), ...(compose.projectName ? ['-p', compose.projectName] : [])];
  const hint = (args: string) => [...command, ...project, args].join(' ');
  const ps = await runText(new LocalRunner(), { tool: tool!, args: [...prefix, ...project, 'ps', '-q', service] });
  if (ps.exitCode !== 0) {
    throw failure('COMPOSE_PS_FAILED', `cannot find the container of Compose service ${service} (${hint(`ps -q ${service}`)} ${describeExit(ps)}): ${lastLines(ps.stderr, 3)}`, {
      fix: 'check compose.files and compose.projectName in lifeline.yml (they must name the running stack), and that Docker is reachable (DOCKER_HOST)',
    });
  }
  const ids = ps.stdout
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean);
  if (ids.length === 0) {
    throw failure('SERVICE_NOT_RUNNING', `Compose service ${service} has no container in ${compose.projectName ? `project ${compose.projectName}` : 'the stack'}`, {
      fix: `start it (${hint(`up -d ${service}`)}), or check the service name (postgres.service / redis.service) and compose.projectName in lifeline.yml`,
    });
  }
  if (ids.length > 1) {
    throw failure('SERVICE_SCALED', `Compose service ${service} has ${ids.length} containers; Lifeline runs its tools in exactly one`, { fix: `scale ${service} to one container` });
  }
  return ids[0]!;
}

/** `auto` prefers Compose v2 (`docker compose`), then v1 (`docker-compose`). */
export async function composeCommand(configured: ComposeSettings['command']): Promise<string[]> {
  return [...(await detectComposeCommand(new LocalRunner(), configured, process.env.PATH ?? ''))];
}

/**
 * Makes a first round trip so a wrong password or an unreachable server fails with the URL
 * (password masked) and a fix, instead of a bare libpq message later.
 */
export async function checkConnection(session: PsqlSession, conn: PgConnection): Promise<void> {
  try {
    await session.queryValue('SELECT 1');
  } catch (error) {
    const message = (error as Error).message;
    const auth = /password authentication failed|no password supplied|authentication failed/i.test(message);
    throw failure('POSTGRES_CONNECT', `cannot connect to ${maskedUrl(conn)}: ${message}`, {
      fix: auth ? 'check the user and password in the database URL (DATABASE_URL / --database-url)' : 'check that the server is running and reachable, and the host, port and database name in the URL',
      cause: error,
    });
  }
}
