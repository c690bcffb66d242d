import { readEntryText, sha256EntryFile, UnsafeEntryFileError } from './confine';
import { failure } from '../errors';

export const SUMS_FILE = 'SHA256SUMS';

export interface SumEntry {
  file: string;
  sha256: string;
}

/** The exact format `sha256sum -c` reads: hash, two spaces, file name. */
export function formatSums(entries: readonly SumEntry[]): string {
  return [...entries]
    .sort((a, b) => a.file.localeCompare(b.file))
    .map((e) => `${e.sha256}  ${e.file}\n`)
    .join('');
}

export function parseSums(text: string): SumEntry[] {
  const entries: SumEntry[] = [];
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    const match = /^([0-9a-f]{64}) [ *](.+)$/.exec(line);
    if (!match)
      throw failure('CATALOG_CORRUPT', `malformed ${SUMS_FILE} line: ${JSON.stringify(line)}`, {
        fix: `the entry's ${SUMS_FILE} was altered outside Lifeline: inspect it, then remove the entry or restore it from an off-host copy`,
      });
    entries.push({ sha256: match[1]!, file: match[2]! });
  }
  return entries;
}

export interface SumCheck {
  file: string;
  expected: string;
  actual?: string;
  ok: boolean;
  error?: string;
}

/**
 * Re-hashes every file listed in a directory's SHA256SUMS, each through `openEntryFile`: a name
 * that is not a safe single segment, a symlink, a FIFO or a device fails its check unhashed.
 * With `listed` (the names the entry's metadata records), a line for any other name is a failed
 * check too, never an extra file to hash.
 */
export async function checkSums(dir: string, options: { listed?: readonly string[]; onFile?: () => void } = {}): Promise<SumCheck[]> {
  const entries = parseSums(await readEntryText(dir, SUMS_FILE));
  const listed = options.listed && new Set([...options.listed, SUMS_FILE]);
  const results: SumCheck[] = [];
  for (const entry of entries) {
    if (listed && !listed.has(entry.file)) {
      results.push({ file: entry.file, expected: entry.sha256, ok: false, error: `${SUMS_FILE} lists ${JSON.stringify(entry.file)}, which the entry's metadata does not name; it was not read` });
      continue;
    }
    try {
      const { sha256 } = await sha256EntryFile(dir, entry.file);
      results.push({ file: entry.file, expected: entry.sha256, actual: sha256, ok: sha256 === entry.sha256 });
      options.onFile?.();
    } catch (error) {
      const message = error instanceof UnsafeEntryFileError ? error.message : (error as Error).message;
      results.push({ file: entry.file, expected: entry.sha256, ok: false, error: message });
    }
  }
  return results;
}
