import { describe, expect, it } from 'vitest';
import { settingClause } from '../../src/backup/restore';
import { describeHeldLocks, isLockTimeout } from '../../src/postgres/inspect';
import { childEnvironment } from '../../src/runner/runner';
import { pgEnv } from '../../src/runner/postgres-env';

describe('database settings are re-applied as PostgreSQL stored them', () => {
  it('list settings item by item, like pg_dump', () => {
    expect(settingClause('search_path="$user", app, public')).toBe(`search_path TO '$user', 'app', 'public'`);
    expect(settingClause('search_path="a ""quoted"" schema", public')).toBe(`search_path TO 'a "quoted" schema', 'public'`);
  });
  it('other settings as one literal, quotes doubled', () => {
    expect(settingClause('statement_timeout=5min')).toBe(`statement_timeout TO '5min'`);
    expect(settingClause("app.greeting=it's=fine")).toBe(`app.greeting TO 'it''s=fine'`);
  });
  it('refuses a setting name that is not a name', () => {
    expect(() => settingClause('x; DROP DATABASE y=1')).toThrow(/unexpected name/);
  });
});

describe('child environments', () => {
  it('drop every inherited libpq variable, keep pgBackRest options and PGPASSFILE, and add exactly what the invocation sets', () => {
    const env = childEnvironment(
      {
        PATH: '/bin',
        PGHOST: 'elsewhere',
        PGHOSTADDR: '10.0.0.1',
        PGSERVICE: 'prod',
        PGSERVICEFILE: '/x',
        PGOPTIONS: '-c x=1',
        PGTARGETSESSIONATTRS: 'standby',
        PGPASSWORD: 'old',
        pgport: '1',
        PGBACKREST_STANZA: 'main',
        PGPASSFILE: '/root/.pgpass',
      },
      { PGHOST: '127.0.0.1', PGDATABASE: 'shop', PGUSER: undefined },
    );
    expect(env).toEqual({ PATH: '/bin', PGBACKREST_STANZA: 'main', PGPASSFILE: '/root/.pgpass', PGHOST: '127.0.0.1', PGDATABASE: 'shop' });
  });
  it('carry lock and statement timeouts for Lifeline sessions, after the URL options', () => {
    const env = pgEnv({ host: 'h', port: 5432, database: 'd', params: { options: '-c search_path=app' }, timeouts: { lockSeconds: 2, statementSeconds: 30 } });
    expect(env.PGOPTIONS).toBe('-c search_path=app -c lock_timeout=2000 -c statement_timeout=30000');
  });
});

describe('lock waits', () => {
  it('are recognised in psql and pg_dump errors', () => {
    expect(isLockTimeout(new Error('psql: ERROR:  canceling statement due to lock timeout'))).toBe(true);
    expect(isLockTimeout(new Error('pg_dump: error: could not obtain lock on relation "public.orders"'))).toBe(true);
    expect(isLockTimeout(new Error('relation "orders" does not exist'))).toBe(false);
  });
  it('name the holder: pid, user, application, since when, query, tables', () => {
    const text = describeHeldLocks([
      {
        pid: 42,
        relation: 'public.orders',
        mode: 'AccessExclusiveLock',
        user: 'app',
        application: 'alembic',
        state: 'idle in transaction',
        since: '2026-01-01T00:00:00Z',
        query: 'ALTER TABLE orders\n  ADD COLUMN x int',
      },
      {
        pid: 42,
        relation: 'public.payments',
        mode: 'AccessExclusiveLock',
        user: 'app',
        application: 'alembic',
        state: 'idle in transaction',
        since: '2026-01-01T00:00:00Z',
        query: 'ALTER TABLE orders\n  ADD COLUMN x int',
      },
    ]);
    expect(text).toBe(
      'pid 42 (user app, application alembic, idle in transaction since 2026-01-01T00:00:00Z, query: ALTER TABLE orders ADD COLUMN x int) holds AccessExclusiveLock on public.orders, public.payments',
    );
  });
});
