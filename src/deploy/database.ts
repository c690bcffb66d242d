import { PsqlSession } from '../runner/psql';
import { parsePgUrl } from '../runner/postgres-env';
import type { Runner } from '../runner/runner';
import { redactUrl } from '../settings/secrets';
import type { DatabaseProbe } from './deploy';

/**
 * Reads the migration head with the configured query (e.g. Alembic's `SELECT version_num FROM alembic_version`).
 * `runner` may be a function resolving it when the head is first read (with postgres.service: the
 * db container's id, so a deploy that never reads the head never asks Compose for it).
 */
export function migrationHeadProbe(runner: Runner | (() => Promise<Runner>), options: { url: string; migrationHeadQuery: string; database?: string }): DatabaseProbe {
  const conn = parsePgUrl(options.url);
  return {
    maskedUrl: redactUrl(options.url),
    name: options.database ?? conn.database,
    async migrationHead() {
      const session = PsqlSession.open(typeof runner === 'function' ? await runner() : runner, conn, { database: options.database });
      try {
        const value = await session.queryValue<unknown>(options.migrationHeadQuery);
        return value === undefined || value === null ? null : String(value);
      } finally {
        await session.close();
      }
    },
  };
}
