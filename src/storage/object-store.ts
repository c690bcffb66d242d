import { createHash } from 'node:crypto';
import { mkdir, open, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { failure, usageError } from '../errors';
import type { StorageSettings } from '../settings/resolve';
import { S3Client, S3RequestError, type ObjectAttributes, type ObjectHead, type RemoteObject, type S3ClientOptions, type UploadedPart } from './s3';

/** What sync, compare and fetch need from a bucket; the S3 driver is the one implementation today. */
export interface ObjectStore {
  /** `s3://bucket/prefix`, for messages. */
  readonly location: string;
  list(prefix: string): AsyncIterable<RemoteObject>;
  head(key: string): Promise<ObjectHead | undefined>;
  get(key: string): Promise<{ body: Readable; head: ObjectHead }>;
  /** Uploads a file whose sha256 is known; the object only becomes visible once complete. */
  putFile(key: string, path: string, expected: { sha256: string; bytes: number }, onBytes?: (sentSoFar: number) => void): Promise<PutResult>;
}

export interface PutResult {
  bytes: number;
  parts: number;
  /** Parts found already uploaded by an interrupted earlier run and not sent again. */
  resumedParts: number;
}

export const DEFAULT_PART_SIZE = 8 * 1024 * 1024;
/** Parts in flight at once: enough to overlap hashing, network and the server's disk. */
export const DEFAULT_CONCURRENCY = 4;
/** S3's floor for every part but the last. */
const MIN_PART_SIZE = 5 * 1024 * 1024;
const MAX_PARTS = 10_000;

export interface S3ObjectStoreOptions {
  partSize?: number;
  concurrency?: number;
  /** Directory for resume journals of multipart uploads in progress (small JSON files). */
  journalDir: string;
  /** Test seam: the SDK request handler. */
  requestHandler?: S3ClientOptions['requestHandler'];
  /** Keys per listing page (tests use a small one to cross pages). */
  pageSize?: number;
  /** Registers secrets the credential chain resolves with the logger's masker. */
  onSecret?: (value: string) => void;
  warn?: (message: string) => void;
}

/** The journal of one multipart upload, rewritten after every part, so a rerun resumes it. */
interface UploadJournal {
  key: string;
  uploadId: string;
  sha256: string;
  bytes: number;
  partSize: number;
  parts: UploadedPart[];
}

/**
 * Builds the S3 driver for reviewed settings. Credentials: the variables lifeline.yml names
 * (missing ones are a usage error, exit 2, before any request); otherwise the default AWS
 * variables when both are set; otherwise the SDK's node provider chain (storage.profile or
 * AWS_PROFILE in the shared files, web identity, container or instance metadata).
 */
export function s3StoreFor(storage: StorageSettings, options: S3ObjectStoreOptions): S3ObjectStore {
  const named = storage.accessKeyIdEnv !== undefined || storage.secretAccessKeyEnv !== undefined;
  if (!storage.credentials && named) {
    throw usageError(
      'STORAGE_CREDENTIALS_MISSING',
      `the object-store credentials are not set: ${storage.credentialEnv.accessKeyId} and ${storage.credentialEnv.secretAccessKey} must both be in the environment`,
      `export ${storage.credentialEnv.accessKeyId}=... and ${storage.credentialEnv.secretAccessKey}=... (a key scoped to s3://${storage.bucket}/${storage.prefix}), or name other variables in storage.accessKeyIdEnv / secretAccessKeyEnv`,
    );
  }
  // Half a key pair in the default variables is a mistake, not a reason to go looking elsewhere.
  const halfPair = !storage.credentials && !named && !storage.profile && Boolean(process.env.AWS_ACCESS_KEY_ID) !== Boolean(process.env.AWS_SECRET_ACCESS_KEY);
  if (halfPair) {
    const [set, unset] = process.env.AWS_ACCESS_KEY_ID ? ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY'] : ['AWS_SECRET_ACCESS_KEY', 'AWS_ACCESS_KEY_ID'];
    throw usageError(
      'STORAGE_CREDENTIALS_MISSING',
      `${set} is set but ${unset} is not: the object-store key pair is incomplete`,
      `export ${unset}=... as well (the pair belongs together), or unset ${set} to use storage.profile or another credential source`,
    );
  }
  const client = new S3Client({
    endpoint: storage.endpoint,
    region: storage.region,
    bucket: storage.bucket,
    credentials: storage.credentials,
    profile: storage.profile,
    pathStyle: storage.pathStyle,
    maxAttempts: storage.maxAttempts,
    checksums: storage.checksums,
    requestHandler: options.requestHandler,
    pageSize: options.pageSize,
    onSecret: options.onSecret,
    warn: options.warn,
  });
  return new S3ObjectStore(client, storage, options);
}

export class S3ObjectStore implements ObjectStore {
  readonly location: string;
  private readonly partSize: number;
  private readonly concurrency: number;

  constructor(
    readonly client: S3Client,
    private readonly storage: Pick<StorageSettings, 'bucket' | 'prefix' | 'serverSideEncryption' | 'objectLock'>,
    private readonly options: S3ObjectStoreOptions,
  ) {
    this.location = `s3://${storage.bucket}/${storage.prefix}`;
    this.partSize = Math.max(options.partSize ?? DEFAULT_PART_SIZE, MIN_PART_SIZE);
    this.concurrency = Math.max(1, options.concurrency ?? DEFAULT_CONCURRENCY);
  }

  list(prefix: string): AsyncIterable<RemoteObject> {
    return this.client.listObjects(prefix);
  }

  head(key: string): Promise<ObjectHead | undefined> {
    return this.client.headObject(key);
  }

  get(key: string): Promise<{ body: Readable; head: ObjectHead }> {
    return this.client.getObject(key);
  }

  /** What every new object carries: its sha256 as metadata, encryption and retention as configured. */
  private objectAttributes(sha256: string): ObjectAttributes {
    return {
      metadata: { sha256 },
      serverSideEncryption: this.storage.serverSideEncryption,
      objectLock: this.storage.objectLock ? { mode: this.storage.objectLock.mode, retainUntil: new Date(Math.ceil((Date.now() + this.storage.objectLock.days * 86400_000) / 1000) * 1000) } : undefined,
    };
  }

  /** `onBytes` hears the bytes the bucket holds so far (parts sent or resumed), for progress. */
  async putFile(key: string, path: string, expected: { sha256: string; bytes: number }, onBytes?: (sentSoFar: number) => void): Promise<PutResult> {
    const partSize = Math.max(this.partSize, Math.ceil(expected.bytes / MAX_PARTS));
    if (expected.bytes <= partSize) {
      const put = await this.putSingle(key, path, expected);
      onBytes?.(put.bytes);
      return put;
    }
    try {
      return await this.putMultipart(key, path, expected, partSize, onBytes);
    } catch (error) {
      // The server forgot the upload we journaled (expired or aborted): start it again cleanly, once.
      if (error instanceof S3RequestError && error.code === 'NoSuchUpload') {
        await this.dropJournal(key);
        return this.putMultipart(key, path, expected, partSize, onBytes);
      }
      throw error;
    }
  }

  private async putSingle(key: string, path: string, expected: { sha256: string; bytes: number }): Promise<PutResult> {
    const body = await readFile(path);
    const sha256 = createHash('sha256').update(body).digest();
    if (sha256.toString('hex') !== expected.sha256 || body.length !== expected.bytes) throw changedWhileSyncing(path);
    await this.client.putObject(key, body, this.objectAttributes(expected.sha256), { md5Base64: createHash('md5').update(body).digest('base64'), sha256Base64: sha256.toString('base64') });
    return { bytes: body.length, parts: 1, resumedParts: 0 };
  }

  private async putMultipart(key: string, path: string, expected: { sha256: string; bytes: number }, partSize: number, onBytes?: (sentSoFar: number) => void): Promise<PutResult> {
    let sentSoFar = 0;
    let journal = await this.readJournal(key);
    if (journal && (journal.sha256 !== expected.sha256 || journal.bytes !== expected.bytes || journal.partSize !== partSize)) {
      await this.client.abortMultipartUpload(key, journal.uploadId);
      journal = undefined;
    }
    if (journal) {
      // The server's own list is the truth where it keeps one; otherwise the journal's ETags are.
      const listed = await this.client.listParts(key, journal.uploadId);
      if (listed) journal.parts = listed;
    } else {
      const uploadId = await this.client.createMultipartUpload(key, this.objectAttributes(expected.sha256));
      journal = { key, uploadId, sha256: expected.sha256, bytes: expected.bytes, partSize, parts: [] };
      await this.writeJournal(journal);
    }
    const uploadId = journal.uploadId;
    const already = new Map(journal.parts.map((p) => [p.partNumber, p]));
    const wholeFile = createHash('sha256');
    const parts: UploadedPart[] = [];
    const inFlight = new Set<Promise<void>>();
    // A fixed pool of part buffers, reused: memory is bounded by design, not by when GC runs.
    const freeBuffers = Array.from({ length: this.concurrency }, () => Buffer.allocUnsafe(partSize));
    let journalWrites = Promise.resolve();
    let resumedParts = 0;
    const handle = await open(path, 'r');
    try {
      const partCount = Math.ceil(expected.bytes / partSize);
      // Parts are read and hashed in order (the whole-file hash needs that) and sent a few at a
      // time: memory stays at `concurrency` parts while the network and the server overlap.
      for (let partNumber = 1; partNumber <= partCount; partNumber++) {
        while (freeBuffers.length === 0) await Promise.race(inFlight);
        const length = Math.min(partSize, expected.bytes - (partNumber - 1) * partSize);
        const buffer = freeBuffers.pop()!;
        const body = buffer.subarray(0, length);
        const { bytesRead } = await handle.read(buffer, 0, length, (partNumber - 1) * partSize);
        if (bytesRead !== length) throw changedWhileSyncing(path);
        wholeFile.update(body);
        const md5 = createHash('md5').update(body).digest();
        const partSha256 = createHash('sha256').update(body).digest();
        const checksumSha256 = partSha256.toString('base64');
        const previous = already.get(partNumber);
        if (previous && unquote(previous.etag) === md5.toString('hex')) {
          parts.push({ partNumber, etag: previous.etag, checksumSha256 });
          resumedParts++;
          onBytes?.((sentSoFar += length));
          freeBuffers.push(buffer);
          continue;
        }
        const sending: Promise<void> = this.client
          .uploadPart(key, uploadId, partNumber, body, { md5Base64: md5.toString('base64'), sha256Base64: checksumSha256 })
          .then((etag) => {
            const part = { partNumber, etag, checksumSha256 };
            parts.push(part);
            onBytes?.((sentSoFar += length));
            journal.parts = [...journal.parts.filter((p) => p.partNumber !== partNumber), part];
            journalWrites = journalWrites.then(() => this.writeJournal(journal));
            return journalWrites;
          })
          .finally(() => {
            inFlight.delete(sending);
            freeBuffers.push(buffer);
          });
        inFlight.add(sending);
      }
      await Promise.all(inFlight);
    } finally {
      // Never leave a part request or a journal write running behind a failure.
      await Promise.allSettled([...inFlight, journalWrites]);
      await handle.close();
    }
    parts.sort((a, b) => a.partNumber - b.partNumber);
    if (wholeFile.digest('hex') !== expected.sha256) {
      await this.client.abortMultipartUpload(key, uploadId);
      await this.dropJournal(key);
      throw changedWhileSyncing(path);
    }
    await this.client.completeMultipartUpload(key, uploadId, parts);
    await this.dropJournal(key);
    return { bytes: expected.bytes, parts: parts.length, resumedParts };
  }

  private journalPath(key: string): string {
    return join(this.options.journalDir, `${createHash('sha256').update(`${this.storage.bucket}/${key}`).digest('hex').slice(0, 32)}.json`);
  }

  private async readJournal(key: string): Promise<UploadJournal | undefined> {
    try {
      const journal = JSON.parse(await readFile(this.journalPath(key), 'utf8')) as UploadJournal;
      return journal.key === key ? journal : undefined;
    } catch {
      return undefined; // missing or torn: start a fresh upload
    }
  }

  private async writeJournal(journal: UploadJournal): Promise<void> {
    await mkdir(this.options.journalDir, { recursive: true, mode: 0o700 });
    const path = this.journalPath(journal.key);
    await writeFile(`${path}.tmp`, JSON.stringify(journal), { mode: 0o600 });
    await rename(`${path}.tmp`, path);
  }

  private async dropJournal(key: string): Promise<void> {
    await rm(this.journalPath(key), { force: true });
  }
}

function unquote(etag: string): string {
  return etag.replace(/"/g, '').toLowerCase();
}

function changedWhileSyncing(path: string) {
  return failure('LOCAL_FILE_CHANGED', `${path} no longer matches its SHA256SUMS line while being uploaded; nothing was completed remotely`, {
    fix: 'run `lifeline verify` on the entry; a catalog file must never change after it is written',
  });
}
