import { failure } from '../errors';
import { quoteLiteral, type PgConnection } from '../runner/postgres-env';
import { PsqlSession } from '../runner/psql';
import type { Runner } from '../runner/runner';
import { tenantRowsSource, type ResolvedCollection } from './collections';

/**
 * A read-only repeatable-read transaction: every count and every COPY that joins its exported
 * snapshot sees the same data. Literals are written with standard_conforming_strings on, so a
 * tenant id's backslashes stay data.
 */
export async function openSnapshotSession(runner: Runner, conn: PgConnection): Promise<{ session: PsqlSession; snapshotId: string; snapshotAt: string }> {
  const session = PsqlSession.open(runner, conn);
  try {
    await session.exec("SET standard_conforming_strings = on; SET client_encoding = 'UTF8'");
    await session.exec('BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY');
    const [row] = await session.query<{ snapshot: string; at: string }>('SELECT pg_export_snapshot() AS snapshot, clock_timestamp() AS at');
    if (!row || !/^[0-9A-Fa-f-]+$/.test(row.snapshot)) throw failure('SNAPSHOT_FAILED', 'PostgreSQL did not export a snapshot');
    return { session, snapshotId: row.snapshot, snapshotAt: new Date(row.at).toISOString() };
  } catch (error) {
    await session.close();
    throw error;
  }
}

/** Exact row counts of the tenant's rows per collection, in the session's snapshot. */
export async function countTenantRows(session: PsqlSession, collections: readonly ResolvedCollection[], tenant: string): Promise<Map<string, number>> {
  const literal = quoteLiteral(tenant);
  const counts = new Map<string, number>();
  for (const collection of collections) {
    const n = await session.queryValue<number | string>(`SELECT count(*)::bigint AS n ${tenantRowsSource(collection, literal)}`);
    counts.set(collection.name, Number(n ?? 0));
  }
  return counts;
}
