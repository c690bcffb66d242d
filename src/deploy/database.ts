import { PsqlSession } from '../runner/psql';
import { parsePgUrl } from '../runner/postgres-env';
import type { Runner } from '../runner/runner';
import { redactUrl } from '../settings/secrets';
import type { DatabaseProbe } from './deploy';

/** Reads the migration head with the configured query (e.g. Alembic's `SELECT version_num FROM alembic_version`). */
export function migrationHeadProbe(runner: Runner, options: { url: string; migrationHeadQuery: string; database?: string }): DatabaseProbe {
  const conn = parsePgUrl(options.url);
  return {
    maskedUrl: redactUrl(options.url),
    name: options.database ?? conn.database,
    async migrationHead() {
      const session = PsqlSession.open(runner, conn, { database: options.database });
      try {
        const value = await session.queryValue<unknown>(options.migrationHeadQuery);
        return value === undefined || value === null ? null : String(value);
      } finally {
        await session.close();
      }
    },
  };
}
