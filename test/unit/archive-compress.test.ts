// Issue 18: Lifeline compresses pg_dump's uncompressed custom archive on several cores. These build
// archives byte by byte (the layout pg_dump 12-15 writes, version 1.14) and check the rewrite: the
// header's level, the table of contents passed on, each data stream one valid zlib stream whatever
// the number of segments, and every malformed or unknown stream refused, never guessed at.
// The same code against the real pg_dump and pg_restore: test/integration/archive-compress.test.ts.
import { randomBytes } from 'node:crypto';
import { deflateSync, inflateSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { adler32Combine, compressArchive, lifelineCompresses, SEGMENT_BYTES } from '../../src/backup/archive-compress';
import { isLifelineError } from '../../src/errors';

const INT = 4;
const OFF = 8;
const int = (v: number) => {
  const b = Buffer.alloc(1 + INT);
  b[0] = v < 0 ? 1 : 0;
  b.writeUInt32LE(Math.abs(v), 1);
  return b;
};
const str = (s: string | null) => (s === null ? int(-1) : Buffer.concat([int(Buffer.byteLength(s)), Buffer.from(s)]));

function header(options: { version?: [number, number]; compression?: number; format?: number } = {}): Buffer {
  const [major, minor] = options.version ?? [1, 14];
  return Buffer.concat([
    Buffer.from('PGDMP'),
    Buffer.from([major, minor, 0, INT, OFF, options.format ?? 1]),
    int(options.compression ?? 0),
    ...[0, 30, 12, 3, 11, 126, 0].map(int),
    str('shop'),
    str('15.10'),
    str('15.10'),
  ]);
}

function tocEntry(dumpId: number, hasData: boolean, tag: string): Buffer {
  return Buffer.concat([
    int(dumpId),
    int(hasData ? 1 : 0),
    str('1259'),
    str(String(16000 + dumpId)),
    str(tag),
    str(hasData ? 'TABLE DATA' : 'TABLE'),
    int(hasData ? 3 : 2),
    str(hasData ? '' : `CREATE TABLE public.${tag} (x text);\n`),
    str(''),
    str(hasData ? `COPY public.${tag} (x) FROM stdin;\n` : null),
    str('public'),
    str(null),
    str(hasData ? null : 'heap'),
    str('postgres'),
    str('false'),
    str('1'),
    str(null),
    // data offset: "set" (as pg_dump writes to a file), which the rewrite must clear
    Buffer.from([hasData ? 2 : 3]),
    Buffer.alloc(OFF, hasData ? 7 : 0),
  ]);
}

/** A data block the way pg_dump --compress=0 writes it: one chunk per row. */
function dataBlock(dumpId: number, rows: Buffer[]): Buffer {
  return Buffer.concat([Buffer.from([1]), int(dumpId), ...rows.flatMap((r) => [int(r.length), r]), int(0)]);
}

async function rewrite(bytes: Buffer, level = 6, pieceSize = 65536): Promise<Buffer> {
  async function* pieces() {
    for (let i = 0; i < bytes.length; i += pieceSize) yield bytes.subarray(i, i + pieceSize);
  }
  const out: Buffer[] = [];
  for await (const chunk of compressArchive(pieces(), level)) out.push(chunk);
  return Buffer.concat(out);
}

/** Reads back a rewritten archive: its header level, offset flags and each block's inflated data. */
function readBack(archive: Buffer, tocCount: number): { level: number; flags: number[]; blocks: Map<number, Buffer>; compressed: Map<number, number> } {
  let p = 11;
  const readInt = () => {
    const v = archive.readUInt32LE(p + 1) * (archive[p] ? -1 : 1);
    p += 1 + INT;
    return v;
  };
  const skipStr = () => {
    const n = readInt();
    if (n > 0) p += n;
    return n === -1;
  };
  const level = readInt();
  for (let i = 0; i < 7; i++) readInt();
  for (let i = 0; i < 3; i++) skipStr();
  expect(readInt()).toBe(tocCount);
  const flags: number[] = [];
  for (let i = 0; i < tocCount; i++) {
    readInt();
    readInt();
    for (let j = 0; j < 4; j++) skipStr();
    readInt();
    for (let j = 0; j < 8; j++) skipStr();
    while (!skipStr());
    flags.push(archive[p]!);
    expect(archive.subarray(p + 1, p + 1 + OFF).equals(Buffer.alloc(OFF)) || archive[p] === 3).toBe(true);
    p += 1 + OFF;
  }
  const blocks = new Map<number, Buffer>();
  const compressed = new Map<number, number>();
  while (p < archive.length) {
    expect(archive[p++]).toBe(1);
    const id = readInt();
    const chunks: Buffer[] = [];
    for (let n = readInt(); n !== 0; n = readInt()) {
      chunks.push(archive.subarray(p, p + n));
      p += n;
    }
    // inflateSync checks the zlib header, that the stream ends, and its adler32.
    blocks.set(id, inflateSync(Buffer.concat(chunks)));
    compressed.set(
      id,
      chunks.reduce((n, c) => n + c.length, 0),
    );
  }
  return { level, flags, blocks, compressed };
}

/** Text rows that compress about as real ones do (some repetition, some noise). */
function rows(count: number, seed: number): Buffer[] {
  const noise = randomBytes(count * 8).toString('base64');
  return Array.from({ length: count }, (_, i) =>
    Buffer.from(`${seed}\t${i}\torder for table ${i % 40} ${noise.slice((i * 8) % (noise.length - 12), ((i * 8) % (noise.length - 12)) + 12)}\t{"status": "paid", "items": ${i % 9}}\n`),
  );
}

async function expectUnexpected(promise: Promise<unknown>, pattern: RegExp) {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(isLifelineError(error) && error.code, String(error)).toBe('ARCHIVE_FORMAT_UNEXPECTED');
  expect((error as Error).message).toMatch(pattern);
}

describe('compressing a custom archive on several cores', () => {
  it('adler32Combine gives the adler32 of the joined bytes (as zlib computes it)', () => {
    const adler = (b: Buffer) => deflateSync(b, { level: 0 }).readUInt32BE(deflateSync(b, { level: 0 }).length - 4);
    for (const [a, b] of [
      [randomBytes(1), randomBytes(70_000)],
      [randomBytes(100_000), randomBytes(3)],
      [Buffer.alloc(65_521, 0xff), Buffer.alloc(131_042, 0xff)],
      [randomBytes(5), Buffer.alloc(0)],
    ] as const) {
      expect(adler32Combine(adler(a), b.length ? adler(b) : 1, b.length)).toBe(adler(Buffer.concat([a, b])));
    }
  });

  it('rewrites header, table of contents and blocks: the level set, offsets cleared, every block one zlib stream of the same rows', async () => {
    const big = rows(60_000, 1); // several segments: dictionaries and adler32 carried across them
    const small = rows(3, 2);
    const bigBytes = Buffer.concat(big);
    expect(bigBytes.length).toBeGreaterThan(3 * SEGMENT_BYTES);
    const archive = Buffer.concat([
      header(),
      int(4),
      tocEntry(1, false, 'orders'),
      tocEntry(2, true, 'orders'),
      tocEntry(3, true, 'empty'),
      tocEntry(4, true, 'notes'),
      dataBlock(2, big),
      dataBlock(3, []),
      dataBlock(4, small),
    ]);
    for (const pieceSize of [65_536, 7, 1_000_003]) {
      const out = await rewrite(archive, 6, pieceSize);
      const back = readBack(out, 4);
      expect(back.level).toBe(6);
      expect(back.flags).toEqual([3, 1, 1, 1]);
      expect(back.blocks.get(2)!.equals(bigBytes)).toBe(true);
      expect(back.blocks.get(3)!.length).toBe(0);
      expect(back.blocks.get(4)!.equals(Buffer.concat(small))).toBe(true);
      // Compressed like one stream at that level: within 1% of zlib's own size for the same data.
      const single = deflateSync(bigBytes, { level: 6 }).length;
      expect(Math.abs(back.compressed.get(2)! - single)).toBeLessThan(single / 100);
    }
  });

  it('large objects: each one its own zlib stream, the oid list passed on', async () => {
    const lo1 = randomBytes(10);
    const lo2 = Buffer.alloc(2 * SEGMENT_BYTES + 5, 'large object ');
    const blobs = Buffer.concat([Buffer.from([3]), int(2), int(90001), int(lo1.length), lo1, int(0), int(90002), int(lo2.length), lo2, int(0), int(0)]);
    const headAndToc = Buffer.concat([header(), int(1), tocEntry(2, true, 'BLOBS')]);
    const out = await rewrite(Buffer.concat([headAndToc, blobs]), 4);
    let p = headAndToc.length; // the header and TOC keep their length
    expect(out[p]).toBe(3);
    p += 1 + 5;
    const readInt = () => {
      const v = out.readUInt32LE(p + 1);
      p += 5;
      return v;
    };
    const found: Buffer[] = [];
    for (let oid = readInt(); oid !== 0; oid = readInt()) {
      const chunks: Buffer[] = [];
      for (let n = readInt(); n !== 0; n = readInt()) {
        chunks.push(out.subarray(p, p + n));
        p += n;
      }
      found.push(inflateSync(Buffer.concat(chunks)));
    }
    expect(p).toBe(out.length);
    expect(found).toHaveLength(2);
    expect(found[0]!.equals(lo1)).toBe(true);
    expect(found[1]!.equals(lo2)).toBe(true);
  });

  it('thousands of small large objects and tables in one read: memory stays bounded, every stream intact', async () => {
    // The attack that found it: 15,000 tiny large objects took 1.68 GB (a compression job each, all at once).
    const blobs: Buffer[] = [Buffer.from([3]), int(2)];
    const objects: Buffer[] = [];
    for (let i = 0; i < 20_000; i++) {
      const body = i % 3 === 0 ? Buffer.alloc(0) : Buffer.from(`large object ${i}`);
      objects.push(body);
      blobs.push(int(100_000 + i), ...(body.length ? [int(body.length), body] : []), int(0));
    }
    // And 300 medium ones (each its own thread-pool job), all in the same single piece.
    for (let i = 0; i < 300; i++) {
      const body = Buffer.alloc(100_000, `medium ${i} `);
      objects.push(body);
      blobs.push(int(200_000 + i), int(body.length), body, int(0));
    }
    blobs.push(int(0));
    const archive = Buffer.concat([header(), int(1), tocEntry(2, true, 'BLOBS'), ...blobs]);
    const before = process.memoryUsage().rss;
    let peak = before;
    const timer = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 5);
    const out = await rewrite(archive, 4, archive.length).finally(() => clearInterval(timer));
    expect(peak - before).toBeLessThan(150 * 1024 * 1024);
    let p = archive.length - Buffer.concat(blobs).length + 6;
    const readInt = () => {
      const v = out.readUInt32LE(p + 1);
      p += 5;
      return v;
    };
    let n = 0;
    for (let oid = readInt(); oid !== 0; oid = readInt(), n++) {
      const chunks: Buffer[] = [];
      for (let len = readInt(); len !== 0; len = readInt()) {
        chunks.push(out.subarray(p, p + len));
        p += len;
      }
      expect(inflateSync(Buffer.concat(chunks)).equals(objects[n]!)).toBe(true);
    }
    expect(n).toBe(objects.length);
  });

  it('refuses what it does not know, and a stream cut short, with ARCHIVE_FORMAT_UNEXPECTED', async () => {
    const toc = Buffer.concat([int(1), tocEntry(2, true, 'orders')]);
    await expectUnexpected(rewrite(Buffer.concat([Buffer.from('PGDMQ'), header().subarray(5), toc])), /PGDMP/);
    await expectUnexpected(rewrite(Buffer.concat([header({ version: [1, 15] }), toc])), /archive version 1\.15/);
    await expectUnexpected(rewrite(Buffer.concat([header({ compression: 6 }), toc])), /already compressed/);
    await expectUnexpected(rewrite(Buffer.concat([header({ compression: -1 }), toc])), /already compressed/);
    await expectUnexpected(rewrite(Buffer.concat([header({ format: 5 }), toc])), /format 5/);
    const whole = Buffer.concat([header(), toc, dataBlock(2, rows(2000, 3))]);
    for (const cut of [20, header().length + 30, whole.length - 1, whole.length - 6, whole.length - 300]) {
      await expectUnexpected(rewrite(whole.subarray(0, cut)), /ended inside/);
    }
    // Cut exactly at the end of a block (pg_dump would have written the others' too).
    const twoTables = Buffer.concat([int(2), tocEntry(2, true, 'orders'), tocEntry(3, true, 'notes')]);
    await expectUnexpected(rewrite(Buffer.concat([header(), twoTables, dataBlock(2, rows(10, 5))])), /without the data of 1 entry \(3\)/);
    await expectUnexpected(rewrite(Buffer.concat([header(), twoTables])), /without the data of 2 entries/);
    await expectUnexpected(rewrite(Buffer.concat([header(), twoTables, dataBlock(2, rows(1, 6)), dataBlock(2, rows(1, 7)), dataBlock(3, [])])), /second data block for entry 2/);
    // A block for an entry the table of contents has no data for, an unknown block type, a negative length.
    await expectUnexpected(rewrite(Buffer.concat([header(), toc, dataBlock(9, rows(1, 4))])), /entry 9/);
    await expectUnexpected(rewrite(Buffer.concat([header(), toc, Buffer.from([2]), int(2)])), /type 2/);
    await expectUnexpected(rewrite(Buffer.concat([header(), toc, Buffer.from([1]), int(2), int(-5)])), /length -5/);
    await expectUnexpected(rewrite(Buffer.concat([header(), toc, Buffer.from([1]), int(2), Buffer.from([7, 1, 0, 0, 0])])), /sign byte 7/);
  });

  it('only gzip levels 4-9, and only pg_dump 12-15, are compressed by Lifeline', () => {
    expect(lifelineCompresses({ method: 'gzip', level: 6 }, 15)).toBe(true);
    expect(lifelineCompresses({ method: 'gzip', level: 4 }, 12)).toBe(true);
    expect(lifelineCompresses({ method: 'gzip', level: 1 }, 15)).toBe(false);
    expect(lifelineCompresses({ method: 'gzip', level: 3 }, 15)).toBe(false);
    expect(lifelineCompresses({ method: 'gzip', level: 6 }, 16)).toBe(false);
    expect(lifelineCompresses({ method: 'gzip', level: 6 }, 11)).toBe(false);
    expect(lifelineCompresses({ method: 'none', level: null }, 15)).toBe(false);
    expect(lifelineCompresses({ method: 'zstd', level: 6 }, 15)).toBe(false);
  });
});
