import { createHash } from 'node:crypto';
import { Transform, type Readable } from 'node:stream';
import { readdir } from 'node:fs/promises';
import { createGunzip } from 'node:zlib';
import { entryFilePath, openEntryFile } from '../catalog/confine';
import { readTarMembers } from '../catalog/tar';
import { failure } from '../errors';
import type { BackupFile } from '../backup/metadata';
import type { Runner, ToolInvocation, ToolResult } from '../runner/runner';
import { AGE_HEADER, AGE_SUFFIX, decryptFile, identityMatches, identityRequired, IDENTITY_FIX, startsAsAge, type AgeIdentity } from './age';

/** Whether a stored payload is an age file. */
export function isEncrypted(file: BackupFile | undefined): file is BackupFile & { encryption: NonNullable<BackupFile['encryption']> } {
  return Boolean(file?.encryption);
}

/**
 * Before anything is touched: an encrypted payload needs an identity (exit 2 naming the
 * variables), and an identity that holds none of the recorded recipients' keys fails (exit 1).
 * The decryption itself checks again (the header names the recipients for real).
 */
export function requireIdentityFor(files: readonly (BackupFile | undefined)[], identity: AgeIdentity | undefined, what: string): void {
  const encrypted = files.filter(isEncrypted);
  if (!encrypted.length) return;
  if (!identity) throw identityRequired(what);
  for (const file of encrypted) {
    if (!identityMatches(identity, file.encryption.recipients)) {
      throw failure(
        'AGE_WRONG_IDENTITY',
        `${what} (${file.name}) was encrypted to ${file.encryption.recipients.join(', ')}; the identity from ${identity.source} is ${identity.recipients.join(', ')}, which is not among them; nothing was changed`,
        {
          fix: `give the identity of one of those recipients; ${IDENTITY_FIX}`,
        },
      );
    }
  }
}

/**
 * A stored payload's plaintext as a stream: decrypted when it is an age file (the header, and so
 * the identity, is checked before this resolves), and in both cases checked at its end against
 * the plaintext sha256 and size backup.json records (the stream errors on a mismatch, so a
 * consumer that reads to the end has read exactly the recorded bytes).
 */
export async function openPlaintext(entryDir: string, file: BackupFile, identity: AgeIdentity | undefined, what: string): Promise<Readable> {
  const path = await entryFilePath(entryDir, file.name);
  if (!isEncrypted(file)) {
    const { createReadStream } = await import('node:fs');
    return createReadStream(path, { highWaterMark: 1024 * 1024 }).pipe(checkingTransform(file.sha256, file.bytes, `${what} (${file.name})`));
  }
  if (!identity) throw identityRequired(what);
  const plain = await decryptFile(path, identity, `${what} (${file.name})`);
  const checked = checkingTransform(file.encryption.plaintextSha256, file.encryption.plaintextBytes, `the decrypted ${what} (${file.name})`);
  plain.on('error', (error) => checked.destroy(error));
  return plain.pipe(checked);
}

/** A pass-through that fails at its end unless exactly `bytes` bytes with this sha256 went through. */
function checkingTransform(sha256: string, bytes: number, what: string): Transform {
  const hash = createHash('sha256');
  let seen = 0;
  return new Transform({
    transform(chunk: Buffer, _enc, cb) {
      hash.update(chunk);
      seen += chunk.length;
      cb(null, chunk);
    },
    flush(cb) {
      const actual = hash.digest('hex');
      if (actual !== sha256 || seen !== bytes) {
        cb(failure('PAYLOAD_MISMATCH', `${what} is ${seen} bytes with sha256 ${actual}, backup.json records ${bytes} bytes with sha256 ${sha256}`, { fix: 'use another backup; this one is damaged' }));
      } else cb();
    },
  });
}

/**
 * Runs a tool that reads `source` on stdin and waits for both. A source that fails (a tampered
 * chunk, a plaintext mismatch) kills the tool, so it never waits forever on a stdin that will not
 * end, and the source's error is what is reported. `complete` says whether the whole source was
 * read (and so passed its end-of-stream check).
 */
export async function runReadingStream(
  runner: Runner,
  invocation: Omit<ToolInvocation, 'stdin'>,
  source: Readable,
  onStdout?: (chunk: Buffer) => void,
): Promise<{ result: ToolResult; sourceError?: Error; complete: boolean }> {
  let sourceError: Error | undefined;
  let ended = false;
  source.on('end', () => (ended = true));
  source.on('error', (error) => {
    sourceError ??= error;
    running.kill('SIGTERM');
  });
  const running = runner.start({ ...invocation, stdin: source });
  if (onStdout) running.stdout.on('data', onStdout);
  else running.stdout.resume();
  const result = await running.done;
  if (!ended && !sourceError) await new Promise((resolve) => setTimeout(resolve, 50));
  if (!ended) source.destroy();
  return { result, sourceError, complete: ended && !sourceError };
}

/** Entry files that describe the entry rather than hold its rows: metadata, checksums, checksum sidecars. */
function isDescriptionFile(name: string): boolean {
  return name === 'SHA256SUMS' || name.endsWith('.json') || name.endsWith('.sha256');
}

/**
 * What in an entry's directory is not, in fact, an age file: every payload must be named `*.age`
 * and start with the age header, and every member of a `.tar.gz` archive likewise. Decided from
 * the bytes on disk, never from what backup.json or export.json claim (an edited claim must not
 * carry plaintext off the host). Unreadable files (a link, a directory, a torn archive) count as
 * not encrypted. Returns one line per problem; empty when everything is ciphertext.
 */
export async function unencryptedPayloads(entryDir: string): Promise<string[]> {
  const problems: string[] = [];
  for (const name of (await readdir(entryDir)).sort()) {
    if (isDescriptionFile(name)) continue;
    try {
      const handle = await openEntryFile(entryDir, name);
      try {
        if (name.endsWith('.tar.gz')) {
          const members = await readTarMembers(handle.createReadStream({ autoClose: false, highWaterMark: 1024 * 1024 }).pipe(createGunzip()), AGE_HEADER.length);
          for (const m of members) {
            if (m.type === '5' || isDescriptionFile(m.name.slice(m.name.lastIndexOf('/') + 1))) continue;
            if (m.type !== '0' || !m.name.endsWith(AGE_SUFFIX) || !startsAsAge(m.head)) problems.push(`${name}: member ${m.name} is not an age file`);
          }
          continue;
        }
        const head = Buffer.alloc(AGE_HEADER.length);
        const { bytesRead } = await handle.read(head, 0, head.length, 0);
        if (!name.endsWith(AGE_SUFFIX) || !startsAsAge(head.subarray(0, bytesRead))) problems.push(`${name} is not an age file`);
      } finally {
        await handle.close();
      }
    } catch (error) {
      problems.push(`${name} cannot be read as an age file (${(error as Error).message})`);
    }
  }
  return problems;
}

/**
 * Metadata that says a payload is encrypted must be true of the file: otherwise the entry was edited
 * or damaged, and treating it as encrypted would skip its encryption (reencrypt) or ship plaintext.
 */
export async function assertEncryptionClaims(entryDir: string, files: readonly BackupFile[], what: string): Promise<void> {
  for (const file of files.filter(isEncrypted)) {
    const handle = await openEntryFile(entryDir, file.name);
    try {
      const head = Buffer.alloc(AGE_HEADER.length);
      const { bytesRead } = await handle.read(head, 0, head.length, 0);
      if (file.name.endsWith(AGE_SUFFIX) && startsAsAge(head.subarray(0, bytesRead))) continue;
    } finally {
      await handle.close();
    }
    throw failure('AGE_CLAIM_FALSE', `${what}: its metadata says ${file.name} is encrypted with age, but the stored file is not an age file`, {
      fix: 'the entry was edited or damaged: do not trust it; restore from another backup, and check who can write to the store',
    });
  }
}
