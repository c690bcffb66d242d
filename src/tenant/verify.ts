import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { sha256File } from '../catalog/files';
import { parseSums, SUMS_FILE } from '../catalog/sums';
import { entryFilePath, readEntryText } from '../catalog/confine';
import type { CatalogEntry } from '../catalog/store';
import type { ExportedCollection, TenantExportManifest } from './export';
import { countFileRecords, RecordCounter, type ExportFormat } from './rows';

export interface TenantExportVerification {
  ok: boolean;
  exportId: string;
  tenant: string;
  checkedAt: string;
  /** One line per problem found; empty when ok. */
  problems: string[];
  files: { file: string; ok: boolean; rows?: number }[];
}

export interface VerifyOptions {
  /** Also parse every NDJSON line (a second read); the checksums already catch any changed byte. */
  parseRecords?: boolean;
}

/** sha256, size and record count of a collection file in one read. */
async function scanCollectionFile(path: string, format: ExportFormat): Promise<{ sha256: string; bytes: number; records: number }> {
  const hash = createHash('sha256');
  const counter = new RecordCounter(format);
  let bytes = 0;
  for await (const chunk of createReadStream(path, { highWaterMark: 1024 * 1024 })) {
    hash.update(chunk as Buffer);
    counter.add(chunk as Buffer);
    bytes += (chunk as Buffer).length;
  }
  return { sha256: hash.digest('hex'), bytes, records: format === 'csv' ? Math.max(0, counter.records - 1) : counter.records };
}

/**
 * Re-checks an export from disk: every file listed in SHA256SUMS, the manifest's own hashes and
 * sizes, the records in each collection file against the manifest's row count, and the archive's
 * `.sha256` file.
 */
export async function verifyTenantExport(entry: CatalogEntry<TenantExportManifest>, options: VerifyOptions = {}): Promise<TenantExportVerification> {
  const manifest = entry.metadata;
  const problems: string[] = [];
  const files: TenantExportVerification['files'] = [];
  const collections = new Map<string, ExportedCollection>((manifest.collections ?? []).map((c) => [c.file, c]));
  let sums: { file: string; sha256: string }[] = [];
  try {
    sums = parseSums(await readEntryText(entry.dir, SUMS_FILE));
  } catch (error) {
    problems.push(`${SUMS_FILE}: ${(error as Error).message}`);
  }
  // Only the files export.json names may be read: any other SHA256SUMS line is a problem, unread.
  const named = new Set([...collections.keys(), ...(manifest.archive ? [manifest.archive.file, `${manifest.archive.file}.sha256`] : [])]);
  for (const { file, sha256: listed } of sums) {
    const before = problems.length;
    const collection = collections.get(file);
    let rows: number | undefined;
    if (!named.has(file)) {
      problems.push(`${JSON.stringify(file)}: listed in ${SUMS_FILE} but not named by the export's manifest; it was not read`);
      files.push({ file, ok: false });
      continue;
    }
    try {
      const path = await entryFilePath(entry.dir, file);
      if (collection) {
        const scanned = await scanCollectionFile(path, manifest.format);
        rows = scanned.records;
        if (scanned.sha256 !== listed) problems.push(`${file}: sha256 is ${scanned.sha256}, ${SUMS_FILE} says ${listed}`);
        if (collection.sha256 !== listed) problems.push(`${file}: the manifest's sha256 differs from ${SUMS_FILE}`);
        if (scanned.bytes !== collection.bytes) problems.push(`${file}: ${scanned.bytes} bytes, the manifest says ${collection.bytes}`);
        if (scanned.records !== collection.rows) problems.push(`${file}: ${scanned.records} records, the manifest says ${collection.rows}`);
        if (options.parseRecords && manifest.format === 'ndjson' && problems.length === before) {
          const parsed = await countFileRecords(path, 'ndjson');
          if (parsed.badLine !== undefined) problems.push(`${file}: line ${parsed.badLine} is not valid JSON`);
        }
      } else {
        const { sha256 } = await sha256File(path);
        if (sha256 !== listed) problems.push(`${file}: sha256 is ${sha256}, ${SUMS_FILE} says ${listed}`);
      }
    } catch (error) {
      problems.push(`${file}: ${(error as Error).message}`);
    }
    files.push({ file, ok: problems.length === before, ...(rows !== undefined ? { rows } : {}) });
  }
  for (const file of collections.keys()) {
    if (!sums.some((s) => s.file === file)) problems.push(`${file}: not listed in ${SUMS_FILE}`);
  }
  if (manifest.archive) {
    const { file, sha256 } = manifest.archive;
    if (!sums.some((s) => s.file === file && s.sha256 === sha256)) problems.push(`${file}: missing from ${SUMS_FILE} or listed with another sha256 than the manifest's`);
    const sidecar = await readEntryText(entry.dir, `${file}.sha256`).catch(() => '');
    if (!sidecar.startsWith(`${sha256}  `)) problems.push(`${file}.sha256: missing or disagrees with the manifest`);
  }
  return { ok: problems.length === 0, exportId: entry.id, tenant: manifest.tenant, checkedAt: new Date().toISOString(), problems, files };
}
