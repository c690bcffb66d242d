import type { Readable } from 'node:stream';
import type { Catalog, CatalogEntry, EntryKind, EntryMetadata } from '../catalog/store';
import type { SumEntry } from '../catalog/sums';
import { failure } from '../errors';
import { entryFileNameProblem } from '../catalog/confine';

export interface ImportSource {
  catalog: Catalog;
  env: string;
  kind: EntryKind;
  id: string;
  metadataFile: string;
  metadata: EntryMetadata;
  sums: SumEntry[];
  /** Where the copy comes from, for messages: `s3://bucket/prefix`, `artifact lifeline-...`. */
  source: string;
  open(file: string): Promise<Readable>;
}

/**
 * Brings an off-host copy into the local catalog: each file streams through a hash into a
 * staged entry, and only when every sha256 matches SHA256SUMS is the entry committed. An entry
 * already present locally is left alone.
 */
export async function importEntry(source: ImportSource): Promise<{ entry: CatalogEntry; fetched: boolean; bytes: number }> {
  // Every name comes from the copy itself: refuse an unsafe one before anything is opened or fetched.
  for (const file of [source.metadataFile, ...source.sums.map((s) => s.file)]) {
    const problem = entryFileNameProblem(file);
    if (problem) {
      throw failure('REMOTE_ENTRY_UNSAFE', `${source.kind}/${source.id} from ${source.source} names the file ${JSON.stringify(file)}, which ${problem}; nothing was fetched`, {
        fix: 'that copy was not written by Lifeline: inspect and remove it, then use another entry',
      });
    }
  }
  // A copy whose SHA256SUMS lost a line the metadata names (a backup without its dump) is not an entry.
  const listed = new Map(source.sums.map((s) => [s.file, s.sha256]));
  for (const { name, sha256 } of filesNamedByMetadata(source.metadata)) {
    const problem = typeof name === 'string' ? entryFileNameProblem(name) : 'is not a file name';
    if (problem)
      throw failure('REMOTE_ENTRY_UNSAFE', `${source.kind}/${source.id} from ${source.source}: ${source.metadataFile} names the file ${JSON.stringify(name)}, which ${problem}; nothing was fetched`, {
        fix: 'that copy was not written by Lifeline: inspect and remove it, then use another entry',
      });
    const listedSha = listed.get(name as string);
    if (listedSha !== sha256) {
      throw failure(
        'REMOTE_ENTRY_INCOMPLETE',
        `${source.kind}/${source.id} from ${source.source} is incomplete: ${listedSha === undefined ? `${source.metadataFile} names ${name as string} but SHA256SUMS does not list it` : `${source.metadataFile} records sha256 ${String(sha256)} for ${name as string}, SHA256SUMS lists ${listedSha}`}; nothing was fetched`,
        {
          fix: 'that copy was altered or damaged: sync again from a host whose local entry verifies, or use an older entry',
        },
      );
    }
  }
  const existing = await source.catalog.get(source.env, source.kind, source.id, source.metadataFile);
  if (existing) return { entry: existing, fetched: false, bytes: 0 };
  const staged = await source.catalog.begin(source.env, source.kind, source.id, source.metadataFile);
  let bytes = 0;
  try {
    for (const { file, sha256 } of source.sums) {
      const written = await staged.addStream(file, await source.open(file));
      if (written.sha256 !== sha256) {
        throw failure('REMOTE_CHECKSUM_MISMATCH', `${file} of ${source.kind}/${source.id} from ${source.source} has sha256 ${written.sha256}, expected ${sha256}; it was not used`, {
          fix: 'that copy is damaged: sync again from a host whose local entry verifies, or use an older entry',
          details: { file, actual: written.sha256, expected: sha256 },
        });
      }
      bytes += written.bytes;
    }
    await staged.commit(source.metadata);
  } catch (error) {
    await staged.abort();
    throw error;
  }
  const entry = await source.catalog.get(source.env, source.kind, source.id, source.metadataFile);
  if (!entry) throw failure('IMPORT_LOST', `${source.kind}/${source.id} was committed but does not list`, { fix: 'check the catalog directory for concurrent changes' });
  return { entry, fetched: true, bytes };
}

/** What an entry's metadata names: each file with the sha256 it records (backup.json `files.*`, export.json `collections` and `archive`). */
export function filesNamedByMetadata(metadata: EntryMetadata): Array<{ name: unknown; sha256: unknown }> {
  const named: Array<{ name: unknown; sha256: unknown }> = [];
  const files = metadata.files;
  if (files && typeof files === 'object') {
    for (const file of Object.values(files as Record<string, unknown>)) {
      const f = file as { name?: unknown; sha256?: unknown } | null;
      named.push({ name: f?.name, sha256: f?.sha256 });
    }
  }
  if (Array.isArray(metadata.collections)) {
    for (const c of metadata.collections as Array<{ file?: unknown; sha256?: unknown } | null>) named.push({ name: c?.file, sha256: c?.sha256 });
  }
  const archive = metadata.archive as { file?: unknown; sha256?: unknown } | undefined;
  if (archive && typeof archive === 'object') named.push({ name: archive.file, sha256: archive.sha256 });
  return named;
}
