import { copyFile, lstat, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { fsyncPath, hashingFileWriter, mkdirPrivate, PRIVATE_FILE_MODE } from '../catalog/files';
import { withLock } from '../catalog/lock';
import { processAlive, StagedEntry, type Catalog, type CatalogEntry, type EntryKind } from '../catalog/store';
import { addArchive, EXPORT_MANIFEST, exportIsEncrypted, plaintextOf, type ExportedCollection, type TenantExportManifest } from '../tenant/export';
import { tenantExportsKind } from '../tenant/tenant-id';
import { formatSums, SUMS_FILE, type SumEntry } from '../catalog/sums';
import { failure, usageError } from '../errors';
import type { Logger } from '../logger';
import { BACKUP_METADATA_FILE, findBackup, listBackups, type BackupEntry, type BackupFile, type BackupMetadata } from '../backup/metadata';
import { AGE_SUFFIX, encryptingWriter, type AgeIdentity } from './age';
import { assertEncryptionClaims, isEncrypted, openPlaintext, requireIdentityFor } from './payload';

export interface ReencryptOutcome {
  id: string;
  /** rewritten, skipped (already encrypted to exactly these recipients), or failed (left as it was). */
  action: 'rewritten' | 'skipped' | 'failed';
  files: string[];
  detail: string;
}

const STAGING_PREFIX = '.staging-reencrypt-';
const OLD_PREFIX = '.reencrypt-old-';

/**
 * Rewrites backups for the current recipients, under the environment lock. Each entry is rebuilt
 * whole beside itself (`.staging-reencrypt-<id>-<pid>`: every payload decrypted in the stream,
 * checked against its recorded plaintext sha256 and size, encrypted to the new recipients, fsynced,
 * with a new SHA256SUMS and backup.json), then swapped in by two renames. A kill while the copy is
 * written leaves the entry as it was (the staging directory is swept like any other); the only
 * window is between the two renames, and the next reencrypt (or doctor's sweep) puts the old
 * entry back from `.reencrypt-old-<id>-<pid>` when its writer is gone.
 */
export async function reencryptBackups(options: {
  catalog: Catalog;
  env: string;
  backup: string;
  recipients: readonly string[];
  identity?: AgeIdentity;
  logger: Logger;
  lockWaitSeconds?: number;
}): Promise<ReencryptOutcome[]> {
  const { catalog, env, logger } = options;
  requireRecipients(env, options.recipients);
  return withLock(catalog.envDir(env), env, { command: `reencrypt ${options.backup}`, waitSeconds: options.lockWaitSeconds ?? 30 }, async () => {
    await recoverInterruptedSwaps(catalog, env, logger);
    const entries = options.backup === 'all' ? await listBackups(catalog, env) : [await findBackup(catalog, env, options.backup)];
    // Every entry that needs an identity is checked before the first one is rewritten.
    for (const entry of entries) {
      if (!sameRecipients(entry, options.recipients)) requireIdentityFor(payloads(entry), options.identity, `backup ${entry.id}`);
    }
    const outcomes: ReencryptOutcome[] = [];
    for (const entry of entries) {
      try {
        outcomes.push(await reencryptEntry(catalog, env, entry, options.recipients, options.identity, logger));
      } catch (error) {
        // One damaged entry (a payload that no longer matches its recorded plaintext) must not stop
        // the rotation of the others; it stays exactly as it was, and the command exits 1.
        if (options.backup !== 'all') throw error;
        logger.error(`backup ${entry.id} was left as it was: ${(error as Error).message}`);
        outcomes.push({ id: entry.id, action: 'failed', files: payloads(entry).map((f) => f.name), detail: (error as Error).message });
      }
    }
    return outcomes;
  });
}

function payloads(entry: BackupEntry): BackupFile[] {
  return Object.values(entry.metadata.files).filter((f): f is BackupFile => Boolean(f));
}

function sameRecipients(entry: BackupEntry, recipients: readonly string[]): boolean {
  const wanted = [...new Set(recipients)].sort().join(' ');
  return payloads(entry).every((f) => isEncrypted(f) && [...new Set(f.encryption.recipients)].sort().join(' ') === wanted);
}

async function reencryptEntry(catalog: Catalog, env: string, entry: BackupEntry, recipients: readonly string[], identity: AgeIdentity | undefined, logger: Logger): Promise<ReencryptOutcome> {
  // A claim of encryption that the file does not bear out is an edited or damaged entry: never skipped as done.
  await assertEncryptionClaims(entry.dir, payloads(entry), `backup ${entry.id}`);
  if (sameRecipients(entry, recipients)) {
    return { id: entry.id, action: 'skipped', files: payloads(entry).map((f) => f.name), detail: 'already encrypted to exactly the current recipients' };
  }
  const kindDir = catalog.kindDir(env, 'backups');
  const staging = join(kindDir, `${STAGING_PREFIX}${entry.id}-${process.pid}`);
  await rm(staging, { recursive: true, force: true });
  await mkdirPrivate(staging);
  try {
    const sums: SumEntry[] = [];
    const files: Record<string, BackupFile> = {};
    const payloadNames = new Set<string>();
    for (const [slot, file] of Object.entries(entry.metadata.files) as [string, BackupFile | undefined][]) {
      if (!file) continue;
      payloadNames.add(file.name);
      const base = file.name.endsWith(AGE_SUFFIX) && isEncrypted(file) ? file.name.slice(0, -AGE_SUFFIX.length) : file.name;
      const stored = `${base}${AGE_SUFFIX}`;
      // The plaintext is checked against backup.json at its end: a damaged payload fails here, and nothing is swapped.
      const plain = await openPlaintext(entry.dir, file, identity, `backup ${entry.id}`);
      const out = hashingFileWriter(join(staging, stored));
      const encrypting = encryptingWriter(out.stream, recipients);
      await pipeline(plain, encrypting.stream);
      const plaintext = await encrypting.done();
      const written = await out.done();
      files[slot] = {
        ...file,
        name: stored,
        sha256: written.sha256,
        bytes: written.bytes,
        encryption: { format: 'age', recipients: [...recipients], plaintextSha256: plaintext.sha256, plaintextBytes: plaintext.bytes },
      };
      sums.push({ file: stored, sha256: written.sha256 });
      logger.info(`backup ${entry.id}: ${file.name} -> ${stored} (${plaintext.bytes} bytes, to ${recipients.length} recipient${recipients.length === 1 ? '' : 's'})`);
    }
    // Anything else the entry holds (nothing today) comes along unchanged.
    for (const name of await readdir(entry.dir)) {
      if (name.startsWith('.') || name === SUMS_FILE || name === BACKUP_METADATA_FILE || payloadNames.has(name)) continue;
      const info = await lstat(join(entry.dir, name));
      if (info.isFile()) await copyFile(join(entry.dir, name), join(staging, name));
    }
    const metadata: BackupMetadata = { ...entry.metadata, files: files as BackupMetadata['files'], reencryptedAt: new Date().toISOString() };
    await writeFile(join(staging, SUMS_FILE), formatSums(sums), { mode: PRIVATE_FILE_MODE, flag: 'wx' });
    await writeFile(join(staging, BACKUP_METADATA_FILE), `${JSON.stringify(metadata, null, 2)}\n`, { mode: PRIVATE_FILE_MODE, flag: 'wx' });
    for (const name of await readdir(staging)) await fsyncPath(join(staging, name));
    await fsyncPath(staging);
    // The swap: two renames, each atomic; the old entry is removed only once the new one is in place.
    const old = join(kindDir, `${OLD_PREFIX}${entry.id}-${process.pid}`);
    await rename(entry.dir, old);
    await rename(staging, entry.dir);
    await fsyncPath(kindDir);
    await rm(old, { recursive: true, force: true });
    return { id: entry.id, action: 'rewritten', files: Object.values(files).map((f) => f.name), detail: `encrypted to ${recipients.join(', ')}` };
  } catch (error) {
    await rm(staging, { recursive: true, force: true });
    throw error;
  }
}

/** Puts back an entry whose swap was interrupted between its two renames (its writer is gone). */
async function recoverInterruptedSwaps(catalog: Catalog, env: string, logger: Logger): Promise<void> {
  await recoverInterruptedSwapsIn(catalog.kindDir(env, 'backups'), logger);
}

async function recoverInterruptedSwapsIn(kindDir: string, logger: Logger): Promise<void> {
  let names: string[];
  try {
    names = await readdir(kindDir);
  } catch {
    return;
  }
  for (const name of names) {
    const match = new RegExp(`^${OLD_PREFIX.replace(/\./g, '\\.')}(.+)-(\\d+)$`).exec(name);
    if (!match || processAlive(Number(match[2]))) continue;
    const [, id] = match;
    const entryDir = join(kindDir, id!);
    const present = await lstat(entryDir).then(
      () => true,
      () => false,
    );
    if (present) {
      await rm(join(kindDir, name), { recursive: true, force: true });
    } else {
      await rename(join(kindDir, name), entryDir);
      logger.warn(`${kindDir.endsWith('/backups') ? 'backup' : 'tenant export'} ${id}: a re-encryption was interrupted during its swap; the entry as it was before is back in place`);
    }
    await rm(join(kindDir, `${STAGING_PREFIX}${id}-${match[2]}`), { recursive: true, force: true });
  }
}

/**
 * Rewrites tenant exports for the current recipients, under the environment lock, the way
 * `reencryptBackups` rewrites backups: each export is rebuilt whole beside itself (every collection
 * file read as plaintext, decrypted in the stream when it was encrypted, checked at its end against
 * its recorded sha256 and size, encrypted to the new recipients), with a new SHA256SUMS, export.json
 * and archive (rebuilt from the new `.age` files, so a plaintext archive never survives), then
 * swapped in by two renames. Exports made before encryption was configured are encrypted by it.
 */
export async function reencryptTenantExports(options: {
  catalog: Catalog;
  env: string;
  tenant: string;
  recipients: readonly string[];
  identity?: AgeIdentity;
  logger: Logger;
  lockWaitSeconds?: number;
}): Promise<ReencryptOutcome[]> {
  const { catalog, env, logger } = options;
  requireRecipients(env, options.recipients);
  return withLock(catalog.envDir(env), env, { command: `reencrypt --tenant ${options.tenant}`, waitSeconds: options.lockWaitSeconds ?? 30 }, async () => {
    const kinds: EntryKind[] = [];
    if (options.tenant === 'all') {
      const names = await readdir(join(catalog.envDir(env), 'tenants')).catch(() => [] as string[]);
      for (const name of names.sort()) if (!name.startsWith('.')) kinds.push(`tenants/${name}/exports`);
    } else kinds.push(tenantExportsKind(options.tenant));
    const entries: CatalogEntry<TenantExportManifest>[] = [];
    for (const kind of kinds) {
      await recoverInterruptedSwapsIn(catalog.kindDir(env, kind), logger);
      entries.push(...(await catalog.list<TenantExportManifest>(env, kind, EXPORT_MANIFEST)));
    }
    if (options.tenant !== 'all' && !entries.length)
      throw usageError('EXPORT_NOT_FOUND', `tenant ${JSON.stringify(options.tenant)} has no exports in environment ${env}`, 'check the tenant id (matched exactly) and --env');
    for (const entry of entries) {
      if (!exportSameRecipients(entry.metadata, options.recipients))
        requireIdentityFor(collectionFiles(entry.metadata), options.identity, `export ${entry.id} of tenant ${JSON.stringify(entry.metadata.tenant)}`);
    }
    const outcomes: ReencryptOutcome[] = [];
    for (const entry of entries) {
      const label = `${entry.metadata.tenant}/${entry.id}`;
      try {
        outcomes.push({ ...(await reencryptExport(catalog, env, entry, options.recipients, options.identity, logger)), id: label });
      } catch (error) {
        if (entries.length === 1) throw error;
        logger.error(`tenant export ${label} was left as it was: ${(error as Error).message}`);
        outcomes.push({ id: label, action: 'failed', files: entry.metadata.collections.map((c) => c.file), detail: (error as Error).message });
      }
    }
    return outcomes;
  });
}

function collectionFiles(manifest: TenantExportManifest): BackupFile[] {
  return (manifest.collections ?? []).map((c) => ({ name: c.file, sha256: c.sha256, bytes: c.bytes, ...(c.encryption ? { encryption: c.encryption } : {}) }));
}

function exportSameRecipients(manifest: TenantExportManifest, recipients: readonly string[]): boolean {
  const wanted = [...new Set(recipients)].sort().join(' ');
  return exportIsEncrypted(manifest) && manifest.collections.every((c) => [...new Set(c.encryption!.recipients)].sort().join(' ') === wanted);
}

async function reencryptExport(
  catalog: Catalog,
  env: string,
  entry: CatalogEntry<TenantExportManifest>,
  recipients: readonly string[],
  identity: AgeIdentity | undefined,
  logger: Logger,
): Promise<ReencryptOutcome> {
  const manifest = entry.metadata;
  await assertEncryptionClaims(entry.dir, collectionFiles(manifest), `tenant export ${entry.id}`);
  if (exportSameRecipients(manifest, recipients))
    return { id: entry.id, action: 'skipped', files: manifest.collections.map((c) => c.file), detail: 'already encrypted to exactly the current recipients' };
  const kindDir = join(entry.dir, '..');
  const staging = join(kindDir, `${STAGING_PREFIX}${entry.id}-${process.pid}`);
  await rm(staging, { recursive: true, force: true });
  await mkdirPrivate(staging);
  const staged = new StagedEntry(staging, entry.dir, EXPORT_MANIFEST, `tenant export ${entry.id}`, recipients);
  try {
    const collections: ExportedCollection[] = [];
    for (const c of manifest.collections) {
      const file = collectionFiles({ ...manifest, collections: [c] })[0]!;
      const base = c.encryption && c.file.endsWith(AGE_SUFFIX) ? c.file.slice(0, -AGE_SUFFIX.length) : c.file;
      // Checked against the recorded plaintext at its end: a damaged file fails here and nothing is swapped.
      const plain = await openPlaintext(entry.dir, file, identity, `export ${entry.id}`);
      const stored = await staged.addStream(base, plain);
      if (stored.encryption?.plaintextSha256 !== plaintextOf(c).sha256) throw failure('REENCRYPT_PLAINTEXT_CHANGED', `${c.file}: the rewritten plaintext differs from the recorded one`);
      collections.push({ ...c, file: stored.name, sha256: stored.sha256, bytes: stored.bytes, encryption: stored.encryption });
      logger.info(`tenant export ${entry.id}: ${c.file} -> ${stored.name} (${stored.encryption.plaintextBytes} bytes, to ${recipients.length} recipient${recipients.length === 1 ? '' : 's'})`);
    }
    const { archive: oldArchive, ...rest } = manifest;
    const next: TenantExportManifest & { reencryptedAt?: string } = { ...rest, collections, reencryptedAt: new Date().toISOString() };
    if (oldArchive) next.archive = await addArchive(staged, next);
    await staged.seal(next);
    const old = join(kindDir, `${OLD_PREFIX}${entry.id}-${process.pid}`);
    await rename(entry.dir, old);
    await rename(staging, entry.dir);
    await fsyncPath(kindDir);
    await rm(old, { recursive: true, force: true });
    return { id: entry.id, action: 'rewritten', files: collections.map((c) => c.file).concat(next.archive ? [next.archive.file] : []), detail: `encrypted to ${recipients.join(', ')}` };
  } catch (error) {
    await staged.abort();
    await rm(staging, { recursive: true, force: true });
    throw error;
  }
}

/** Re-encrypting needs somewhere to encrypt to: exit 2 with the config fix otherwise. */
function requireRecipients(env: string, recipients: readonly string[]): void {
  if (recipients.length) return;
  throw usageError(
    'NO_RECIPIENTS',
    `environment ${env} has no encryption.recipients, so there is nothing to re-encrypt to`,
    `add encryption: { recipients: [age1...] } to environments.${env} in lifeline.yml (age-keygen prints a public key)`,
  );
}
