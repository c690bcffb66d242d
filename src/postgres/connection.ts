import { failure, usageError } from '../errors';
import type { PsqlSession } from '../runner/psql';
import { formatPgUrl, parsePgUrl, type PgConnection } from '../runner/postgres-env';
import type { EnvironmentSettings } from '../settings/resolve';

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
