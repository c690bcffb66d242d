import { quoteIdent, withDatabase, type PgConnection } from '../runner/postgres-env';
import { queryOnce } from '../runner/psql';
import type { Runner } from '../runner/runner';
import { maskedUrl } from './connection';

/** A database a killed restore left behind: its scratch copy (`*_lifeline_restore_*`) or the replaced original (`*_lifeline_old_*`). */
export interface LeftoverDatabase {
  database: string;
  kind: 'scratch' | 'replaced';
  /** Sessions connected to it now: a running restore's scratch database has some. */
  sessions: number;
  /** How to remove it, once nothing is running. */
  remove: string;
}

/** The leftover databases of killed restores on the server `conn` points at. */
export async function leftoverDatabases(runner: Runner, conn: PgConnection): Promise<LeftoverDatabase[]> {
  const maintenance = withDatabase(conn, conn.database === 'postgres' ? 'template1' : 'postgres');
  const rows = await queryOnce<{ datname: string; sessions: number }>(
    runner,
    { ...maintenance, timeouts: { statementSeconds: 30 } },
    `SELECT d.datname, (SELECT count(*)::int FROM pg_stat_activity a WHERE a.datid = d.oid) AS sessions
       FROM pg_database d WHERE d.datname ~ '_lifeline_(restore|old)_[0-9a-f]{6}$' ORDER BY 1`,
  );
  return rows.map((r) => ({
    database: r.datname,
    kind: /_lifeline_old_[0-9a-f]{6}$/.test(r.datname) ? 'replaced' : 'scratch',
    sessions: Number(r.sessions),
    remove: `psql '${maskedUrl(maintenance)}' -c ${shellQuote(`DROP DATABASE ${quoteIdent(r.datname)} WITH (FORCE)`)}`,
  }));
}

function shellQuote(text: string): string {
  return `'${text.replace(/'/g, `'\\''`)}'`;
}
