import { usageError } from '../errors';
import { ComposeRunner, findExecutable, LocalRunner, type Runner } from '../runner/runner';
import { parsePgUrl, withDatabase, type PgConnection } from '../runner/postgres-env';
import type { EnvironmentSettings } from '../settings/resolve';

export interface TenantDatabase {
  runner: Runner;
  conn: PgConnection;
}

/** Where tenant queries run: psql locally, or inside the configured Compose service. */
export function tenantDatabase(settings: EnvironmentSettings): TenantDatabase {
  const { postgres } = settings;
  if (!postgres.url) {
    throw usageError('NO_DATABASE_URL', `no PostgreSQL URL for environment ${settings.name}`, 'pass --database-url, set DATABASE_URL, or set postgres.urlEnv in lifeline.yml');
  }
  const parsed = parsePgUrl(postgres.url);
  const conn = postgres.database ? withDatabase(parsed, postgres.database) : parsed;
  if (!postgres.service) return { runner: new LocalRunner({ binDirs: postgres.binDir ? [postgres.binDir] : [] }), conn };
  const composeCommand =
    settings.compose.command === 'docker-compose' || (settings.compose.command === 'auto' && findExecutable('docker-compose')) ? ['docker-compose'] : ['docker', 'compose'];
  return {
    runner: new ComposeRunner({ composeCommand, files: settings.compose.files, projectName: settings.compose.projectName, service: postgres.service }),
    conn,
  };
}
