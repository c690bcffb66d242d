import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, open, rename, rm, writeFile, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { Transform, type Readable, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';

/** Catalog files are private to the store's owner whatever the umask (it can only clear bits). */
export const PRIVATE_FILE_MODE = 0o600;
export const PRIVATE_DIR_MODE = 0o700;

/** Creates a directory (and missing parents) as 0700. Existing directories are left as they are. */
export async function mkdirPrivate(path: string): Promise<void> {
  await mkdir(path, { recursive: true, mode: PRIVATE_DIR_MODE });
}

/** Flushes a file's (or directory's) contents to disk so a rename after it is durable. */
export async function fsyncPath(path: string): Promise<void> {
  const handle = await open(path, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Writes a small file atomically: temporary name, fsync, rename, fsync the directory. */
export async function writeFileAtomic(path: string, data: string | Uint8Array): Promise<void> {
  await mkdirPrivate(dirname(path));
  const tmp = join(dirname(path), `.${basename(path)}.tmp-${process.pid}-${Date.now()}`);
  try {
    await writeFile(tmp, data, { mode: PRIVATE_FILE_MODE, flag: 'wx' });
    await fsyncPath(tmp);
    await rename(tmp, path);
  } catch (error) {
    await rm(tmp, { force: true });
    throw error;
  }
  await fsyncPath(dirname(path));
}

export interface HashedFile {
  sha256: string;
  bytes: number;
}

/** A pass-through that hashes and counts what flows through it, so no second read is needed. */
export class HashingTransform extends Transform {
  private readonly hash = createHash('sha256');
  bytes = 0;

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null, data?: Buffer) => void): void {
    this.hash.update(chunk);
    this.bytes += chunk.length;
    callback(null, chunk);
  }

  digest(): string {
    return this.hash.digest('hex');
  }
}

/** Streams `source` into `path`, hashing in the same pass, then fsyncs. */
export async function streamToFile(source: Readable, path: string, onProgress?: (bytes: number) => void): Promise<HashedFile> {
  const hasher = new HashingTransform();
  if (onProgress) hasher.on('data', () => onProgress(hasher.bytes));
  await pipeline(source, hasher, createWriteStream(path, { flags: 'wx', mode: PRIVATE_FILE_MODE }));
  await fsyncPath(path);
  return { sha256: hasher.digest(), bytes: hasher.bytes };
}

/** A writable file that hashes what is written, for producers that push rather than offer a readable. */
export function hashingFileWriter(path: string): { stream: Writable; done: () => Promise<HashedFile> } {
  const hasher = new HashingTransform();
  const file = createWriteStream(path, { flags: 'wx', mode: PRIVATE_FILE_MODE });
  const finished = pipeline(hasher, file);
  // A write error (ENOSPC) can land before the producer calls done(): it is reported there, not as an unhandled rejection.
  finished.catch(() => {});
  return {
    stream: hasher,
    async done() {
      await finished;
      await fsyncPath(path);
      return { sha256: hasher.digest(), bytes: hasher.bytes };
    },
  };
}

/** sha256 of a file, read in 1 MiB chunks (bounded memory). */
export async function sha256File(path: string): Promise<HashedFile> {
  const handle = await open(path, 'r');
  try {
    return await sha256Handle(handle);
  } finally {
    await handle.close();
  }
}

/**
 * sha256 of an open file from its start, read into one reused 1 MiB buffer. A read stream would
 * allocate a fresh buffer per chunk, and at disk speed the garbage of a multi-GB archive lifts the
 * process's resident memory by some 70 MB before the collector catches up (measured on a restore's
 * checksum pass); one buffer keeps it flat.
 */
export async function sha256Handle(handle: FileHandle): Promise<HashedFile> {
  const hash = createHash('sha256');
  const buffer = Buffer.allocUnsafe(1024 * 1024);
  let bytes = 0;
  for (;;) {
    const { bytesRead } = await handle.read(buffer, 0, buffer.length, bytes);
    if (bytesRead === 0) break;
    hash.update(buffer.subarray(0, bytesRead));
    bytes += bytesRead;
  }
  return { sha256: hash.digest('hex'), bytes };
}
