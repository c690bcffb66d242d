import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { readTarMembers, type TarMemberDigest } from '../catalog/tar';
import { HashingTransform } from '../catalog/files';
import { decryptReadable, identityMatches, type AgeIdentity } from '../crypto/age';
import { sha256File } from '../catalog/files';
import { parseSums, SUMS_FILE } from '../catalog/sums';
import { entryFilePath, readEntryText } from '../catalog/confine';
import type { CatalogEntry } from '../catalog/store';
import { exportIsEncrypted, type ExportedCollection, type TenantExportManifest } from './export';
import { countFileRecords, RecordCounter, type ExportFormat } from './rows';

export interface TenantExportVerification {
  ok: boolean;
  exportId: string;
  tenant: string;
  checkedAt: string;
  /** One line per problem found; empty when ok. */
  problems: string[];
  files: { file: string; ok: boolean; rows?: number }[];
  /** Whether the collection files are stored encrypted (age). */
  encrypted: boolean;
  /**
   * Whether the rows themselves were read: false for an encrypted export verified without an
   * identity (only the ciphertext's checksums were checked).
   */
  contentsChecked: boolean;
}

export interface VerifyOptions {
  /** Also parse every NDJSON line (a second read); the checksums already catch any changed byte. */
  parseRecords?: boolean;
  /**
   * The age identity for an encrypted export: each file is then decrypted in the stream and its
   * plaintext checked (sha256, size, records, NDJSON lines). Without it only the ciphertext is.
   */
  identity?: AgeIdentity;
}

/**
 * An encrypted collection file in one read: the ciphertext hashed as it goes into the decrypter,
 * the plaintext hashed, its records counted and (NDJSON, when asked) each line parsed. Nothing is
 * written anywhere. A wrong identity or a chunk that fails authentication throws.
 */
async function scanEncryptedFile(
  path: string,
  format: ExportFormat,
  identity: AgeIdentity,
  what: string,
  parse: boolean,
): Promise<{ sha256: string; bytes: number; plainSha256: string; plainBytes: number; records: number; badLine?: number }> {
  const cipher = new HashingTransform();
  const reading = pipeline(createReadStream(path, { highWaterMark: 1024 * 1024 }), cipher);
  reading.catch(() => undefined);
  const plain = await decryptReadable(cipher, identity, what);
  const hash = createHash('sha256');
  const counter = new RecordCounter(format);
  let bytes = 0;
  let line = 0;
  let badLine: number | undefined;
  let partial: Buffer[] = [];
  const checkLine = (buffer: Buffer) => {
    line++;
    if (badLine !== undefined) return;
    try {
      JSON.parse(buffer.toString('utf8'));
    } catch {
      badLine = line;
    }
  };
  try {
    await consume();
  } catch (error) {
    cipher.destroy();
    throw error;
  }
  if (parse && format === 'ndjson' && partial.length) checkLine(Buffer.concat(partial));
  await reading;
  return {
    sha256: cipher.digest(),
    bytes: cipher.bytes,
    plainSha256: hash.digest('hex'),
    plainBytes: bytes,
    records: format === 'csv' ? Math.max(0, counter.records - 1) : counter.records,
    ...(badLine !== undefined ? { badLine } : {}),
  };

  async function consume() {
    for await (const chunk of plain) {
      const data = chunk as Buffer;
      hash.update(data);
      counter.add(data);
      bytes += data.length;
      if (parse && format === 'ndjson') {
        let start = 0;
        for (let i = data.indexOf(10); i !== -1; i = data.indexOf(10, start)) {
          partial.push(data.subarray(start, i));
          checkLine(Buffer.concat(partial));
          partial = [];
          start = i + 1;
        }
        if (start < data.length) partial.push(data.subarray(start));
      }
    }
  }
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
  const encrypted = (manifest.collections ?? []).some((c) => Boolean(c.encryption));
  let contentsChecked = !encrypted || Boolean(options.identity);
  if (encrypted && !exportIsEncrypted(manifest)) problems.push('some collection files are encrypted and others are not: the export was altered');
  const identity = options.identity;
  if (encrypted && identity) {
    for (const c of manifest.collections) {
      if (c.encryption && !identityMatches(identity, c.encryption.recipients)) {
        problems.push(
          `${c.file}: encrypted to ${c.encryption.recipients.join(', ')}; the identity from ${identity.source} (${identity.recipients.join(', ')}) is not among them, so its contents were not checked`,
        );
        contentsChecked = false;
      }
    }
  }
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
      if (collection?.encryption) {
        if (identity && identityMatches(identity, collection.encryption.recipients)) {
          const scanned = await scanEncryptedFile(path, manifest.format, identity, `${file} of export ${entry.id}`, Boolean(options.parseRecords));
          rows = scanned.records;
          if (scanned.sha256 !== listed) problems.push(`${file}: sha256 is ${scanned.sha256}, ${SUMS_FILE} says ${listed}`);
          if (collection.sha256 !== listed) problems.push(`${file}: the manifest's sha256 differs from ${SUMS_FILE}`);
          if (scanned.bytes !== collection.bytes) problems.push(`${file}: ${scanned.bytes} bytes, the manifest says ${collection.bytes}`);
          if (scanned.plainSha256 !== collection.encryption.plaintextSha256 || scanned.plainBytes !== collection.encryption.plaintextBytes) {
            problems.push(
              `${file}: decrypts to ${scanned.plainBytes} bytes with sha256 ${scanned.plainSha256}, the manifest records ${collection.encryption.plaintextBytes} bytes with sha256 ${collection.encryption.plaintextSha256}`,
            );
          }
          if (collection.contentDigest !== collection.encryption.plaintextSha256) problems.push(`${file}: the manifest's content digest is not its plaintext's sha256`);
          if (scanned.records !== collection.rows) problems.push(`${file}: ${scanned.records} records, the manifest says ${collection.rows}`);
          if (scanned.badLine !== undefined) problems.push(`${file}: line ${scanned.badLine} is not valid JSON`);
        } else {
          // No (matching) identity: the ciphertext's checksums only; the caller says the contents were not checked.
          const { sha256, bytes } = await sha256File(path);
          if (sha256 !== listed) problems.push(`${file}: sha256 is ${sha256}, ${SUMS_FILE} says ${listed}`);
          if (collection.sha256 !== listed) problems.push(`${file}: the manifest's sha256 differs from ${SUMS_FILE}`);
          if (bytes !== collection.bytes) problems.push(`${file}: ${bytes} bytes, the manifest says ${collection.bytes}`);
        }
      } else if (collection) {
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
    problems.push(...(await archiveProblems(entry.dir, file, manifest)));
  }
  return { ok: problems.length === 0, exportId: entry.id, tenant: manifest.tenant, checkedAt: new Date().toISOString(), problems, files, encrypted, contentsChecked };
}

/**
 * The handoff archive must hold exactly the export's files, byte for byte: each collection file as
 * stored (the `.age` file in an encrypted export) under one folder, beside SHA256SUMS and
 * export.json, and nothing else. Its checksum alone proves only that the archive is the one
 * recorded; a rebuilt archive with its checksums rewritten (plaintext rows, another tenant's file)
 * is caught here, with or without an identity.
 */
async function archiveProblems(entryDir: string, file: string, manifest: TenantExportManifest): Promise<string[]> {
  let members: TarMemberDigest[];
  try {
    members = await readTarMembers(createReadStream(await entryFilePath(entryDir, file), { highWaterMark: 1024 * 1024 }).pipe(createGunzip()), 0);
  } catch (error) {
    return [`${file}: cannot be read as a gzip'd tar archive (${(error as Error).message})`];
  }
  const problems: string[] = [];
  const files = members.filter((m) => m.type !== '5');
  const folders = new Set(files.map((m) => (m.name.includes('/') ? m.name.slice(0, m.name.indexOf('/')) : '')));
  if (folders.size !== 1 || folders.has('')) problems.push(`${file}: its members are not all in one folder`);
  const byName = new Map(files.map((m) => [m.name.slice(m.name.indexOf('/') + 1), m]));
  for (const c of manifest.collections ?? []) {
    const member = byName.get(c.file);
    if (!member) problems.push(`${file}: does not hold ${c.file}`);
    else if (member.sha256 !== c.sha256 || member.size !== c.bytes)
      problems.push(`${file}: its ${c.file} is not the stored one (sha256 ${member.sha256}, ${member.size} bytes; the export's is ${c.sha256}, ${c.bytes} bytes)`);
    byName.delete(c.file);
  }
  byName.delete(SUMS_FILE);
  byName.delete('export.json');
  for (const name of byName.keys()) problems.push(`${file}: holds ${JSON.stringify(name)}, which is not a file of the export`);
  return problems;
}
