import { open } from 'node:fs/promises';
import { dirname } from 'node:path';
import { fsyncPath, mkdirPrivate, PRIVATE_FILE_MODE } from './files';

/** A line of an append-only journal that is not a record: torn by a crash, or edited by hand. */
export interface CorruptLine {
  /** 1-based line number in the file. */
  line: number;
  /** The start of the line, escaped so it prints on one line. */
  excerpt: string;
}

export interface JournalContent<T> {
  records: { line: number; value: T }[];
  corrupt: CorruptLine[];
}

/**
 * Appends one JSON record as one line. The record always starts on a fresh line (a line torn
 * by a crash mid-append stays a corrupt line of its own instead of swallowing this record), and
 * the file is fsynced before this returns. JSON.stringify escapes newlines, so no value of the
 * record can start a line of its own.
 */
export async function appendJournal(path: string, record: unknown): Promise<void> {
  await mkdirPrivate(dirname(path));
  const line = `${JSON.stringify(record)}\n`;
  const handle = await open(path, 'a+', PRIVATE_FILE_MODE);
  let size = 0;
  try {
    ({ size } = await handle.stat());
    let prefix = '';
    if (size > 0) {
      const last = Buffer.alloc(1);
      await handle.read(last, 0, 1, size - 1);
      if (last[0] !== 0x0a) prefix = '\n';
    }
    // One write call: O_APPEND keeps concurrent appenders' lines whole.
    await handle.write(prefix + line);
    await handle.sync();
  } finally {
    await handle.close();
  }
  // A journal just created is only durable once its directory entry is.
  if (size === 0) await fsyncPath(dirname(path));
}

/**
 * Reads every line of a journal. Lines that are not JSON objects accepted by `accept` are
 * returned as corrupt, with their line numbers, never silently dropped: a reader must say so.
 */
export async function readJournal<T>(path: string, accept: (value: unknown) => value is T): Promise<JournalContent<T>> {
  let text: string;
  try {
    const handle = await open(path, 'r');
    try {
      text = await handle.readFile('utf8');
    } finally {
      await handle.close();
    }
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return { records: [], corrupt: [] };
    throw error;
  }
  const content: JournalContent<T> = { records: [], corrupt: [] };
  const lines = text.split('\n');
  lines.forEach((raw, index) => {
    if (!raw.trim()) return;
    let value: unknown;
    try {
      value = JSON.parse(raw);
    } catch {
      value = undefined;
    }
    if (value !== undefined && accept(value)) content.records.push({ line: index + 1, value });
    else content.corrupt.push({ line: index + 1, excerpt: escapeForTerminal(raw.length > 80 ? `${raw.slice(0, 80)}...` : raw) });
  });
  return content;
}

/** Makes a value safe to print on one terminal line: control characters (newlines, ESC) are escaped. */
export function escapeForTerminal(value: string): string {
  // eslint-disable-next-line no-control-regex
  return value.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g, (c) => (c === '\n' ? '\\n' : c === '\r' ? '\\r' : c === '\t' ? '\\t' : `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`));
}
