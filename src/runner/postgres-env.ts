import { usageError } from '../errors';
import { decodeUrlPart } from '../settings/secrets';

export interface PgConnection {
  host: string;
  port: number;
  user?: string;
  password?: string;
  database: string;
  /** Other libpq parameters from the URL's query string (sslmode, ...). */
  params: Record<string, string>;
  /**
   * lock_timeout / statement_timeout (seconds) for the sessions Lifeline opens itself, so a table
   * locked by a migration fails a query in bounded time instead of hanging. pg_dump and pg_restore
   * reset both for their own work (pg_dump takes --lock-wait-timeout instead).
   */
  timeouts?: { lockSeconds?: number; statementSeconds?: number };
}

const SSL_MODES = ['disable', 'allow', 'prefer', 'require', 'verify-ca', 'verify-full'];

/** Parses a postgres:// URL into its parts. */
export function parsePgUrl(url: string): PgConnection {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw usageError('BAD_URL', 'the PostgreSQL URL is not a valid URL', 'write it as postgres://user:password@host:5432/dbname');
  }
  if (parsed.protocol !== 'postgres:' && parsed.protocol !== 'postgresql:') {
    throw usageError('BAD_URL', `the PostgreSQL URL uses the scheme ${parsed.protocol}`, 'write it as postgres://user:password@host:5432/dbname');
  }
  const params: Record<string, string> = {};
  parsed.searchParams.forEach((value, key) => {
    params[key] = value;
  });
  // A libpq ?password= authenticates like the userinfo one; both travel in PGPASSWORD only.
  const queryPassword = params.password;
  delete params.password;
  if (params.sslpassword !== undefined) {
    // libpq reads sslpassword from no environment variable, and Lifeline puts no secret on a command line.
    throw usageError(
      'BAD_URL',
      'the PostgreSQL URL sets sslpassword, which Lifeline cannot pass to pg_dump, pg_restore and psql without putting it on their command line',
      "use a client key without a passphrase (openssl pkey -in key.pem -out plain.pem), readable only by the store's owner (chmod 0600), in sslkey",
    );
  }
  // libpq rejects any other sslmode only once a tool connects, as a connection failure (exit 1).
  if (params.sslmode !== undefined && !SSL_MODES.includes(params.sslmode)) {
    throw usageError('BAD_URL', `the PostgreSQL URL's sslmode=${params.sslmode} is not one libpq knows`, `use one of ${SSL_MODES.join(', ')}`);
  }
  const decode = (part: string, value: string) => decodeUrlPart('PostgreSQL', part, value);
  const database = decode('database name', parsed.pathname.replace(/^\//, '')) || 'postgres';
  return {
    host: decode('host', parsed.hostname.replace(/^\[|\]$/g, '')) || params.host || '127.0.0.1',
    port: parsed.port ? Number(parsed.port) : 5432,
    user: parsed.username ? decode('user name', parsed.username) : undefined,
    password: parsed.password ? decode('password', parsed.password) : queryPassword || undefined,
    database,
    params,
  };
}

export function formatPgUrl(conn: PgConnection): string {
  const auth = conn.user ? `${encodeURIComponent(conn.user)}${conn.password ? `:${encodeURIComponent(conn.password)}` : ''}@` : '';
  const query = new URLSearchParams(conn.params).toString();
  return `postgres://${auth}${conn.host.includes(':') ? `[${conn.host}]` : conn.host}:${conn.port}/${encodeURIComponent(conn.database)}${query ? `?${query}` : ''}`;
}

const PARAM_ENV: Record<string, string> = {
  sslmode: 'PGSSLMODE',
  sslrootcert: 'PGSSLROOTCERT',
  sslcert: 'PGSSLCERT',
  sslkey: 'PGSSLKEY',
  application_name: 'PGAPPNAME',
  connect_timeout: 'PGCONNECT_TIMEOUT',
  options: 'PGOPTIONS',
};

/**
 * libpq environment for a connection. The password travels in PGPASSWORD, never on a
 * command line where `ps` would show it.
 */
export function pgEnv(conn: PgConnection, database = conn.database): Record<string, string | undefined> {
  const env: Record<string, string | undefined> = {
    PGHOST: conn.host,
    PGPORT: String(conn.port),
    PGUSER: conn.user,
    PGPASSWORD: conn.password,
    PGDATABASE: database,
    PGCONNECT_TIMEOUT: '10',
  };
  for (const [param, value] of Object.entries(conn.params)) {
    const name = PARAM_ENV[param];
    if (name) env[name] = value;
  }
  const settings = [
    ...(conn.timeouts?.lockSeconds ? [`-c lock_timeout=${Math.round(conn.timeouts.lockSeconds * 1000)}`] : []),
    ...(conn.timeouts?.statementSeconds ? [`-c statement_timeout=${Math.round(conn.timeouts.statementSeconds * 1000)}`] : []),
  ];
  if (settings.length) env.PGOPTIONS = [env.PGOPTIONS, ...settings].filter(Boolean).join(' ');
  return env;
}

export function withDatabase(conn: PgConnection, database: string): PgConnection {
  return { ...conn, database };
}

/** A SQL identifier, quoted. */
export function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

/** A SQL string literal, quoted (standard_conforming_strings on, the default since 9.1). */
export function quoteLiteral(value: string): string {
  if (value.includes('\0')) throw usageError('BAD_VALUE', 'a value contains a NUL byte', 'remove the NUL byte');
  return `'${value.replace(/'/g, "''")}'`;
}
