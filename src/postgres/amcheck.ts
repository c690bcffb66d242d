import type { PsqlSession } from '../runner/psql';
import { inSessions, spreadBySize } from './inspect';

export interface IndexCheckOutcome {
  name: string;
  passed: boolean;
  detail: string;
  checked: number;
  broken: { index: string; error: string }[];
}

export const INDEX_CHECK_NAME = 'amcheck on B-tree indexes';

/** Every B-tree index amcheck can look at: valid, ready, not temporary (system catalogs included). */
const BTREE_INDEXES = `FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid
JOIN pg_am a ON a.oid = c.relam
WHERE a.amname = 'btree' AND i.indisvalid AND i.indisready AND c.relpersistence <> 't'`;

/**
 * `bt_index_check` on B-tree indexes, incrementally: each `sweep()` checks every valid, ready
 * B-tree index of the database (system catalogs included) that no earlier sweep checked, so a
 * restore can check indexes as pg_restore finishes them. One index per statement: the session
 * never holds more than one table's lock, so it can delay a restore worker but never deadlock
 * with one. An index that fails is reported by name with its error; the others are still checked.
 */
export class BtreeIndexChecker {
  private readonly checked = new Set<string>();
  private readonly broken: { index: string; error: string }[] = [];
  private setupError: string | undefined;
  private setupDone: Promise<void> | undefined;

  constructor(private readonly session: PsqlSession) {}

  private setup(): Promise<void> {
    this.setupDone ??= (async () => {
      try {
        await this.session.exec('CREATE EXTENSION IF NOT EXISTS amcheck');
      } catch (error) {
        this.setupError = `cannot create the amcheck extension: ${(error as Error).message} (install postgresql-contrib; the drill user needs to be allowed to create it)`;
        return;
      }
      await this.session.exec(`CREATE OR REPLACE FUNCTION pg_temp.lifeline_index_error(idx regclass) RETURNS text LANGUAGE plpgsql AS $fn$
BEGIN
  PERFORM bt_index_check(idx);
  RETURN NULL;
EXCEPTION WHEN OTHERS THEN
  RETURN SQLERRM;
END
$fn$`);
    })();
    return this.setupDone;
  }

  /**
   * Checks the indexes no earlier sweep checked. While a restore is still running, `alone: false`
   * checks one index per statement (see above); once nothing else uses the database, one statement
   * checks them all, which saves a round trip per index.
   */
  async sweep(options: { alone?: boolean } = {}): Promise<void> {
    await this.setup();
    if (this.setupError) return;
    const unchecked = this.checked.size ? ` AND c.oid <> ALL('{${[...this.checked].join(',')}}'::oid[])` : '';
    const from = `${BTREE_INDEXES}${unchecked}`;
    if (options.alone !== false) {
      const rows = await this.session.query<{ oid: string; index: string; error: string | null }>(
        `SELECT c.oid::text AS oid, c.oid::regclass::text AS index, pg_temp.lifeline_index_error(c.oid::regclass) AS error ${from} ORDER BY 2`,
      );
      for (const row of rows) this.record(row.oid, row.index, row.error);
      return;
    }
    const indexes = await this.session.query<{ oid: string; index: string }>(`SELECT c.oid::text AS oid, c.oid::regclass::text AS index ${from} ORDER BY 2`);
    for (const index of indexes) {
      const error = await this.session.queryValue<string | null>(`SELECT pg_temp.lifeline_index_error(${Number(index.oid)}::oid::regclass) AS error`);
      this.record(index.oid, index.index, error ?? null);
    }
  }

  /** Creates the extension and the helper function; returns why it could not, if it could not. */
  async prepare(): Promise<string | undefined> {
    await this.setup();
    return this.setupError;
  }

  /** Checks exactly these indexes, in one statement. */
  async checkOids(oids: string[]): Promise<void> {
    await this.setup();
    if (this.setupError || oids.length === 0) return;
    const rows = await this.session.query<{ oid: string; index: string; error: string | null }>(
      `SELECT o::text AS oid, o::regclass::text AS index, pg_temp.lifeline_index_error(o::regclass) AS error FROM unnest('{${oids.map(Number).join(',')}}'::oid[]) AS o`,
    );
    for (const row of rows) this.record(row.oid, row.index, row.error);
  }

  /** One outcome for several checkers that each checked a share of the indexes. */
  static combine(checkers: BtreeIndexChecker[]): IndexCheckOutcome {
    return summarize(
      checkers.reduce((n, c) => n + c.checked.size, 0),
      checkers.flatMap((c) => c.broken),
      checkers.find((c) => c.setupError)?.setupError,
    );
  }

  private record(oid: string, index: string, error: string | null): void {
    this.checked.add(oid);
    if (error !== null) this.broken.push({ index, error });
  }

  outcome(): IndexCheckOutcome {
    return summarize(this.checked.size, this.broken, this.setupError);
  }
}

function summarize(checked: number, found: { index: string; error: string }[], setupError: string | undefined): IndexCheckOutcome {
  if (setupError) return { name: INDEX_CHECK_NAME, passed: false, detail: setupError, checked: 0, broken: [] };
  const broken = [...found].sort((a, b) => a.index.localeCompare(b.index));
  return {
    name: INDEX_CHECK_NAME,
    passed: broken.length === 0,
    detail: broken.length
      ? `${broken.length} of ${checked} indexes fail: ${broken
          .slice(0, 3)
          .map((b) => `${b.index} (${b.error})`)
          .join('; ')}`
      : `${checked} indexes intact`,
    checked,
    broken,
  };
}

/**
 * amcheck on every valid B-tree index at once, spread over `parallel` sessions (largest indexes
 * first, each to the least loaded session), for a database nothing else is using: a point-in-time
 * copy after recovery, or a restore without early checks. Each session checks its share in one
 * statement.
 */
export async function checkAllBtreeIndexes(open: () => PsqlSession, parallel = 2): Promise<IndexCheckOutcome> {
  const first = open();
  try {
    const setupChecker = new BtreeIndexChecker(first);
    const setupFailure = await setupChecker.prepare();
    if (setupFailure) return summarize(0, [], setupFailure);
    const indexes = await first.query<{ oid: string; bytes: number | string }>(`SELECT c.oid::text AS oid, pg_relation_size(c.oid) AS bytes ${BTREE_INDEXES} ORDER BY 2 DESC, 1`);
    const groups = spreadBySize(indexes, parallel, (index) => Number(index.bytes));
    const checkers = await inSessions(first, open, groups, async (session, group) => {
      const checker = session === first ? setupChecker : new BtreeIndexChecker(session);
      await checker.checkOids(group.map((index) => index.oid));
      return checker;
    });
    return BtreeIndexChecker.combine(checkers);
  } finally {
    await first.close();
  }
}
