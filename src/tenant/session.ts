import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { failure } from '../errors';
import { pgEnv, quoteLiteral, type PgConnection } from '../runner/postgres-env';
import { PsqlSession } from '../runner/psql';
import type { Runner, RunningTool } from '../runner/runner';
import { collectionCopyStatement, tenantRowsSource, type ResolvedCollection } from './collections';
import type { ExportFormat } from './rows';

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

/** Names the canonical row encoding in export manifests; change it whenever the settings below change. */
export const ROW_ENCODING = 'lifeline-tenant-rows/1';
const ROW_ENCODING_SETTINGS = "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, MDY'; SET IntervalStyle = 'postgres'; SET extra_float_digits = 1; SET bytea_output = 'hex'; SET lc_monetary = 'C';";

/**
 * Starts a psql process that joins the exported snapshot and runs one statement; its output
 * (COPY data or an unaligned, tuples-only result) is the process's stdout.
 */
export function startInSnapshot(runner: Runner, conn: PgConnection, snapshotId: string, statement: string): RunningTool {
  const script = [
    'SET standard_conforming_strings = on;',
    "SET client_encoding = 'UTF8';",
    // The canonical row encoding: exports and deletion plans compare content byte for byte, so
    // every setting that changes how a value is printed is pinned, never left to the client.
    ROW_ENCODING_SETTINGS,
    'BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;',
    `SET TRANSACTION SNAPSHOT ${quoteLiteral(snapshotId)};`,
    `${statement};`,
    'COMMIT;',
    '',
  ].join('\n');
  return runner.start({
    tool: 'psql',
    args: ['-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-P', 'pager=off'],
    env: pgEnv(conn),
    stdin: Readable.from([script]),
  });
}

/** Exact count of the tenant's rows in one collection, from its own psql joining the snapshot (so counts can run side by side). */
export async function countInSnapshot(runner: Runner, conn: PgConnection, snapshotId: string, collection: ResolvedCollection, tenant: string): Promise<number> {
  const statement = `SELECT count(*) ${tenantRowsSource(collection, quoteLiteral(tenant))}`;
  const running = startInSnapshot(runner, conn, snapshotId, statement);
  let out = '';
  running.stdout.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
  const result = await running.done;
  if (result.exitCode !== 0 || !/^\d+$/.test(out.trim())) {
    throw failure('COUNT_FAILED', `counting the rows of ${collection.name} failed: ${result.stderr.trim() || JSON.stringify(out.slice(0, 200))}`);
  }
  return Number(out.trim());
}

/**
 * sha256 of a collection's rows in the canonical encoding of `format`, from its own psql joining
 * the snapshot: the bytes an export of this snapshot would write, hashed as they stream.
 */
export async function digestInSnapshot(runner: Runner, conn: PgConnection, snapshotId: string, collection: ResolvedCollection, tenant: string, format: ExportFormat): Promise<string> {
  const running = startInSnapshot(runner, conn, snapshotId, collectionCopyStatement(collection, quoteLiteral(tenant), format));
  const hash = createHash('sha256');
  running.stdout.on('data', (chunk: Buffer) => hash.update(chunk));
  const result = await running.done;
  if (result.exitCode !== 0) throw failure('DIGEST_FAILED', `reading the rows of ${collection.name} failed: ${result.stderr.trim().split('\n').slice(-2).join(' ')}`);
  return hash.digest('hex');
}

/** Runs `task` over `items` with at most `limit` at a time; the first failure stops the others. */
export async function inParallel<T, R>(items: readonly T[], limit: number, task: (item: T, signal: AbortSignal) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array<R>(items.length);
  const controller = new AbortController();
  let next = 0;
  let firstError: { error: unknown } | undefined;
  const worker = async () => {
    while (!firstError && next < items.length) {
      const index = next++;
      try {
        results[index] = await task(items[index]!, controller.signal);
      } catch (error) {
        firstError ??= { error };
        controller.abort();
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  if (firstError) throw firstError.error;
  return results;
}
