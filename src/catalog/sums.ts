import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { sha256File } from './files';

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
    if (!match) throw new Error(`malformed ${SUMS_FILE} line: ${JSON.stringify(line)}`);
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

/** Re-hashes every file listed in a directory's SHA256SUMS. */
export async function checkSums(dir: string): Promise<SumCheck[]> {
  const entries = parseSums(await readFile(join(dir, SUMS_FILE), 'utf8'));
  const results: SumCheck[] = [];
  for (const entry of entries) {
    try {
      const { sha256 } = await sha256File(join(dir, entry.file));
      results.push({ file: entry.file, expected: entry.sha256, actual: sha256, ok: sha256 === entry.sha256 });
    } catch (error) {
      results.push({ file: entry.file, expected: entry.sha256, ok: false, error: (error as Error).message });
    }
  }
  return results;
}
