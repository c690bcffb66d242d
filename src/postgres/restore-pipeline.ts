import type { Logger } from '../logger';
import { quoteLiteral, type PgConnection } from '../runner/postgres-env';
import { PsqlSession } from '../runner/psql';
import { runText, type Runner } from '../runner/runner';
import { BtreeIndexChecker, type IndexCheckOutcome } from './amcheck';
import { exactRowCounts } from './inspect';

/**
 * Checks that run while a parallel pg_restore is still working. pg_restore --verbose reports each
 * item it finishes; a table is counted as soon as its TABLE DATA item is done (nothing in a
 * restore changes its rows afterwards), and, when asked, amcheck looks at each index as soon as it
 * is built. The tables and indexes it could not take early are checked by `finish()`, so the
 * result is the same as checking after the restore, only most of the work is off the clock.
 *
 * Every statement touches one table, in autocommit: a check can make a restore worker wait for
 * it (an ALTER TABLE ... ADD PRIMARY KEY waits for a count of that table), but cannot deadlock
 * with one, because it never holds one table's lock while waiting for another.
 */
export class EarlyRestoreChecks {
  /** TABLE DATA dump ids → the rest of their `pg_restore --list` line ("schema table owner"). */
  private readonly dataItems: Map<number, string>;
  private readonly counts: Record<string, number> = {};
  private countSession: PsqlSession | undefined;
  private indexSession: PsqlSession | undefined;
  private indexChecker: BtreeIndexChecker | undefined;
  private countQueue: Promise<void> = Promise.resolve();
  private indexQueue: Promise<void> = Promise.resolve();
  private indexSweepQueued = false;
  /** Set when an early check failed: everything left is then checked after the restore instead. */
  private countsBroken = false;
  private indexesBroken = false;
  private earlyCounted = 0;
  private earlyIndexSweeps = 0;

  private constructor(
    private readonly runner: Runner,
    private readonly conn: PgConnection,
    listing: string,
    private readonly options: { indexCheck: boolean; logger: Logger },
  ) {
    this.dataItems = parseDataItems(listing);
  }

  /** Reads the archive's table of contents (`pg_restore --list`, a few milliseconds) to map dump ids to tables. */
  static async prepare(runner: Runner, conn: PgConnection, archive: string, options: { indexCheck: boolean; logger: Logger }): Promise<EarlyRestoreChecks | undefined> {
    const listing = await runText(runner, { tool: 'pg_restore', args: ['--list', archive] }).catch(() => undefined);
    if (!listing || listing.exitCode !== 0) return undefined;
    return new EarlyRestoreChecks(runner, conn, listing.stdout, options);
  }

  /** Feed every stderr line of `pg_restore --verbose` here. */
  onLine(line: string): void {
    // The workers share stderr and write "pg_restore: " and the message separately, so under load
    // one line can hold another's prefix, or two messages: look for every report anywhere in it.
    for (const item of finishedItems(line)) this.onFinished(item.id, item.kind);
  }

  private onFinished(id: number, kind: string): void {
    if (kind === 'TABLE DATA') {
      const rest = this.dataItems.get(id);
      if (rest !== undefined && !this.countsBroken) this.countQueue = this.countQueue.then(() => this.countEarly(rest));
    } else if (this.options.indexCheck && !this.indexesBroken && !this.indexSweepQueued) {
      // Indexes finish in bursts: one queued sweep picks up everything built by the time it runs.
      this.indexSweepQueued = true;
      this.indexQueue = this.indexQueue.then(() => this.sweepEarly());
    }
  }

  private async countEarly(rest: string): Promise<void> {
    if (this.countsBroken) return;
    try {
      this.countSession ??= PsqlSession.open(this.runner, this.conn);
      // The server resolves "schema table owner" to the table (names may hold spaces) and quotes it.
      const names = await this.countSession.query<{ name: string }>(
        `SELECT format('%I.%I', n.nspname, c.relname) AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE c.relkind = 'r' AND starts_with(${quoteLiteral(`${rest} `)}, n.nspname || ' ' || c.relname || ' ')`,
      );
      if (names.length !== 1) {
        this.options.logger.debug(`could not tell which table "${rest}" is (${names.length} candidates): it is counted after the restore`);
        return;
      }
      const name = names[0]!.name;
      const n = await this.countSession.queryValue<number | string>(`SELECT count(*)::bigint AS n FROM ${name}`);
      this.counts[name] = Number(n);
      this.earlyCounted++;
    } catch (error) {
      this.countsBroken = true;
      this.options.logger.warn(`counting tables during the restore stopped (${(error as Error).message}); the rest is counted after it`);
    }
  }

  private async sweepEarly(): Promise<void> {
    this.indexSweepQueued = false;
    if (this.indexesBroken) return;
    try {
      this.indexSession ??= PsqlSession.open(this.runner, this.conn);
      this.indexChecker ??= new BtreeIndexChecker(this.indexSession);
      await this.indexChecker.sweep({ alone: false });
      this.earlyIndexSweeps++;
    } catch (error) {
      this.indexesBroken = true;
      this.options.logger.warn(`checking indexes during the restore stopped (${(error as Error).message}); the rest is checked after it`);
    }
  }

  /**
   * Once pg_restore has exited 0: counts every table not counted yet (all of them when the early
   * counts stopped) and, when asked, runs amcheck on every index not checked yet, each on its own
   * session, while the caller runs ANALYZE and the schema fingerprint on theirs.
   */
  async finish(): Promise<{ counts: Record<string, number>; indexes?: IndexCheckOutcome; earlyCounted: number }> {
    await Promise.all([this.countQueue, this.indexQueue]);
    const countsDone = (async () => {
      const session = !this.countsBroken && this.countSession ? this.countSession : PsqlSession.open(this.runner, this.conn);
      if (session !== this.countSession) await this.countSession?.close();
      this.countSession = session;
      // Counts that were taken are right even when a later one failed.
      return exactRowCounts(session, { known: this.counts });
    })();
    const indexesDone = (async () => {
      if (!this.options.indexCheck) return undefined;
      if (this.indexesBroken || !this.indexSession) {
        await this.indexSession?.close();
        this.indexSession = PsqlSession.open(this.runner, this.conn);
        this.indexChecker = new BtreeIndexChecker(this.indexSession);
      }
      await this.indexChecker!.sweep({ alone: true });
      return this.indexChecker!.outcome();
    })();
    try {
      const [counts, indexes] = await Promise.all([countsDone, indexesDone]);
      this.options.logger.debug(`checks during the restore: ${this.earlyCounted} tables counted, ${this.earlyIndexSweeps} index sweeps`);
      return { counts, indexes, earlyCounted: this.earlyCounted };
    } finally {
      await this.close();
    }
  }

  async close(): Promise<void> {
    await Promise.allSettled([this.countQueue, this.indexQueue]);
    await Promise.all([this.countSession?.close(), this.indexSession?.close()]);
    this.countSession = undefined;
    this.indexSession = undefined;
  }
}

/** The items a `pg_restore --verbose` stderr line reports finished (TABLE DATA, INDEX, CONSTRAINT), wherever they sit in it. */
export function finishedItems(line: string): { id: number; kind: 'TABLE DATA' | 'INDEX' | 'CONSTRAINT' }[] {
  return [...line.matchAll(/finished item (\d+) (TABLE DATA|INDEX|CONSTRAINT) /g)].map((m) => ({ id: Number(m[1]), kind: m[2] as 'TABLE DATA' | 'INDEX' | 'CONSTRAINT' }));
}

/** `3389; 0 16390 TABLE DATA public orders postgres` → 3389 → "public orders postgres". */
export function parseDataItems(listing: string): Map<number, string> {
  const items = new Map<number, string>();
  for (const line of listing.split('\n')) {
    const match = /^(\d+); \d+ \d+ TABLE DATA (.+)$/.exec(line);
    if (match) items.set(Number(match[1]), match[2]!.trimEnd());
  }
  return items;
}

/**
 * pg_restore --verbose progress lines, which are not errors; everything else it prints is kept for
 * messages. A line counts as progress only when it names no error, warning, detail or hint
 * anywhere: interleaved worker output can put an error after another worker's prefix.
 */
export function isRestoreProgressLine(line: string): boolean {
  return line.startsWith('pg_restore: ') && !/(error|warning|detail|hint):/i.test(line);
}

/**
 * How many objects a `pg_restore --verbose` stderr line says were started: one `creating ...`,
 * `processing data for table ...` or `executing ...` per table-of-contents entry, in serial and
 * parallel restores alike (interleaved workers can put two on one line).
 */
export function restoredObjects(line: string): number {
  return [...line.matchAll(/pg_restore: (?:creating |processing data for table |executing )/g)].length;
}

/** The number of entries in an archive's table of contents (what --verbose reports one by one); undefined when it cannot be read. */
export async function tocEntryCount(runner: Runner, archive: string): Promise<number | undefined> {
  const listing = await runText(runner, { tool: 'pg_restore', args: ['--list', archive] }).catch(() => undefined);
  if (!listing || listing.exitCode !== 0) return undefined;
  const count = listing.stdout.split('\n').filter((l) => /^\d+;/.test(l)).length;
  return count > 0 ? count : undefined;
}
