import type { PsqlSession } from '../runner/psql';
import { smokeValueText, type SmokeQuery } from './smoke';

export interface CheckOutcome {
  name: string;
  passed: boolean;
  detail: string;
}

/**
 * `bt_index_check` on every valid B-tree index of the database (system catalogs included). Each
 * index is checked inside a function that catches its error, so one corrupt index is reported
 * by name and the others are still checked.
 */
export async function checkBtreeIndexes(session: PsqlSession): Promise<CheckOutcome> {
  try {
    await session.exec('CREATE EXTENSION IF NOT EXISTS amcheck');
  } catch (error) {
    return { name: 'amcheck on B-tree indexes', passed: false, detail: `cannot create the amcheck extension: ${(error as Error).message} (install postgresql-contrib; the drill user needs to be allowed to create it)` };
  }
  await session.exec(`CREATE OR REPLACE FUNCTION pg_temp.lifeline_index_error(idx regclass) RETURNS text LANGUAGE plpgsql AS $fn$
BEGIN
  PERFORM bt_index_check(idx);
  RETURN NULL;
EXCEPTION WHEN OTHERS THEN
  RETURN SQLERRM;
END
$fn$`);
  const rows = await session.query<{ index: string; error: string | null }>(`SELECT c.oid::regclass::text AS index, pg_temp.lifeline_index_error(c.oid::regclass) AS error
FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid
JOIN pg_am a ON a.oid = c.relam
WHERE a.amname = 'btree' AND i.indisvalid AND i.indisready AND c.relpersistence <> 't'
ORDER BY 1`);
  const broken = rows.filter((r) => r.error !== null);
  return {
    name: 'amcheck on B-tree indexes',
    passed: broken.length === 0,
    detail: broken.length ? `${broken.length} of ${rows.length} indexes fail: ${broken.slice(0, 3).map((b) => `${b.index} (${b.error})`).join('; ')}` : `${rows.length} indexes intact`,
  };
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
