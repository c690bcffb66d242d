import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inject } from 'vitest';
import { LocalRunner } from '../../src/runner/runner';
import { formatPgUrl, parsePgUrl, quoteIdent, type PgConnection } from '../../src/runner/postgres-env';
import { queryOnce, PsqlSession } from '../../src/runner/psql';
import { loadSampleDataset } from './sample-dataset';

export const runner = new LocalRunner();

export function adminConn(): PgConnection {
  return parsePgUrl(inject('pgUrl'));
}

/** A fresh, empty database on the suite's cluster. */
export async function createDatabase(prefix = 'test'): Promise<{ name: string; conn: PgConnection; url: string }> {
  const name = `${prefix}_${randomBytes(4).toString('hex')}`;
  await sql(`CREATE DATABASE ${quoteIdent(name)}`);
  const conn = { ...adminConn(), database: name };
  return { name, conn, url: formatPgUrl(conn) };
}

/** A fresh database holding the sample restaurant dataset. */
export async function createSampleDatabase(sizeMb = 2, prefix = 'shop') {
  const db = await createDatabase(prefix);
  await loadSampleDataset(runner, db.conn, { sizeMb });
  return db;
}

export async function dropDatabase(name: string): Promise<void> {
  await sql(`DROP DATABASE IF EXISTS ${quoteIdent(name)} WITH (FORCE)`);
}

/** Runs one statement on the admin database. */
export async function sql(statement: string, database = 'postgres'): Promise<void> {
  const session = PsqlSession.open(runner, adminConn(), { database });
  try {
    await session.exec(statement);
  } finally {
    await session.close();
  }
}

export async function query<T = Record<string, unknown>>(statement: string, database: string): Promise<T[]> {
  return queryOnce<T>(runner, adminConn(), statement, database);
}

/** Exact row counts of every user table, for comparing databases. */
export async function tableCounts(database: string): Promise<Record<string, number>> {
  const tables = await query<{ name: string }>(`SELECT format('%I.%I', schemaname, relname) AS name FROM pg_stat_user_tables ORDER BY 1`, database);
  const out: Record<string, number> = {};
  for (const { name } of tables) {
    const [row] = await query<{ n: number }>(`SELECT count(*)::bigint AS n FROM ${name}`, database);
    out[name] = Number(row!.n);
  }
  return out;
}

export function tempDir(prefix = 'lifeline-test-'): { path: string; cleanup: () => void } {
  const path = mkdtempSync(join(tmpdir(), prefix));
  return { path, cleanup: () => rmSync(path, { recursive: true, force: true }) };
}
