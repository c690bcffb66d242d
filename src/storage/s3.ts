import { createHash, createHmac } from 'node:crypto';
import { Readable } from 'node:stream';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { failure, LifelineError } from '../errors';

export interface S3Credentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
}

export interface S3ClientOptions {
  /** An S3-compatible endpoint (path-style addressing); without it, AWS's virtual-hosted endpoint for the region. */
  endpoint?: string;
  region: string;
  bucket: string;
  credentials: S3Credentials;
  /** Injected for tests that cut a transfer off mid-way; defaults to the global fetch. */
  fetch?: typeof fetch;
  /** Fixed clock for signature test vectors. */
  now?: () => Date;
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

interface SendOptions {
  query?: Record<string, string>;
  headers?: Record<string, string>;
  body?: Uint8Array;
  /** The body's sha256 (hex) when the caller already has it, so large parts are not hashed twice. */
  bodySha256?: string;
}

const EMPTY_SHA256 = createHash('sha256').update('').digest('hex');

/** An S3 error response (exit 1), kept structured so callers can tell "not there" from "not supported". */
export class S3RequestError extends LifelineError {
  constructor(
    readonly status: number,
    s3Code: string,
    message: string,
  ) {
    super('failed', message, { code: s3Code, fix: fixForS3Error(status, s3Code) });
    this.name = 'S3RequestError';
  }
}

function fixForS3Error(status: number, code: string): string {
  if (code === 'NoSuchBucket') return 'check storage.bucket and storage.endpoint/region in lifeline.yml';
  if (status === 401 || status === 403) return 'check the access key pair and that its policy allows list, get and put under storage.prefix (and that the clock is right: signatures expire)';
  if (status >= 500) return 'the object store failed; run the command again (uploads resume where they stopped)';
  return 'check the storage section of lifeline.yml';
}

/**
 * A minimal S3 client: SigV4-signed requests over node's fetch, with just the calls Lifeline's
 * sync needs. Bodies are buffers of at most one part; downloads are returned as streams.
 */
export class S3Client {
  private readonly fetchImpl: typeof fetch;
  private readonly now: () => Date;

  constructor(readonly options: S3ClientOptions) {
    this.fetchImpl = options.fetch ?? fetch;
    this.now = options.now ?? (() => new Date());
  }

  /** The URL of an object (or of the bucket when key is undefined). */
  url(key?: string, query: Record<string, string> = {}): URL {
    const { endpoint, region, bucket } = this.options;
    const encodedKey = key === undefined ? '' : key.split('/').map(encodeRfc3986).join('/');
    const base = endpoint
      ? `${endpoint.replace(/\/+$/, '')}/${encodeRfc3986(bucket)}${key === undefined ? '' : `/${encodedKey}`}`
      : `https://${bucket}.s3.${region}.amazonaws.com/${encodedKey}`;
    const url = new URL(base);
    for (const [name, value] of Object.entries(query)) url.searchParams.set(name, value);
    return url;
  }

  /** SigV4 headers for one request (exposed for the signature test vectors). */
  sign(method: string, url: URL, headers: Record<string, string>, payloadSha256: string): Record<string, string> {
    const { region, credentials } = this.options;
    const amzDate = this.now().toISOString().replace(/[-:]/g, '').replace(/\.\d+/, '');
    const day = amzDate.slice(0, 8);
    const all: Record<string, string> = { ...headers, host: url.host, 'x-amz-date': amzDate, 'x-amz-content-sha256': payloadSha256 };
    if (credentials.sessionToken) all['x-amz-security-token'] = credentials.sessionToken;
    const lower = Object.fromEntries(Object.entries(all).map(([k, v]) => [k.toLowerCase(), v.trim().replace(/\s+/g, ' ')]));
    const signedNames = Object.keys(lower).sort();
    const canonicalQuery = [...url.searchParams.entries()]
      .map(([k, v]) => [encodeRfc3986(k), encodeRfc3986(v)] as const)
      .sort(([a, av], [b, bv]) => (a === b ? (av < bv ? -1 : 1) : a < b ? -1 : 1))
      .map(([k, v]) => `${k}=${v}`)
      .join('&');
    const canonicalRequest = [method, url.pathname, canonicalQuery, ...signedNames.map((n) => `${n}:${lower[n]}`), '', signedNames.join(';'), payloadSha256].join('\n');
    const scope = `${day}/${region}/s3/aws4_request`;
    const stringToSign = ['AWS4-HMAC-SHA256', amzDate, scope, sha256Hex(canonicalRequest)].join('\n');
    let key: Buffer = hmac(`AWS4${credentials.secretAccessKey}`, day);
    for (const part of [region, 's3', 'aws4_request']) key = hmac(key, part);
    const signature = createHmac('sha256', key).update(stringToSign).digest('hex');
    const { host: _host, ...sent } = lower;
    return { ...sent, authorization: `AWS4-HMAC-SHA256 Credential=${credentials.accessKeyId}/${scope}, SignedHeaders=${signedNames.join(';')}, Signature=${signature}` };
  }

  private async send(method: string, key: string | undefined, options: SendOptions = {}): Promise<Response> {
    const url = this.url(key, options.query);
    const payloadSha256 = options.body ? (options.bodySha256 ?? createHash('sha256').update(options.body).digest('hex')) : EMPTY_SHA256;
    const headers = this.sign(method, url, options.headers ?? {}, payloadSha256);
    let response: Response;
    try {
      response = await this.fetchImpl(url, { method, headers: options.body ? { ...headers, 'content-length': String(options.body.length) } : headers, body: options.body ? streamOf(options.body) : undefined, duplex: 'half' } as RequestInit);
    } catch (error) {
      throw failure('STORAGE_UNREACHABLE', `cannot reach the object store at ${url.origin}: ${(error as Error).cause ?? (error as Error).message}`, {
        cause: error,
        fix: 'check storage.endpoint and the network path to it, then run the command again (uploads resume)',
      });
    }
    if (!response.ok) throw await errorFrom(response, method, key);
    return response;
  }

  async putObject(key: string, body: Uint8Array, headers: Record<string, string>, bodySha256?: string): Promise<string> {
    const response = await this.send('PUT', key, { body, headers, bodySha256 });
    await response.arrayBuffer();
    return response.headers.get('etag') ?? '';
  }

  async createMultipartUpload(key: string, headers: Record<string, string>): Promise<string> {
    const xml = await (await this.send('POST', key, { query: { uploads: '' }, headers })).text();
    const uploadId = xmlValue(xml, 'UploadId');
    if (!uploadId) throw failure('STORAGE_PROTOCOL', `the object store did not return an UploadId for ${key}`);
    return uploadId;
  }

  async uploadPart(key: string, uploadId: string, partNumber: number, body: Uint8Array, headers: Record<string, string>, bodySha256?: string): Promise<string> {
    const response = await this.send('PUT', key, { query: { partNumber: String(partNumber), uploadId }, body, headers, bodySha256 });
    await response.arrayBuffer();
    return response.headers.get('etag') ?? '';
  }

  /** Parts the server holds for an upload; undefined when the server cannot list them (then a local journal decides). */
  async listParts(key: string, uploadId: string): Promise<UploadedPart[] | undefined> {
    const parts: UploadedPart[] = [];
    let marker: string | undefined;
    try {
      for (;;) {
        const query: Record<string, string> = { uploadId };
        if (marker) query['part-number-marker'] = marker;
        const xml = await (await this.send('GET', key, { query })).text();
        for (const block of xmlBlocks(xml, 'Part')) {
          parts.push({ partNumber: Number(xmlValue(block, 'PartNumber')), etag: xmlValue(block, 'ETag') ?? '', checksumSha256: xmlValue(block, 'ChecksumSHA256') });
        }
        if (xmlValue(xml, 'IsTruncated') !== 'true') return parts;
        marker = xmlValue(xml, 'NextPartNumberMarker');
      }
    } catch (error) {
      if (error instanceof S3RequestError && (error.status === 405 || error.status === 501)) return undefined;
      throw error;
    }
  }

  async completeMultipartUpload(key: string, uploadId: string, parts: UploadedPart[]): Promise<void> {
    const body = Buffer.from(
      `<CompleteMultipartUpload xmlns="http://s3.amazonaws.com/doc/2006-03-01/">${parts
        .map((p) => `<Part><PartNumber>${p.partNumber}</PartNumber><ETag>${escapeXml(p.etag)}</ETag>${p.checksumSha256 ? `<ChecksumSHA256>${p.checksumSha256}</ChecksumSHA256>` : ''}</Part>`)
        .join('')}</CompleteMultipartUpload>`,
    );
    const response = await this.send('POST', key, { query: { uploadId }, body, headers: { 'content-type': 'application/xml' } });
    const xml = await response.text();
    // S3 may answer 200 and still report an error in the body.
    if (/<Error>/.test(xml)) throw new S3RequestError(500, xmlValue(xml, 'Code') ?? 'InternalError', `completing ${key} failed: ${xmlValue(xml, 'Message') ?? xml}`);
  }

  async abortMultipartUpload(key: string, uploadId: string): Promise<void> {
    try {
      await (await this.send('DELETE', key, { query: { uploadId } })).arrayBuffer();
    } catch (error) {
      if (!(error instanceof S3RequestError && error.status === 404)) throw error;
    }
  }

  async headObject(key: string): Promise<ObjectHead | undefined> {
    let response: Response;
    try {
      response = await this.send('HEAD', key, { headers: { 'x-amz-checksum-mode': 'ENABLED' } });
    } catch (error) {
      if (error instanceof S3RequestError && error.status === 404) return undefined;
      throw error;
    }
    const metadata: Record<string, string> = {};
    response.headers.forEach((value, name) => {
      if (name.startsWith('x-amz-meta-')) metadata[name.slice('x-amz-meta-'.length)] = value;
    });
    return {
      size: Number(response.headers.get('content-length') ?? 0),
      etag: response.headers.get('etag') ?? '',
      metadata,
      checksumSha256: response.headers.get('x-amz-checksum-sha256') ?? undefined,
    };
  }

  /** The object's bytes as a stream, plus its metadata. */
  async getObject(key: string): Promise<{ body: Readable; head: ObjectHead }> {
    const response = await this.send('GET', key);
    const metadata: Record<string, string> = {};
    response.headers.forEach((value, name) => {
      if (name.startsWith('x-amz-meta-')) metadata[name.slice('x-amz-meta-'.length)] = value;
    });
    const body = response.body ? Readable.fromWeb(response.body as WebReadableStream<Uint8Array>) : Readable.from([]);
    return { body, head: { size: Number(response.headers.get('content-length') ?? 0), etag: response.headers.get('etag') ?? '', metadata } };
  }

  async deleteObject(key: string): Promise<void> {
    await (await this.send('DELETE', key)).arrayBuffer();
  }

  /** Every object under a prefix (ListObjectsV2, following continuation tokens). */
  async *listObjects(prefix: string): AsyncGenerator<RemoteObject> {
    let token: string | undefined;
    for (;;) {
      const query: Record<string, string> = { 'list-type': '2', prefix };
      if (token) query['continuation-token'] = token;
      const xml = await (await this.send('GET', undefined, { query })).text();
      for (const block of xmlBlocks(xml, 'Contents')) {
        yield { key: xmlValue(block, 'Key') ?? '', size: Number(xmlValue(block, 'Size') ?? 0), etag: xmlValue(block, 'ETag') ?? '' };
      }
      if (xmlValue(xml, 'IsTruncated') !== 'true') return;
      token = xmlValue(xml, 'NextContinuationToken');
      if (!token) return;
    }
  }
}

/**
 * fetch copies a buffer body (as the Fetch standard requires); a one-chunk stream is sent as is,
 * so a part buffer is never duplicated and memory stays at the pool of parts.
 */
function streamOf(body: Uint8Array): ReadableStream<Uint8Array> {
  return new ReadableStream({
    start(controller) {
      controller.enqueue(body);
      controller.close();
    },
  });
}

async function errorFrom(response: Response, method: string, key: string | undefined): Promise<S3RequestError> {
  const text = method === 'HEAD' ? '' : await response.text().catch(() => '');
  const code = xmlValue(text, 'Code') ?? (response.status === 404 ? 'NotFound' : `HTTP${response.status}`);
  const message = xmlValue(text, 'Message') ?? response.statusText;
  return new S3RequestError(response.status, code, `${method} ${key ?? '(bucket)'}: ${response.status} ${code}: ${message}`);
}

/** RFC 3986 encoding as SigV4 requires (encodeURIComponent leaves !'()* alone). */
export function encodeRfc3986(value: string): string {
  return encodeURIComponent(value).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

function hmac(key: string | Buffer, data: string): Buffer {
  return createHmac('sha256', key).update(data).digest();
}

function sha256Hex(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

const XML_ENTITIES: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" };

function decodeXml(text: string): string {
  return text.replace(/&(amp|lt|gt|quot|apos|#\d+|#x[0-9a-f]+);/gi, (_m, entity: string) => {
    if (entity.startsWith('#x') || entity.startsWith('#X')) return String.fromCodePoint(parseInt(entity.slice(2), 16));
    if (entity.startsWith('#')) return String.fromCodePoint(Number(entity.slice(1)));
    return XML_ENTITIES[entity.toLowerCase()]!;
  });
}

function escapeXml(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** S3's responses are small and flat enough that element extraction suffices. */
export function xmlValue(xml: string, tag: string): string | undefined {
  const match = new RegExp(`<${tag}>([\\s\\S]*?)</${tag}>`).exec(xml);
  return match ? decodeXml(match[1]!) : undefined;
}

export function xmlBlocks(xml: string, tag: string): string[] {
  return [...xml.matchAll(new RegExp(`<${tag}>([\\s\\S]*?)</${tag}>`, 'g'))].map((m) => m[1]!);
}
