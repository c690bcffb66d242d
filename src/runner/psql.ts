import { PassThrough } from 'node:stream';
import { createInterface } from 'node:readline';
import { failure } from '../errors';
import { lastLines, type Runner, type RunningTool } from './runner';
import { pgEnv, type PgConnection } from './postgres-env';

/**
 * One long-lived psql session driven over stdin/stdout. It works the same with local binaries
 * and inside a Compose service, and keeps one transaction open across queries (for
 * `pg_export_snapshot()`, which lives only as long as its transaction).
 */
export class PsqlSession {
  private readonly lines: string[] = [];
  private waiter: (() => void) | undefined;
  private closed = false;
  private exitError: Error | undefined;
  private counter = 0;
  private constructor(
    private readonly running: RunningTool,
    private readonly input: PassThrough,
    conn: PgConnection,
  ) {
    const rl = createInterface({ input: running.stdout });
    rl.on('line', (line) => {
      this.lines.push(line);
      this.waiter?.();
    });
    running.done
      .then((result) => {
        this.closed = true;
        if (result.exitCode !== 0) {
          this.exitError = failure('PSQL_FAILED', `query against ${conn.host}:${conn.port}/${conn.database} failed: ${lastLines(result.stderr, 3)}`, { details: { exitCode: result.exitCode } });
        }
        this.waiter?.();
      })
      .catch((error: Error) => {
        this.closed = true;
        this.exitError = error;
        this.waiter?.();
      });
  }

  static open(runner: Runner, conn: PgConnection, options: { database?: string } = {}): PsqlSession {
    const input = new PassThrough();
    const running = runner.start({
      tool: 'psql',
      args: ['-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-P', 'pager=off', '-P', 'footer=off'],
      env: pgEnv(conn, options.database),
      stdin: input,
    });
    return new PsqlSession(running, input, conn);
  }

  /** Runs statements that return nothing of interest. */
  async exec(sql: string): Promise<void> {
    await this.roundTrip(`${sql.trim().replace(/;+$/, '')};`);
  }

  /** Runs a query and returns its rows as objects (through json_agg, so types survive). */
  async query<T = Record<string, unknown>>(sql: string): Promise<T[]> {
    const wrapped = `SELECT coalesce(json_agg(q), '[]'::json) FROM (${sql.trim().replace(/;+$/, '')}) q;`;
    const out = await this.roundTrip(wrapped);
    try {
      return JSON.parse(out.join('\n')) as T[];
    } catch (error) {
      throw failure('PSQL_OUTPUT', `could not read the result of a query (${(error as Error).message})`, { cause: error });
    }
  }

  async queryValue<T = unknown>(sql: string): Promise<T | undefined> {
    const rows = await this.query<Record<string, T>>(sql);
    const first = rows[0];
    return first ? Object.values(first)[0] : undefined;
  }

  private async roundTrip(sql: string): Promise<string[]> {
    if (this.closed) throw this.exitError ?? failure('PSQL_CLOSED', 'the psql session has ended');
    const marker = `__lifeline_done_${process.pid}_${++this.counter}__`;
    const collected: string[] = [];
    this.input.write(`${sql}\n\\echo ${marker}\n`);
    for (;;) {
      while (this.lines.length) {
        const line = this.lines.shift()!;
        if (line === marker) return collected;
        collected.push(line);
      }
      if (this.closed) throw this.exitError ?? failure('PSQL_CLOSED', 'psql ended before answering');
      await new Promise<void>((resolve) => {
        this.waiter = resolve;
      });
      this.waiter = undefined;
    }
  }

  async close(): Promise<void> {
    if (!this.closed) {
      this.input.end('\\q\n');
    }
    await this.running.done.catch(() => {});
  }
}

/** Runs one query in a fresh session. */
export async function queryOnce<T = Record<string, unknown>>(runner: Runner, conn: PgConnection, sql: string, database?: string): Promise<T[]> {
  const session = PsqlSession.open(runner, conn, { database });
  try {
    return await session.query<T>(sql);
  } finally {
    await session.close();
  }
}

/** Runs statements in a fresh session: psql ends a session at its first error (ON_ERROR_STOP), so a retry needs a new one. */
export async function execOnce(runner: Runner, conn: PgConnection, sql: string): Promise<void> {
  const session = PsqlSession.open(runner, conn);
  try {
    await session.exec(sql);
  } finally {
    await session.close();
  }
}
