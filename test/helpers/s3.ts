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
  close(): Promise<void>;
}

/** A real S3-compatible server (s3rver) on 127.0.0.1 with a fresh directory; close it in afterAll. */
export async function startS3Server(bucket = 'lifeline-test'): Promise<TestS3Server> {
  const S3rver = require('s3rver') as new (options: Record<string, unknown>) => {
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
    async close() {
      await server.close();
      rmSync(directory, { recursive: true, force: true });
    },
  };
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
