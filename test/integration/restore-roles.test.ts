// A backup whose objects belong to a role the target server lacks: the restore fails, names the
// way out (--no-owner), changes nothing, and --no-owner then restores it.
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { formatPgUrl } from '../../src/runner/postgres-env';
import { lifeline } from '../helpers/cli';
import { adminConn, createDatabase, dropDatabase, query, sql, tableCounts, tempDir } from '../helpers/db';

const noEnv = { DATABASE_URL: undefined, REDIS_URL: undefined, LIFELINE_STORE: undefined, LIFELINE_ENV: undefined, LIFELINE_CONFIG: undefined };

describe('restore when the roles differ', () => {
  const role = `lifeline_owner_${randomBytes(3).toString('hex')}`;
  const store = tempDir('lifeline-roles-');
  const created: string[] = [];
  let source: Awaited<ReturnType<typeof createDatabase>>;
  let backupId: string;

  beforeAll(async () => {
    source = await createDatabase('rroles');
    created.push(source.name);
    await sql(`CREATE ROLE ${role}`);
    await sql(`CREATE TABLE menu (id int PRIMARY KEY, dish text); INSERT INTO menu SELECT g, 'dish ' || g FROM generate_series(1, 500) g; ALTER TABLE menu OWNER TO ${role}`, source.name);
    const run = await lifeline(['backup', '--store', store.path, '--database-url', source.url, '--json'], { env: noEnv });
    expect(run.code, run.stderr).toBe(0);
    backupId = JSON.parse(run.stdout).id;
    // The role disappears, as on a server whose roles were never created from globals.sql.
    await sql(`ALTER TABLE menu OWNER TO CURRENT_USER`, source.name);
    await sql(`DROP ROLE ${role}`);
  });
  afterAll(async () => {
    for (const name of created) await dropDatabase(name);
    await sql(`DROP ROLE IF EXISTS ${role}`);
    store.cleanup();
  });

  const target = () => {
    const conn = { ...adminConn(), database: `rroles_t_${randomBytes(3).toString('hex')}` };
    created.push(conn.database);
    return conn;
  };

  it('fails with the missing role named and --no-owner as the fix, leaving no database behind', async () => {
    const conn = target();
    const run = await lifeline(['restore', '--store', store.path, '--backup', backupId, '--target', formatPgUrl(conn), '--jobs', '2'], { env: noEnv });
    expect(run.code).toBe(1);
    expect(run.stderr).toContain(`role "${role}" does not exist`);
    expect(run.stderr).toContain('--no-owner');
    expect(run.stderr).not.toMatch(/launching item|finished item/);
    const left = await query<{ datname: string }>(`SELECT datname FROM pg_database WHERE datname LIKE '${conn.database}%'`, 'postgres');
    expect(left).toEqual([]);
  });

  it('restores with --no-owner, every row checked', async () => {
    const conn = target();
    const run = await lifeline(['restore', '--store', store.path, '--backup', backupId, '--target', formatPgUrl(conn), '--jobs', '2', '--no-owner', '--json'], { env: noEnv });
    expect(run.code, `${run.stdout}\n${run.stderr}`).toBe(0);
    expect(JSON.parse(run.stdout).checks).toMatchObject({ ok: true, rowCounts: { rows: 500 } });
    expect(await tableCounts(conn.database)).toEqual({ 'public.menu': 500 });
    const [owner] = await query<{ owner: string }>(`SELECT tableowner AS owner FROM pg_tables WHERE tablename = 'menu'`, conn.database);
    expect(owner!.owner).not.toBe(role);
  });
});
