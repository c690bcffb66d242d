import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { readFile } from 'node:fs/promises';
import { checkSums, parseSums, SUMS_FILE } from '../catalog/sums';
import type { CatalogEntry } from '../catalog/store';
import type { TenantExportManifest } from './export';
import { countFileRecords } from './rows';

export interface TenantExportVerification {
  ok: boolean;
  exportId: string;
  tenant: string;
  checkedAt: string;
  /** One line per problem found; empty when ok. */
  problems: string[];
  files: { file: string; ok: boolean; rows?: number }[];
}

/**
 * Re-checks an export from disk: every file against SHA256SUMS, the manifest's own hashes and
 * sizes, and the records in each collection file against the manifest's row count (each NDJSON
 * line must parse).
 */
export async function verifyTenantExport(entry: CatalogEntry<TenantExportManifest>): Promise<TenantExportVerification> {
  const manifest = entry.metadata;
  const problems: string[] = [];
  const files: TenantExportVerification['files'] = [];
  let sums: Map<string, string>;
  try {
    sums = new Map(parseSums(await readFile(join(entry.dir, SUMS_FILE), 'utf8')).map((s) => [s.file, s.sha256]));
    for (const check of await checkSums(entry.dir)) {
      if (!check.ok) problems.push(`${check.file}: ${check.error ?? `sha256 is ${check.actual}, SHA256SUMS says ${check.expected}`}`);
    }
  } catch (error) {
    problems.push(`${SUMS_FILE}: ${(error as Error).message}`);
    sums = new Map();
  }
  for (const collection of manifest.collections ?? []) {
    const path = join(entry.dir, collection.file);
    const before = problems.length;
    if (sums.get(collection.file) !== collection.sha256) problems.push(`${collection.file}: missing from ${SUMS_FILE} or listed with another sha256 than the manifest's`);
    const size = await stat(path).then((s) => s.size).catch(() => undefined);
    if (size === undefined) {
      problems.push(`${collection.file}: missing`);
      files.push({ file: collection.file, ok: false });
      continue;
    }
    if (size !== collection.bytes) problems.push(`${collection.file}: ${size} bytes, the manifest says ${collection.bytes}`);
    const counted = await countFileRecords(path, manifest.format);
    if (counted.badLine !== undefined) problems.push(`${collection.file}: line ${counted.badLine} is not valid JSON`);
    else if (counted.records !== collection.rows) problems.push(`${collection.file}: ${counted.records} records, the manifest says ${collection.rows}`);
    files.push({ file: collection.file, ok: problems.length === before, rows: counted.records });
  }
  if (manifest.archive) {
    const before = problems.length;
    if (sums.get(manifest.archive.file) !== manifest.archive.sha256) problems.push(`${manifest.archive.file}: missing from ${SUMS_FILE} or listed with another sha256 than the manifest's`);
    const sidecar = await readFile(join(entry.dir, `${manifest.archive.file}.sha256`), 'utf8').catch(() => '');
    if (!sidecar.startsWith(`${manifest.archive.sha256}  `)) problems.push(`${manifest.archive.file}.sha256: missing or disagrees with the manifest`);
    files.push({ file: manifest.archive.file, ok: problems.length === before });
  }
  return { ok: problems.length === 0, exportId: entry.id, tenant: manifest.tenant, checkedAt: new Date().toISOString(), problems, files };
}
