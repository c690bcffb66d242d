import { failure, usageError } from '../errors';
import type { PsqlSession } from '../runner/psql';
import { formatPgUrl, parsePgUrl, type PgConnection } from '../runner/postgres-env';
import { detectComposeCommand } from '../runner/compose';
import { ComposeRunner, LocalRunner, type Runner } from '../runner/runner';
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
      named ? `set ${named}, or pass --database-url postgres://user:password@host:5432/dbname` : 'pass --database-url postgres://user:password@host:5432/dbname, set DATABASE_URL, or set postgres.urlEnv in lifeline.yml',
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

export async function composeRunner(compose: ComposeSettings, service: string): Promise<Runner> {
  return new ComposeRunner({ composeCommand: await composeCommand(compose.command), files: compose.files, projectName: compose.projectName, service });
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
