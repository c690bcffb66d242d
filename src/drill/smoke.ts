import { readFileSync } from 'node:fs';
import { usageError } from '../errors';

/**
 * One smoke query: a SELECT whose single value (first column of the first row) must equal
 * `expect`, compared as text after trimming. NULL is written `NULL`.
 */
export interface SmokeQuery {
  name: string;
  expect: string;
  sql: string;
  line: number;
}

/**
 * Reads a smoke file: blocks of `-- expect: <value>` (optionally preceded by `-- name: <text>`)
 * followed by one query, which runs until the next directive or the end of the file.
 *
 *     -- name: the Lisbon location exists
 *     -- expect: 1
 *     SELECT count(*) FROM locations WHERE city = 'Lisbon';
 */
export function parseSmokeQueries(text: string, source: string): SmokeQuery[] {
  const queries: SmokeQuery[] = [];
  let pending: { name?: string; expect?: string; line: number; sql: string[] } | undefined;
  const flush = () => {
    if (!pending) return;
    const sql = pending.sql.join('\n').trim().replace(/;\s*$/, '').trim();
    if (pending.expect === undefined) throw usageError('BAD_SMOKE_FILE', `${source}:${pending.line}: a query has no "-- expect:" line`, 'put "-- expect: <value>" right before each query');
    if (!sql) throw usageError('BAD_SMOKE_FILE', `${source}:${pending.line}: "-- expect: ${pending.expect}" is not followed by a query`, 'write the query on the lines after the -- expect: line');
    if (sql.includes(';')) throw usageError('BAD_SMOKE_FILE', `${source}:${pending.line}: a block holds more than one statement`, 'give each query its own "-- expect:" line');
    queries.push({ name: pending.name ?? sql.split('\n')[0]!.slice(0, 80), expect: pending.expect, sql, line: pending.line });
    pending = undefined;
  };
  text.split(/\r?\n/).forEach((raw, index) => {
    const line = index + 1;
    const directive = /^\s*--\s*(name|expect)\s*:\s?(.*)$/i.exec(raw);
    if (directive) {
      const key = directive[1]!.toLowerCase();
      const value = directive[2]!.trim();
      if (pending && (pending.sql.join('').trim() || (key === 'expect' && pending.expect !== undefined) || (key === 'name' && pending.name !== undefined))) flush();
      pending ??= { line, sql: [] };
      if (key === 'name') pending.name = value;
      else pending.expect = value;
      return;
    }
    if (/^\s*--/.test(raw) || !raw.trim()) {
      if (pending) pending.sql.push('');
      return;
    }
    if (!pending) throw usageError('BAD_SMOKE_FILE', `${source}:${line}: a query without an expected value`, 'put "-- expect: <value>" right before each query');
    pending.sql.push(raw);
  });
  flush();
  if (queries.length === 0) throw usageError('BAD_SMOKE_FILE', `${source} holds no smoke queries`, 'write blocks of "-- expect: <value>" followed by a query, or drop --smoke-sql');
  return queries;
}

export function readSmokeFile(path: string): SmokeQuery[] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw usageError('SMOKE_FILE_UNREADABLE', `cannot read the smoke query file ${path}: ${(error as Error).message}`, 'pass an existing file to --smoke-sql (or fix drill.smokeSql in lifeline.yml)');
  }
  return parseSmokeQueries(text, path);
}

/** How a query's value is compared with its `-- expect:` text. */
export function smokeValueText(value: unknown): string {
  if (value === null || value === undefined) return 'NULL';
  if (typeof value === 'object') return JSON.stringify(value);
  return String(value).trim();
}
