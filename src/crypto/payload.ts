import { createHash } from 'node:crypto';
import { Transform, type Readable } from 'node:stream';
import { entryFilePath } from '../catalog/confine';
import { failure } from '../errors';
import type { BackupFile } from '../backup/metadata';
import type { Runner, ToolInvocation, ToolResult } from '../runner/runner';
import { decryptFile, identityMatches, identityRequired, IDENTITY_FIX, type AgeIdentity } from './age';

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
