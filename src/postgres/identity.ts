import { withDatabase, type PgConnection } from '../runner/postgres-env';
import { queryOnce } from '../runner/psql';
import type { Runner } from '../runner/runner';

const LOOPBACK = new Set(['localhost', '127.0.0.1', '::1', '0:0:0:0:0:0:0:1', '']);

/** Loopback names (and Unix sockets, which are local by definition) are one host. */
export function normalizeHost(host: string): string {
  const h = host
    .trim()
    .toLowerCase()
    .replace(/^\[|\]$/g, '');
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

export interface SameDatabaseAnswer {
  /** Both name the same database of the same cluster. */
  same: boolean;
  /** Both are on the same cluster (same endpoint, or same system identifier). */
  sameCluster: boolean;
  /** How it was decided, for messages. */
  reason: 'endpoint' | 'system identifier' | 'different';
  systemIdentifier?: string;
}

/**
 * "Is `b` the database `a` names?": the same host (every loopback spelling is one), port and
 * database name, or the same database name on a cluster with the same system identifier (another
 * address of the same server). The one answer for the drill's isolation check and the restore's
 * post-restore hooks.
 */
export async function sameDatabase(a: PgConnection, b: PgConnection, runner: Runner): Promise<SameDatabaseAnswer> {
  const sameEndpoint = normalizeHost(a.host) === normalizeHost(b.host) && a.port === b.port;
  if (sameEndpoint) return { same: a.database === b.database, sameCluster: true, reason: 'endpoint' };
  const [idA, idB] = await Promise.all([systemIdentifier(runner, a), systemIdentifier(runner, b)]);
  const sameCluster = idA !== undefined && idA === idB;
  return { same: sameCluster && a.database === b.database, sameCluster, reason: sameCluster ? 'system identifier' : 'different', ...(sameCluster ? { systemIdentifier: idA } : {}) };
}
