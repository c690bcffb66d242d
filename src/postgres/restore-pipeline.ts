import type { Logger } from '../logger';
import { quoteLiteral, type PgConnection } from '../runner/postgres-env';
import { PsqlSession } from '../runner/psql';
import { runText, type Runner } from '../runner/runner';
import { BtreeIndexChecker, type IndexCheckOutcome } from './amcheck';
import { exactRowCounts } from './inspect';

/**
 * Checks that run while a parallel pg_restore is still working. pg_restore --verbose reports each
 * item it finishes; a table is counted once its TABLE DATA item is done (nothing in a restore
 * changes its rows afterwards) and the constraints that lock it exclusively (a primary key, a
 * unique or check constraint, a rule, a policy) are built: a count then never holds up the build
 * of a primary key, which on the largest table is the restore's critical path. When asked, amcheck
 * looks at each index as soon as it is built. What could not be taken early is checked by
 * `finish()`, so the result is the same as checking after the restore, only most of the work is
 * off the clock.
 *
 * Every statement touches one table, in autocommit: a check can make a restore worker wait for
 * it (an item the gate does not know), but cannot deadlock with one, because it never holds one
 * table's lock while waiting for another.
 */
export class EarlyRestoreChecks {
  /** The archive's tables with data whose count is not queued yet, by their TABLE DATA dump id. */
  private readonly tables: Map<number, TableGates>;
  /** Every dump id pg_restore reported finished. */
  private readonly finished = new Set<number>();
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
    private readonly options: EarlyCheckOptions,
  ) {
    this.tables = tableGates(parseTocItems(listing));
  }

  /** Reads the archive's table of contents with its dependencies (`pg_restore --list --verbose`, a few milliseconds) to map dump ids to tables. */
  static async prepare(runner: Runner, conn: PgConnection, archive: string, options: EarlyCheckOptions): Promise<EarlyRestoreChecks | undefined> {
    const listing = await runText(runner, { tool: 'pg_restore', args: ['--list', '--verbose', archive] }).catch(() => undefined);
    if (!listing || listing.exitCode !== 0) return undefined;
    return new EarlyRestoreChecks(runner, conn, listing.stdout, options);
  }

  /** Feed every stderr line of `pg_restore --verbose` here. */
  onLine(line: string): void {
    // The workers share stderr and write "pg_restore: " and the message separately, so under load
    // one line can hold another's prefix, or two messages: look for every report anywhere in it.
    const ids = finishedIds(line);
    if (!ids.length) return;
    for (const id of ids) this.finished.add(id);
    for (const item of finishedItems(line)) {
      if (item.kind !== 'TABLE DATA' && this.options.indexCheck && !this.indexesBroken && !this.indexSweepQueued) {
        // Indexes finish in bursts: one queued sweep picks up everything built by the time it runs.
        this.indexSweepQueued = true;
        this.indexQueue = this.indexQueue.then(() => this.sweepEarly());
      }
    }
    this.openGates();
  }

  /** Queues the count of every table whose gate just opened, in the order they open (each table once). */
  private openGates(): void {
    for (const [dataId, table] of this.tables) {
      if (!this.finished.has(dataId) || ![...table.countAfter].every((id) => this.finished.has(id))) continue;
      this.tables.delete(dataId);
      this.countQueue = this.countQueue.then(() => this.countEarly(table));
    }
  }

  private async countEarly(table: TableGates): Promise<void> {
    if (this.countsBroken) return;
    try {
      this.countSession ??= PsqlSession.open(this.runner, this.conn);
      // The server resolves "schema table owner" to the table (names may hold spaces) and quotes it.
      const names = await this.countSession.query<{ name: string }>(
        `SELECT format('%I.%I', n.nspname, c.relname) AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE c.relkind = 'r' AND starts_with(${quoteLiteral(`${table.rest} `)}, n.nspname || ' ' || c.relname || ' ')`,
      );
      if (names.length !== 1) {
        this.options.logger.debug(`could not tell which table "${table.rest}" is (${names.length} candidates): it is counted after the restore`);
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

export interface EarlyCheckOptions {
  indexCheck: boolean;
  logger: Logger;
}

/** The items a `pg_restore --verbose` stderr line reports finished (TABLE DATA, INDEX, CONSTRAINT), wherever they sit in it. */
export function finishedItems(line: string): { id: number; kind: 'TABLE DATA' | 'INDEX' | 'CONSTRAINT' }[] {
  return [...line.matchAll(/finished item (\d+) (TABLE DATA|INDEX|CONSTRAINT) /g)].map((m) => ({ id: Number(m[1]), kind: m[2] as 'TABLE DATA' | 'INDEX' | 'CONSTRAINT' }));
}

/** Every dump id a `pg_restore --verbose` stderr line reports finished, of any kind. */
export function finishedIds(line: string): number[] {
  return [...line.matchAll(/finished item (\d+) /g)].map((m) => Number(m[1]));
}

export interface TocItem {
  id: number;
  /** The entry's kind: TABLE DATA, CONSTRAINT, FK CONSTRAINT, INDEX, ... */
  desc: string;
  /** What follows the kind on its line ("schema name owner" for a table's data). */
  rest: string;
  /** The dump ids it depends on (`pg_restore --list --verbose`'s "depends on" line). */
  deps: number[];
}

/** The kinds whose name has more than one word, longest first, so the right one matches a line. */
const MULTI_WORD_KINDS = [
  'PUBLICATION TABLES IN SCHEMA',
  'MATERIALIZED VIEW DATA',
  'PUBLICATION TABLE',
  'CHECK CONSTRAINT',
  'DEFAULT ACL',
  'FK CONSTRAINT',
  'EVENT TRIGGER',
  'INDEX ATTACH',
  'ROW SECURITY',
  'SEQUENCE SET',
  'SEQUENCE OWNED BY',
  'TABLE ATTACH',
  'TABLE DATA',
  'MATERIALIZED VIEW',
  'SECURITY LABEL',
];

/** `pg_restore --list --verbose` → its entries with their dependencies. */
export function parseTocItems(listing: string): Map<number, TocItem> {
  const items = new Map<number, TocItem>();
  let last: TocItem | undefined;
  for (const line of listing.split('\n')) {
    const entry = /^(\d+); \d+ \d+ (.+)$/.exec(line);
    if (entry) {
      const body = entry[2]!.trimEnd();
      const desc = MULTI_WORD_KINDS.find((k) => body.startsWith(`${k} `)) ?? body.split(' ')[0]!;
      last = { id: Number(entry[1]), desc, rest: body.slice(desc.length + 1), deps: [] };
      items.set(last.id, last);
      continue;
    }
    const deps = /^;\s+depends on:((?: \d+)+)\s*$/.exec(line);
    if (deps && last) last.deps.push(...deps[1]!.trim().split(/\s+/).map(Number));
    else if (!line.startsWith(';')) last = undefined;
  }
  return items;
}

/**
 * Post-data kinds that lock their table exclusively (ALTER TABLE ADD CONSTRAINT, CREATE RULE,
 * CREATE POLICY, ENABLE ROW LEVEL SECURITY): a count waits for them. The others (CREATE INDEX, a
 * foreign key, a trigger) take locks a count does not conflict with.
 */
const EXCLUSIVE_KINDS = new Set(['CONSTRAINT', 'CHECK CONSTRAINT', 'RULE', 'POLICY', 'ROW SECURITY']);

export interface TableGates {
  /** "schema table owner", as on the TABLE DATA line. */
  rest: string;
  /** Items to be finished before the table is counted. */
  countAfter: Set<number>;
}

/**
 * For each table with data (by its TABLE DATA id), what pg_restore must finish before it can be
 * counted without holding pg_restore up. An item the log never reports finished only keeps its
 * table for after the restore: a gate never makes a count wrong, only late.
 */
export function tableGates(items: Map<number, TocItem>): Map<number, TableGates> {
  const dependents = new Map<number, TocItem[]>();
  for (const item of items.values()) {
    for (const dep of item.deps) {
      const list = dependents.get(dep);
      if (list) list.push(item);
      else dependents.set(dep, [item]);
    }
  }
  const gates = new Map<number, TableGates>();
  for (const data of items.values()) {
    if (data.desc !== 'TABLE DATA') continue;
    // Post-data items name the table (its TABLE entry), or its data.
    const direct = [...data.deps, data.id].flatMap((id) => dependents.get(id) ?? []).filter((item) => item.id !== data.id);
    gates.set(data.id, { rest: data.rest, countAfter: new Set(direct.filter((item) => EXCLUSIVE_KINDS.has(item.desc)).map((item) => item.id)) });
  }
  return gates;
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
