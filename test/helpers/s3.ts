import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import type { IncomingMessage, Server } from 'node:http';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import type { Catalog, EntryKind } from '../../src/catalog/store';
import { freePort } from '../../src/runner/ports';

const require = createRequire(import.meta.url);

export interface RecordedRequest {
  method: string;
  url: string;
  headers: Record<string, string | string[] | undefined>;
}

export interface TestS3Server {
  endpoint: string;
  bucket: string;
  accessKeyId: string;
  secretAccessKey: string;
  /** Every request the server received, in order: tests prove "no traffic" and "only the missing parts". */
  requests: RecordedRequest[];
  /** Where the server keeps an object's bytes on disk, for corrupting it behind the API's back. */
  objectPath(key: string): string;
  /** Registers another key pair the server accepts (its signatures are checked only by the verifying server). */
  addKeyPair(accessKeyId: string, secretAccessKey: string): void;
  close(): Promise<void>;
}

/**
 * A real S3-compatible server (s3rver) on 127.0.0.1 with a fresh directory; close it in afterAll.
 * s3rver 3.7 accepts any SigV4 signature from a known key id; `verifySignatures` starts the
 * maintained fork (@20minutes/s3rver 5), which recomputes every SigV4 signature with the secret
 * (S3RVER/S3RVER) and refuses a wrong one with SignatureDoesNotMatch.
 */
export async function startS3Server(bucket = 'lifeline-test', options: { verifySignatures?: boolean } = {}): Promise<TestS3Server> {
  if (options.verifySignatures) patchForkBucketSignatures();
  allowContinuationTokens();
  const S3rver = require(options.verifySignatures ? '@20minutes/s3rver' : 's3rver') as new (options: Record<string, unknown>) => {
    run(): Promise<{ port: number }>;
    close(): Promise<void>;
    httpServer: Server;
    store: { getResourcePath(bucket: string, key: string, resource: string): string };
  };
  const directory = mkdtempSync(join(tmpdir(), 'lifeline-s3-'));
  const port = await freePort();
  const server = new S3rver({ address: '127.0.0.1', port, directory, silent: true, configureBuckets: [{ name: bucket }] });
  await server.run();
  const requests: RecordedRequest[] = [];
  server.httpServer.prependListener('request', (request: IncomingMessage) => requests.push({ method: request.method ?? '', url: request.url ?? '', headers: request.headers }));
  return {
    endpoint: `http://127.0.0.1:${port}`,
    bucket,
    accessKeyId: 'S3RVER',
    secretAccessKey: 'S3RVER',
    requests,
    objectPath: (key) => server.store.getResourcePath(bucket, key, 'object'),
    addKeyPair(accessKeyId, secretAccessKey) {
      const account = require(options.verifySignatures ? '@20minutes/s3rver/lib/models/account.js' : 's3rver/lib/models/account.js') as {
        DUMMY_ACCOUNT: { createKeyPair(id: string, secret: string): void };
      };
      account.DUMMY_ACCOUNT.createKeyPair(accessKeyId, secretAccessKey);
    },
    async close() {
      await server.close();
      rmSync(directory, { recursive: true, force: true });
    },
  };
}

let tokensPatched = false;

/**
 * Both s3rvers encrypt ListObjectsV2 continuation tokens with single DES, which OpenSSL 3 (Node 17
 * and later) no longer offers: any truncated listing (more keys than MaxKeys) answers 500. In this
 * test process only, 'des' becomes an opaque, reversible encoding so pagination can be tested
 * against the real server code; nothing else here uses DES.
 */
function allowContinuationTokens(): void {
  if (tokensPatched) return;
  tokensPatched = true;
  const crypto = require('node:crypto') as typeof import('node:crypto');
  const passThrough = () => ({
    update: (data: string | Buffer, encoding?: BufferEncoding) => (typeof data === 'string' ? Buffer.from(data, encoding) : Buffer.from(data)),
    final: () => Buffer.alloc(0),
  });
  const { createCipheriv, createDecipheriv } = crypto;
  Object.assign(crypto, {
    createCipheriv: (algorithm: string, ...rest: unknown[]) => (algorithm === 'des' ? passThrough() : (createCipheriv as (...a: unknown[]) => unknown)(algorithm, ...rest)),
    createDecipheriv: (algorithm: string, ...rest: unknown[]) => (algorithm === 'des' ? passThrough() : (createDecipheriv as (...a: unknown[]) => unknown)(algorithm, ...rest)),
  });
}

let forkPatched = false;

/**
 * The fork builds the canonical URI of a bucket-level request (ListObjectsV2: `GET /bucket/?list-type=2`)
 * without its trailing slash, so every correctly signed listing fails with SignatureDoesNotMatch.
 * This shim gives its verifier the path the client signed (`/bucket/`) and changes nothing else:
 * object requests, and the check itself, are the fork's own.
 */
function patchForkBucketSignatures(): void {
  if (forkPatched) return;
  forkPatched = true;
  const path = require.resolve('@20minutes/s3rver/lib/middleware/authentication.js');
  const factory = require(path) as () => (ctx: KoaLike, next: () => Promise<unknown>) => Promise<unknown>;
  require.cache[path]!.exports = () => {
    const verify = factory();
    return async (ctx: KoaLike, next: () => Promise<unknown>) => {
      const bucket = ctx.params?.bucket;
      const shim = Boolean(bucket) && !ctx.params?.key && ctx.path.endsWith('/');
      let restored = !shim;
      const restore = () => {
        if (!restored) ctx.params!.bucket = bucket;
        restored = true;
      };
      if (shim) ctx.params!.bucket = `${bucket}/`;
      try {
        return await verify(ctx, async () => {
          restore();
          return next();
        });
      } finally {
        restore();
      }
    };
  };
}

interface KoaLike {
  path: string;
  params?: { bucket?: string; key?: string };
}

/** Deterministic bytes, streamed in 1 MiB chunks, so big test files never sit whole in memory. */
export function patternStream(bytes: number, seed: number): Readable {
  const block = Buffer.alloc(1024 * 1024);
  for (let i = 0; i < block.length; i += 32) createHash('sha256').update(`${seed}:${i}`).digest().copy(block, i);
  let sent = 0;
  let index = 0;
  return new Readable({
    read() {
      if (sent >= bytes) return this.push(null);
      const chunk = Buffer.from(block.subarray(0, Math.min(block.length, bytes - sent)));
      // Stamp every 4 KiB page with the chunk number so no two chunks (or parts) are alike.
      for (let page = 0; page + 8 <= chunk.length; page += 4096) chunk.writeUInt32BE(index, page);
      index++;
      sent += chunk.length;
      this.push(chunk);
    },
  });
}

/** Writes a complete catalog entry of any kind, the way the other commands do: staged, summed, committed. */
export async function writeTestEntry(
  catalog: Catalog,
  env: string,
  kind: EntryKind,
  id: string,
  metadataFile: string,
  files: Record<string, string | number>,
  metadata: Record<string, unknown> = {},
  createdAt = new Date().toISOString(),
): Promise<void> {
  const staged = await catalog.begin(env, kind, id, metadataFile);
  let seed = 1;
  for (const [name, content] of Object.entries(files)) {
    await staged.addStream(name, typeof content === 'number' ? patternStream(content, seed++) : Readable.from([Buffer.from(content)]));
  }
  await staged.commit({ schemaVersion: 1, id, createdAt, ...metadata });
}

export type FaultDecision = 'pass' | 'cut' | 'hold' | { status: number; code?: string };

export interface FaultProxy {
  endpoint: string;
  /** Every request the proxy saw, with what it did. */
  seen: Array<{ method: string; url: string; decision: string }>;
  close(): Promise<void>;
}

/**
 * A loopback HTTP proxy in front of a test S3 server that fails requests on demand: `cut` drops
 * the connection mid-request (a killed network path), `{ status }` answers with an S3 error body
 * (a failing provider), `hold` never answers (a stalled provider, until close), `pass` forwards
 * the request untouched (signatures stay valid: the Host header is kept).
 */
export async function startFaultProxy(target: string, decide: (request: { method: string; url: string; index: number }) => FaultDecision): Promise<FaultProxy> {
  const { createServer, request: httpRequest } = await import('node:http');
  const targetUrl = new URL(target);
  const seen: FaultProxy['seen'] = [];
  const server = createServer((request, response) => {
    const method = request.method ?? '';
    const url = request.url ?? '';
    const decision = decide({ method, url, index: seen.length });
    seen.push({ method, url, decision: typeof decision === 'string' ? decision : String(decision.status) });
    if (decision === 'cut') {
      request.socket.destroy();
      return;
    }
    if (decision === 'hold') {
      request.resume();
      return;
    }
    if (decision !== 'pass') {
      request.resume();
      request.on('end', () => {
        const code = decision.code ?? (decision.status === 503 ? 'SlowDown' : 'InternalError');
        response.writeHead(decision.status, { 'content-type': 'application/xml' });
        response.end(`<?xml version="1.0" encoding="UTF-8"?><Error><Code>${code}</Code><Message>injected by the test proxy</Message><RequestId>proxy</RequestId></Error>`);
      });
      return;
    }
    const upstream = httpRequest({ host: targetUrl.hostname, port: targetUrl.port, method, path: url, headers: request.headers }, (answer) => {
      response.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(response);
    });
    upstream.on('error', () => request.socket.destroy());
    request.pipe(upstream);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    endpoint: `http://127.0.0.1:${(server.address() as { port: number }).port}`,
    seen,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
