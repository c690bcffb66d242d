import { environmentConnection } from '../postgres/connection';
import { postgresRunner } from '../runner/factory';
import type { Runner } from '../runner/runner';
import type { PgConnection } from '../runner/postgres-env';
import type { EnvironmentSettings } from '../settings/resolve';

export interface TenantDatabase {
  runner: Runner;
  conn: PgConnection;
}

/** Where tenant queries run: the same connection and client tools as backups (locally or in the Compose service). */
export async function tenantDatabase(settings: EnvironmentSettings): Promise<TenantDatabase> {
  return { runner: await postgresRunner(settings), conn: environmentConnection(settings) };
}
