import { refusal } from '../errors';
import type { Logger } from '../logger';
import { withDatabase, type PgConnection } from '../runner/postgres-env';
import { queryOnce } from '../runner/psql';
import type { Runner } from '../runner/runner';

const LOOPBACK = new Set(['localhost', '127.0.0.1', '::1', '0:0:0:0:0:0:0:1', '']);

/** Loopback names (and Unix sockets, which are local by definition) are one host. */
export function normalizeHost(host: string): string {
  const h = host.trim().toLowerCase().replace(/^\[|\]$/g, '');
  if (LOOPBACK.has(h) || h.startsWith('/') || /^127\.\d+\.\d+\.\d+$/.test(h)) return 'loopback';
  return h;
}

/** The cluster's system identifier, or undefined when it cannot be read (unreachable, no privilege). */
export async function systemIdentifier(runner: Runner, conn: PgConnection): Promise<string | undefined> {
  for (const database of [conn.database, 'postgres']) {
    try {
      const [row] = await queryOnce<{ id: string }>(runner, withDatabase(conn, database), 'SELECT system_identifier::text AS id FROM pg_control_system()');
      if (row?.id) return row.id;
    } catch {
      // try the next database; an unreachable server simply cannot be compared
    }
  }
  return undefined;
}

/**
 * Refuses (exit 3) a drill target that is the environment's live database: the same host (all
 * loopback spellings are one), port and database name, or the same database name on a cluster
 * with the same system identifier (another address of the same server).
 */
export async function assertIsolatedTarget(live: PgConnection | undefined, target: PgConnection, runner: Runner, logger: Logger): Promise<void> {
  if (!live) {
    logger.warn('no live database URL is configured, so the drill target cannot be compared with it');
    return;
  }
  const fix = 'point --target (or drill.targetUrlEnv) at a separate drill database, e.g. a service container, or omit it to let Lifeline start a throwaway cluster';
  const sameEndpoint = normalizeHost(live.host) === normalizeHost(target.host) && live.port === target.port;
  if (sameEndpoint && live.database === target.database) {
    throw refusal('DRILL_TARGET_IS_LIVE', `the drill target ${target.host}:${target.port}/${target.database} is the environment's live database`, fix);
  }
  const [liveId, targetId] = await Promise.all([systemIdentifier(runner, live), systemIdentifier(runner, target)]);
  const sameCluster = sameEndpoint || (liveId !== undefined && liveId === targetId);
  if (sameCluster && live.database === target.database) {
    throw refusal('DRILL_TARGET_IS_LIVE', `the drill target ${target.host}:${target.port}/${target.database} is the live database under another address (same system identifier ${liveId})`, fix);
  }
  if (sameCluster) logger.warn(`the drill database ${target.database} lives on the live cluster: the restore competes with production for CPU and disk`);
}
