import { checkAllBtreeIndexes } from '../postgres/amcheck';
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
