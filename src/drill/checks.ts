import type { RestoreCheckReport } from '../backup/restore';
import { checkAllBtreeIndexes, type IndexCheckOutcome } from '../postgres/amcheck';
import { migrationHead } from '../postgres/inspect';
import type { PsqlSession } from '../runner/psql';
import { smokeValueText, type SmokeQuery } from './smoke';

export interface CheckOutcome {
  name: string;
  passed: boolean;
  detail: string;
}

/** `bt_index_check` on every valid B-tree index of the database (system catalogs included), over two sessions. */
export async function checkBtreeIndexes(open: () => PsqlSession): Promise<CheckOutcome> {
  const { name, passed, detail } = await checkAllBtreeIndexes(open, 2);
  return { name, passed, detail };
}

/** The index check: the one pg_restore's run already did as it built each index, else amcheck now. */
export async function checkIndexes(open: () => PsqlSession, done: IndexCheckOutcome | undefined): Promise<CheckOutcome[]> {
  if (done) return [{ name: done.name, passed: done.passed, detail: `${done.detail} (checked as pg_restore built them)` }];
  return [await checkBtreeIndexes(open)];
}

/** Runs each smoke query in its own session (a failing query must not hide the others). */
export async function runSmokeQuery(open: () => PsqlSession, query: SmokeQuery): Promise<CheckOutcome> {
  const session = open();
  try {
    const value = await session.queryValue(query.sql);
    const actual = smokeValueText(value);
    const passed = actual === query.expect;
    return { name: `smoke: ${query.name}`, passed, detail: passed ? `returned ${actual}` : `returned ${actual}, expected ${query.expect}` };
  } catch (error) {
    return { name: `smoke: ${query.name}`, passed: false, detail: `query failed: ${(error as Error).message}` };
  } finally {
    await session.close();
  }
}

/** Every smoke query, one after another. */
export async function runSmokeQueries(open: () => PsqlSession, queries: readonly SmokeQuery[]): Promise<CheckOutcome[]> {
  const outcomes: CheckOutcome[] = [];
  for (const query of queries) outcomes.push(await runSmokeQuery(open, query));
  return outcomes;
}

/**
 * The restored data against what the backup recorded: row counts and schema fingerprint (from the
 * restore's own checks) and the migration head read from the restored database.
 */
export async function checkRestoredData(open: () => PsqlSession, restore: RestoreCheckReport, migrationHeadQuery: string | undefined, expectedHead: string | null): Promise<CheckOutcome[]> {
  const session = open();
  let head: string | null;
  try {
    head = await migrationHead(session, migrationHeadQuery);
  } finally {
    await session.close();
  }
  const { rowCounts, schemaFingerprint } = restore;
  return [
    {
      name: 'row counts match backup.json',
      passed: rowCounts.ok,
      detail: rowCounts.ok
        ? `${rowCounts.tables} tables, ${rowCounts.rows} rows`
        : rowCounts.mismatches
            .slice(0, 5)
            .map((m) => `${m.table}: ${m.actual ?? 'missing'} rows, expected ${m.expected ?? 'none'}`)
            .join('; '),
    },
    {
      name: 'schema fingerprint matches',
      passed: schemaFingerprint.ok,
      detail: schemaFingerprint.ok ? schemaFingerprint.actual : `${schemaFingerprint.actual}, expected ${schemaFingerprint.expected}`,
    },
    {
      name: 'migration head matches',
      passed: head === expectedHead,
      detail: head === expectedHead ? (head ?? 'none (no migrations table)') : `${head ?? 'none'}, expected ${expectedHead ?? 'none'}`,
    },
  ];
}
