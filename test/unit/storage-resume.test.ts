import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { S3ObjectStore } from '../../src/storage/object-store';
import { S3Client } from '../../src/storage/s3';

const MiB = 1024 * 1024;

/**
 * s3rver cannot list the parts of an upload; AWS S3 and most providers can. This stand-in
 * implements just CreateMultipartUpload, UploadPart, ListParts and Complete so the resume path
 * that trusts the server's list (not the local journal) is exercised too.
 */
let server: Server;
let endpoint = '';
const partPuts: number[] = [];
const parts = new Map<number, string>();
let listedEtagOverride: { partNumber: number; etag: string } | undefined;
let completedWith = '';
/** While set, every attempt at this part has its connection cut (the SDK retries a cut connection). */
let cutPart: number | undefined;

beforeAll(async () => {
  server = createServer((request, response) => {
    const url = new URL(request.url!, 'http://x');
    if (cutPart !== undefined && request.method === 'PUT' && url.searchParams.get('partNumber') === String(cutPart)) {
      request.socket.destroy();
      return;
    }
    const chunks: Buffer[] = [];
    request.on('data', (c: Buffer) => chunks.push(c));
    request.on('end', () => {
      const body = Buffer.concat(chunks);
      if (request.method === 'POST' && url.searchParams.has('uploads')) return response.end('<InitiateMultipartUploadResult><UploadId>u-1</UploadId></InitiateMultipartUploadResult>');
      if (request.method === 'PUT' && url.searchParams.has('partNumber')) {
        const partNumber = Number(url.searchParams.get('partNumber'));
        const md5 = createHash('md5').update(body).digest('hex');
        partPuts.push(partNumber);
        parts.set(partNumber, md5);
        response.setHeader('etag', `"${md5}"`);
        return response.end();
      }
      if (request.method === 'GET' && url.searchParams.has('uploadId')) {
        const listed = [...parts].map(([n, md5]) => `<Part><PartNumber>${n}</PartNumber><ETag>"${listedEtagOverride?.partNumber === n ? listedEtagOverride.etag : md5}"</ETag></Part>`);
        return response.end(`<ListPartsResult>${listed.join('')}<IsTruncated>false</IsTruncated></ListPartsResult>`);
      }
      if (request.method === 'POST' && url.searchParams.has('uploadId')) {
        completedWith = body.toString();
        return response.end('<CompleteMultipartUploadResult><ETag>"x-4"</ETag></CompleteMultipartUploadResult>');
      }
      response.statusCode = 501;
      response.end('<Error><Code>NotImplemented</Code></Error>');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  endpoint = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
});

afterAll(() => server?.close());

describe('multipart resume against a server that lists parts', () => {
  it('trusts the listed parts whose ETag matches the local MD5 and re-sends the rest', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'lifeline-resume-'));
    try {
      const file = join(dir, 'postgres.dump');
      const data = Buffer.alloc(17 * MiB);
      for (let i = 0; i < data.length; i += 4096) data.writeUInt32BE(i, i);
      writeFileSync(file, data);
      const expected = { sha256: createHash('sha256').update(data).digest('hex'), bytes: data.length };
      const storeWith = () =>
        new S3ObjectStore(
          new S3Client({ endpoint, region: 'us-east-1', bucket: 'b', credentials: { accessKeyId: 'k', secretAccessKey: 's' }, maxAttempts: 2 }),
          { bucket: 'b', prefix: '' },
          { journalDir: join(dir, 'journal'), partSize: 5 * MiB, concurrency: 1 },
        );

      cutPart = 3;
      await expect(storeWith().putFile('k', file, expected)).rejects.toMatchObject({ code: 'STORAGE_UNREACHABLE' });
      cutPart = undefined;
      expect(partPuts).toEqual([1, 2]);

      // The server reports part 2 with a different ETag (say it was overwritten): it must be sent again.
      listedEtagOverride = { partNumber: 2, etag: '00000000000000000000000000000000' };
      partPuts.length = 0;
      const result = await storeWith().putFile('k', file, expected);
      expect(partPuts).toEqual([2, 3, 4]);
      expect(result).toEqual({ bytes: 17 * MiB, parts: 4, resumedParts: 1 });
      expect([...completedWith.matchAll(/<PartNumber>(\d+)<\/PartNumber>/g)].map((m) => Number(m[1]))).toEqual([1, 2, 3, 4]);
      expect(completedWith).toContain('<ChecksumSHA256>');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
