import { failure } from '../errors';
import type { PgConnection } from '../runner/postgres-env';
import { PsqlSession } from '../runner/psql';
import type { Runner } from '../runner/runner';
import { describeHeldLocks, isLockTimeout, readBlockingLocks, type HeldLock } from './inspect';

/** How long backups and restores wait for a table lock by default (postgres.lockTimeout, --lock-timeout). */
export const DEFAULT_LOCK_TIMEOUT_SECONDS = 60;

/** `conn` with lock_timeout (and, when given, statement_timeout) on every session Lifeline opens. */
export function withLockTimeout(conn: PgConnection, lockSeconds: number, statementSeconds?: number): PgConnection {
  return { ...conn, timeouts: { lockSeconds, ...(statementSeconds ? { statementSeconds } : {}) } };
}

/**
 * Turns a lock-timeout cancellation into a failure naming who holds the lock (pid, user,
 * application, since when, query), read from pg_locks and pg_stat_activity; any other error is
 * returned as it is.
 */
export async function explainLockTimeout(error: unknown, runner: Runner, conn: PgConnection, what: string, seconds: number): Promise<unknown> {
  if (!isLockTimeout(error)) return error;
  let locks: HeldLock[] = [];
  const session = PsqlSession.open(runner, { ...conn, timeouts: { statementSeconds: 10 } });
  try {
    locks = await readBlockingLocks(session);
  } catch {
    // the explanation is a bonus: the timeout itself is the failure
  } finally {
    await session.close();
  }
  const holders = locks.length ? describeHeldLocks(locks) : 'the session that held it has let go since';
  return failure('LOCK_TIMEOUT', `${what} gave up after waiting ${seconds}s for a table lock in ${conn.host}:${conn.port}/${conn.database}: ${holders}`, {
    fix: `wait for the session holding the lock (a migration?) to finish, or end it with SELECT pg_terminate_backend(<pid>), then retry; postgres.lockTimeout in lifeline.yml or --lock-timeout sets how long to wait`,
    cause: error,
    details: { locks },
  });
}
