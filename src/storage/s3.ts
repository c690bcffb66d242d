import type { S3Client as SdkS3Client, S3ClientConfig } from '@aws-sdk/client-s3';
import { Readable } from 'node:stream';
import { failure, LifelineError, usageError } from '../errors';
import { providerCode } from '../error-codes';

export interface S3Credentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
}

export const DEFAULT_MAX_ATTEMPTS = 5;

export interface S3ClientOptions {
  /** An S3-compatible endpoint; without it, AWS's endpoint for the region. */
  endpoint?: string;
  region: string;
  bucket: string;
  /**
   * Static keys (the variables Lifeline documents). Without them, the AWS SDK's node provider
   * chain: environment, shared config/credentials files (`profile`), web identity, container and
   * instance metadata.
   */
  credentials?: S3Credentials;
  /** A profile of the shared config files, for the provider chain. */
  profile?: string;
  /** Bucket in the path rather than the host name; default: on with a custom endpoint. */
  pathStyle?: boolean;
  /** Attempts per request including the first (standard retry mode, exponential backoff with jitter). */
  maxAttempts?: number;
  /** `sha256` sends x-amz-checksum-sha256 on every upload; `none` sends no flexible checksum at all. */
  checksums?: 'sha256' | 'none';
  /** Called with each secret the provider chain resolves, so loggers mask it. */
  onSecret?: (value: string) => void;
  /** Where the chain's own warnings go (e.g. both a profile and key variables set). */
  warn?: (message: string) => void;
  /** Test seam: the SDK request handler (or its options). */
  requestHandler?: S3ClientConfig['requestHandler'];
  /** Keys per ListObjectsV2 page (S3's maximum and default is 1000). */
  pageSize?: number;
}

export interface RemoteObject {
  key: string;
  size: number;
  etag: string;
}

export interface ObjectHead {
  size: number;
  etag: string;
  /** `x-amz-meta-*` values, keys without the prefix. */
  metadata: Record<string, string>;
  /** The server's own SHA-256 checksum (base64), where it keeps one. */
  checksumSha256?: string;
}

export interface UploadedPart {
  partNumber: number;
  etag: string;
  checksumSha256?: string;
}

/** What every new object carries: its sha256 as metadata, and the bucket's encryption and retention settings. */
export interface ObjectAttributes {
  metadata: Record<string, string>;
  serverSideEncryption?: 'AES256' | 'aws:kms';
  objectLock?: { mode: 'GOVERNANCE' | 'COMPLIANCE'; retainUntil: Date };
}

/** A body with the checksums computed while it was read: Content-MD5 and (unless switched off) x-amz-checksum-sha256. */
export interface BodyChecksums {
  md5Base64: string;
  sha256Base64: string;
}

/** An S3 error response, kept structured so callers can tell "not there" from "not supported". */
export class S3RequestError extends LifelineError {
  constructor(
    readonly status: number,
    s3Code: string,
    message: string,
    options: { fix?: string; usage?: boolean; cause?: unknown } = {},
  ) {
    super(options.usage ? 'usage' : 'failed', message, { code: providerCode(s3Code), fix: options.fix ?? fixForS3Error(status, s3Code), cause: options.cause });
    this.name = 'S3RequestError';
  }
}

type SdkModule = typeof import('@aws-sdk/client-s3');

/** The provider rejected who we are: a configuration problem (exit 2), never worth a retry. */
const CREDENTIAL_CODES = new Set(['SignatureDoesNotMatch', 'InvalidAccessKeyId', 'InvalidToken', 'ExpiredToken', 'InvalidClientTokenId', 'AuthorizationHeaderMalformed', 'InvalidSecurity']);
const CHECKSUM_CODES = new Set(['XAmzContentChecksumMismatch', 'XAmzContentSHA256Mismatch', 'BadDigest', 'InvalidDigest']);

const CREDENTIAL_FIX =
  'check the access key / secret key pair (the variables storage.accessKeyIdEnv and storage.secretAccessKeyEnv name, default AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or storage.profile in the shared config files): the key id must exist at this provider and the secret must be its own; also check that the clock is right (signatures expire)';

export function fixForS3Error(status: number, code: string): string {
  if (code === 'NoSuchBucket') return 'check storage.bucket and storage.endpoint/region in lifeline.yml';
  if (CREDENTIAL_CODES.has(code)) return CREDENTIAL_FIX;
  if (code === 'RequestTimeTooSkewed') return "the host's clock is off by more than 15 minutes: fix it (timedatectl, chrony) and run the command again";
  if (CHECKSUM_CODES.has(code))
    return 'the bytes changed on the way (or the provider computes checksums differently): run the command again; if it persists with an S3-compatible provider, set storage.checksums: none';
  if (status === 401 || status === 403) return "check that the key's policy allows list, get and put under storage.prefix (see docs/off-host-storage.md), and the access key / secret pair";
  if (status === 501 || code === 'NotImplemented') return 'the provider does not support a request Lifeline made; if it names a checksum, set storage.checksums: none';
  if (status >= 500) return 'the object store kept failing; run the command again later (uploads resume where they stopped), or raise storage.maxAttempts';
  return 'check the storage section of lifeline.yml';
}

const UNREACHABLE_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ENOTFOUND', 'EAI_AGAIN', 'ETIMEDOUT', 'EPIPE', 'EHOSTUNREACH', 'ENETUNREACH', 'ECONNABORTED', 'UND_ERR_SOCKET']);

const CREDENTIALS_FIX =
  'export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or the variables storage.accessKeyIdEnv / secretAccessKeyEnv name), or set storage.profile to a profile of the shared config files (AWS_CONFIG_FILE, AWS_SHARED_CREDENTIALS_FILE), or run where web identity (aws-actions/configure-aws-credentials) or an instance role provides them';

/** The provider chain found nothing (exit 2): says where it looked. */
function noCredentials(error: unknown, profile: string | undefined, where: string): LifelineError {
  const reason = (error as Error)?.message ?? String(error);
  const files = `${process.env.AWS_CONFIG_FILE ?? '~/.aws/config'} and ${process.env.AWS_SHARED_CREDENTIALS_FILE ?? '~/.aws/credentials'}`;
  const message = profile
    ? `storage.profile "${profile}" gave no object-store credentials for ${where} (looked in ${files}): ${reason}`
    : `no object-store credentials were found for ${where}: no AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, no profile in ${files}, no web identity, container or instance credentials (${reason})`;
  return usageError(
    'STORAGE_CREDENTIALS_MISSING',
    message,
    profile ? `add a [${profile}] section with aws_access_key_id and aws_secret_access_key (or a role) to those files, or correct storage.profile` : CREDENTIALS_FIX,
  );
}

/**
 * One SDK error in Lifeline's terms: an S3RequestError for an answer from the provider, exit 2
 * for credentials that cannot be found or are refused, STORAGE_UNREACHABLE when no answer came.
 * Messages carry codes and the provider's text, never a key.
 */
export function translateS3Error(error: unknown, what: string, where: string, secrets: readonly string[] = []): LifelineError {
  if (error instanceof LifelineError) return error;
  const e = error as { name?: string; message?: string; code?: string; $metadata?: { httpStatusCode?: number; attempts?: number }; $response?: unknown };
  const scrub = (text: string) => secrets.reduce((out, s) => (s ? out.split(s).join('***') : out), text);
  const attempts = e.$metadata?.attempts;
  const tries = attempts && attempts > 1 ? ` (after ${attempts} attempts)` : '';
  if (e.name === 'CredentialsProviderError' || e.name === 'TokenProviderError') {
    return usageError('STORAGE_CREDENTIALS_MISSING', `no object-store credentials were found for ${where}: ${scrub(e.message ?? 'the provider chain found none')}`, CREDENTIALS_FIX);
  }
  const status = e.$metadata?.httpStatusCode;
  if (status !== undefined && status >= 300) {
    const code = e.name && e.name !== 'Error' && e.name !== 'Unknown' && e.name !== 'UnknownError' ? e.name : status === 404 ? 'NotFound' : `HTTP${status}`;
    const message = scrub(e.message && e.message !== 'UnknownError' ? e.message : `HTTP ${status}`);
    return new S3RequestError(status, code, `${what}: ${status} ${code}: ${message}${tries}`, { usage: CREDENTIAL_CODES.has(code), cause: error });
  }
  const nodeCode = e.code ?? (e as { cause?: { code?: string } }).cause?.code;
  if ((nodeCode && UNREACHABLE_CODES.has(nodeCode)) || e.name === 'TimeoutError' || e.name === 'RequestTimeout') {
    return failure('STORAGE_UNREACHABLE', `cannot reach the object store at ${where}: ${nodeCode ?? e.name}: ${scrub(e.message ?? '')}${tries}`, {
      cause: error,
      fix: 'check storage.endpoint and the network path to it, then run the command again (uploads resume)',
    });
  }
  return failure('STORAGE_ERROR', `${what} against ${where} failed: ${scrub(e.name ?? 'Error')}: ${scrub(e.message ?? String(error))}${tries}`, {
    cause: error,
    fix: 'check the storage section of lifeline.yml and run the command again (uploads resume)',
  });
}

/**
 * Lifeline's S3 client: the AWS SDK's S3Client (SigV4, XML, retries with backoff, the credential
 * chain) behind the handful of calls sync, compare and fetch need. Upload bodies are buffers of
 * at most one part (retries can resend them); downloads are streams.
 */
export class S3Client {
  readonly checksums: 'sha256' | 'none';
  private readonly where: string;
  private readonly secrets: string[] = [];
  private loaded?: Promise<{ client: SdkS3Client; sdk: SdkModule }>;

  constructor(readonly options: S3ClientOptions) {
    this.checksums = options.checksums ?? 'sha256';
    this.where = options.endpoint ? `${options.endpoint.replace(/\/+$/, '')} (bucket ${options.bucket})` : `s3://${options.bucket} (${options.region})`;
    if (options.credentials) this.secrets.push(options.credentials.secretAccessKey, ...(options.credentials.sessionToken ? [options.credentials.sessionToken] : []));
  }

  /** The SDK is loaded on first use: commands that never touch a bucket do not parse it. */
  private sdk(): Promise<{ client: SdkS3Client; sdk: SdkModule }> {
    this.loaded ??= this.load();
    return this.loaded;
  }

  private async load(): Promise<{ client: SdkS3Client; sdk: SdkModule }> {
    const options = this.options;
    const sdk = await import('@aws-sdk/client-s3');
    let credentials: S3ClientConfig['credentials'];
    if (options.credentials) credentials = { ...options.credentials };
    else {
      const { fromNodeProviderChain } = await import('@aws-sdk/credential-providers');
      const chain = fromNodeProviderChain({
        profile: options.profile,
        logger: { debug: () => {}, info: () => {}, warn: (m: string) => options.warn?.(m), error: () => {} },
      });
      credentials = async (identityProperties?: Record<string, unknown>) => {
        let resolved: Awaited<ReturnType<typeof chain>>;
        try {
          resolved = await chain(identityProperties);
        } catch (error) {
          throw noCredentials(error, options.profile, this.where);
        }
        for (const secret of [resolved.secretAccessKey, resolved.sessionToken]) {
          if (secret && !this.secrets.includes(secret)) {
            this.secrets.push(secret);
            options.onSecret?.(secret);
          }
        }
        return resolved;
      };
    }
    const client = new sdk.S3Client({
      region: options.region,
      endpoint: options.endpoint,
      forcePathStyle: options.pathStyle ?? options.endpoint !== undefined,
      credentials,
      maxAttempts: options.maxAttempts ?? DEFAULT_MAX_ATTEMPTS,
      retryMode: 'standard',
      // Recent SDKs add a CRC32 checksum (and aws-chunked bodies) to every upload by default,
      // which many S3-compatible servers reject: Lifeline sends its own SHA-256 instead, or none.
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      requestHandler: options.requestHandler ?? { connectionTimeout: 10_000, requestTimeout: 300_000 },
    });
    return { client, sdk };
  }

  private async send<T>(what: string, run: (client: SdkS3Client, sdk: SdkModule) => Promise<T>): Promise<T> {
    const { client, sdk } = await this.sdk();
    try {
      return await run(client, sdk);
    } catch (error) {
      throw translateS3Error(error, what, this.where, this.secrets);
    }
  }

  private objectParams(attributes: ObjectAttributes) {
    return {
      Metadata: attributes.metadata,
      ServerSideEncryption: attributes.serverSideEncryption,
      ObjectLockMode: attributes.objectLock?.mode,
      ObjectLockRetainUntilDate: attributes.objectLock?.retainUntil,
    };
  }

  async putObject(key: string, body: Uint8Array, attributes: ObjectAttributes, checksums: BodyChecksums): Promise<string> {
    const out = await this.send(`PUT ${key}`, (client, sdk) =>
      client.send(
        new sdk.PutObjectCommand({
          Bucket: this.options.bucket,
          Key: key,
          Body: body,
          ContentLength: body.length,
          ContentMD5: checksums.md5Base64,
          ...(this.checksums === 'sha256' ? { ChecksumSHA256: checksums.sha256Base64 } : {}),
          ...this.objectParams(attributes),
        }),
      ),
    );
    return out.ETag ?? '';
  }

  async createMultipartUpload(key: string, attributes: ObjectAttributes): Promise<string> {
    const out = await this.send(`CreateMultipartUpload ${key}`, (client, sdk) =>
      client.send(
        new sdk.CreateMultipartUploadCommand({
          Bucket: this.options.bucket,
          Key: key,
          ...(this.checksums === 'sha256' ? { ChecksumAlgorithm: 'SHA256' as const } : {}),
          ...this.objectParams(attributes),
        }),
      ),
    );
    if (!out.UploadId) throw failure('STORAGE_PROTOCOL', `the object store did not return an UploadId for ${key}`);
    return out.UploadId;
  }

  async uploadPart(key: string, uploadId: string, partNumber: number, body: Uint8Array, checksums: BodyChecksums): Promise<string> {
    const out = await this.send(`UploadPart ${key} part ${partNumber}`, (client, sdk) =>
      client.send(
        new sdk.UploadPartCommand({
          Bucket: this.options.bucket,
          Key: key,
          UploadId: uploadId,
          PartNumber: partNumber,
          Body: body,
          ContentLength: body.length,
          ContentMD5: checksums.md5Base64,
          ...(this.checksums === 'sha256' ? { ChecksumSHA256: checksums.sha256Base64 } : {}),
        }),
      ),
    );
    return out.ETag ?? '';
  }

  /** Parts the server holds for an upload; undefined when the server cannot list them (then the local journal decides). */
  async listParts(key: string, uploadId: string): Promise<UploadedPart[] | undefined> {
    const parts: UploadedPart[] = [];
    let marker: string | undefined;
    try {
      for (;;) {
        const page = await this.send(`ListParts ${key}`, (client, sdk) =>
          client.send(new sdk.ListPartsCommand({ Bucket: this.options.bucket, Key: key, UploadId: uploadId, PartNumberMarker: marker })),
        );
        for (const part of page.Parts ?? []) parts.push({ partNumber: part.PartNumber ?? 0, etag: part.ETag ?? '', checksumSha256: part.ChecksumSHA256 });
        if (!page.IsTruncated || !page.NextPartNumberMarker) return parts;
        marker = page.NextPartNumberMarker;
      }
    } catch (error) {
      if (error instanceof S3RequestError && (error.status === 405 || error.status === 501)) return undefined;
      throw error;
    }
  }

  async completeMultipartUpload(key: string, uploadId: string, parts: UploadedPart[]): Promise<void> {
    // The SDK also turns S3's "200 with an <Error> body" into an exception.
    await this.send(`CompleteMultipartUpload ${key}`, (client, sdk) =>
      client.send(
        new sdk.CompleteMultipartUploadCommand({
          Bucket: this.options.bucket,
          Key: key,
          UploadId: uploadId,
          MultipartUpload: { Parts: parts.map((p) => ({ PartNumber: p.partNumber, ETag: p.etag, ...(this.checksums === 'sha256' && p.checksumSha256 ? { ChecksumSHA256: p.checksumSha256 } : {}) })) },
        }),
      ),
    );
  }

  async abortMultipartUpload(key: string, uploadId: string): Promise<void> {
    try {
      await this.send(`AbortMultipartUpload ${key}`, (client, sdk) => client.send(new sdk.AbortMultipartUploadCommand({ Bucket: this.options.bucket, Key: key, UploadId: uploadId })));
    } catch (error) {
      if (!(error instanceof S3RequestError && error.status === 404)) throw error;
    }
  }

  async headObject(key: string): Promise<ObjectHead | undefined> {
    try {
      const out = await this.send(`HEAD ${key}`, (client, sdk) => client.send(new sdk.HeadObjectCommand({ Bucket: this.options.bucket, Key: key, ChecksumMode: 'ENABLED' })));
      return { size: out.ContentLength ?? 0, etag: out.ETag ?? '', metadata: out.Metadata ?? {}, checksumSha256: out.ChecksumSHA256 || undefined };
    } catch (error) {
      if (error instanceof S3RequestError && error.status === 404) return undefined;
      throw error;
    }
  }

  /** The object's bytes as a stream (never buffered whole), plus its metadata. */
  async getObject(key: string): Promise<{ body: Readable; head: ObjectHead }> {
    const out = await this.send(`GET ${key}`, (client, sdk) => client.send(new sdk.GetObjectCommand({ Bucket: this.options.bucket, Key: key })));
    const raw = out.Body as unknown;
    const body = raw instanceof Readable ? raw : raw ? Readable.fromWeb(raw as never) : Readable.from([]);
    return { body, head: { size: out.ContentLength ?? 0, etag: out.ETag ?? '', metadata: out.Metadata ?? {}, checksumSha256: out.ChecksumSHA256 || undefined } };
  }

  async deleteObject(key: string): Promise<void> {
    await this.send(`DELETE ${key}`, (client, sdk) => client.send(new sdk.DeleteObjectCommand({ Bucket: this.options.bucket, Key: key })));
  }

  /** Every object under a prefix (ListObjectsV2, following continuation tokens page by page). */
  async *listObjects(prefix: string): AsyncGenerator<RemoteObject> {
    let token: string | undefined;
    for (;;) {
      const page = await this.send(`ListObjectsV2 ${prefix || '(bucket)'}`, (client, sdk) =>
        client.send(new sdk.ListObjectsV2Command({ Bucket: this.options.bucket, Prefix: prefix, ContinuationToken: token, MaxKeys: this.options.pageSize })),
      );
      // A 200 that is not a ListBucketResult (a captive portal, a web server at the endpoint) must
      // not read as an empty bucket: sync would take every entry for missing.
      if (page.Name === undefined && page.KeyCount === undefined && page.MaxKeys === undefined) {
        throw failure('STORAGE_PROTOCOL', `the endpoint answered the listing of ${prefix || '(bucket)'} at ${this.where} with something that is not an S3 ListBucketResult`, {
          fix: 'check storage.endpoint: it must be the S3 API endpoint of the provider (not its web console), and storage.pathStyle',
        });
      }
      for (const object of page.Contents ?? []) yield { key: object.Key ?? '', size: object.Size ?? 0, etag: object.ETag ?? '' };
      if (!page.IsTruncated) return;
      if (!page.NextContinuationToken || page.NextContinuationToken === token) {
        throw failure('STORAGE_PROTOCOL', `the object store said the listing of ${prefix} goes on but gave no new continuation token`, {
          fix: 'the provider is not S3-compatible in listing; report it',
        });
      }
      token = page.NextContinuationToken;
    }
  }

  destroy(): void {
    void this.loaded?.then(({ client }) => client.destroy());
  }
}
