/**
 * gzip compression of a pg_dump custom-format archive, done by Lifeline on several cores (pigz's
 * method) instead of by pg_dump on one.
 *
 * pg_dump compresses every table's data in its own single thread; at gzip level 6 that thread is the
 * whole backup's bottleneck (13 s of its CPU for the 1 GB bench dataset, against 7 s for the server
 * producing the rows). Here pg_dump writes the archive uncompressed (`--compress=0`) and this stream
 * rewrites it into the archive `pg_dump --compress=N` writes: the same header (with the level set),
 * the same table of contents, and each data block one zlib stream. Each stream is compressed in
 * 1 MiB segments on libuv's thread pool, each segment primed with the previous one's last 32 KiB
 * (so the ratio is a single stream's) and ended with a sync flush, so the segments join into one
 * zlib stream; its adler32 is combined from the segments'. pg_restore reads the result as it reads
 * any archive of pg_dump's, and a backup's in-stream pg_restore reads every block of it back.
 *
 * Only the archive version it knows is rewritten (1.14: pg_dump 12 to 15); anything else in the
 * stream fails the backup (nothing lists) rather than being guessed at.
 */
import { promisify } from 'node:util';
import { constants, createDeflateRaw, deflate, deflateRaw, type ZlibOptions } from 'node:zlib';
import { failure } from '../errors';
import { COLLECT_EVERY, collectYoungGarbage } from './collect-garbage';

const deflateRawAsync = promisify(deflateRaw) as (input: Buffer, options: ZlibOptions) => Promise<Buffer>;
const deflateAsync = promisify(deflate) as (input: Buffer, options: ZlibOptions) => Promise<Buffer>;

/** The uncompressed bytes per segment: one thread-pool job, and one chunk of the archive. */
export const SEGMENT_BYTES = 1024 * 1024;
/** deflate's window: each segment starts from the previous segment's last 32 KiB. */
const DICTIONARY_BYTES = 32 * 1024;
/** Segments compressing at once (libuv's pool has 4 threads): bounds memory to a few MB. */
const IN_FLIGHT = 4;

/** zlib's slow (lazy-matching) levels: where pg_dump's one thread is the backup's bottleneck. */
const FIRST_LEVEL = 4;
/** pg_dump majors whose custom archives are version 1.14, the one rewritten here. */
const FIRST_MAJOR = 12;
const LAST_MAJOR = 15;
const ARCHIVE_VERSION: readonly [number, number] = [1, 14];
const FORMAT_CUSTOM = 1;
const BLK_DATA = 1;
const K_OFFSET_POS_NOT_SET = 1;
const K_OFFSET_POS_SET = 2;
const BLK_BLOBS = 3;

/**
 * Whether Lifeline compresses this backup's archive itself: gzip at levels 4-9, with a pg_dump whose
 * archive version it knows. At levels 1-3 (zlib's fast deflate) pg_dump's thread keeps pace with the
 * server, and moving 5x the bytes through Lifeline cost more than it gained (9.1-9.3 s against
 * 10.9-12.0 s for the 1 GB bench dataset at gzip 1); at level 6 it took 0.86-0.92x of `pg_dump -Z6`.
 */
export function lifelineCompresses(compression: { method: string; level: number | null }, pgDumpMajor: number): compression is { method: 'gzip'; level: number } {
  return compression.method === 'gzip' && compression.level !== null && compression.level >= FIRST_LEVEL && compression.level <= 9 && pgDumpMajor >= FIRST_MAJOR && pgDumpMajor <= LAST_MAJOR;
}

/** `endOfStream`: found when pg_dump's output ended (pg_dump is done; its exit status may say why). */
function unexpected(what: string, endOfStream = false): Error {
  return failure('ARCHIVE_FORMAT_UNEXPECTED', `pg_dump's uncompressed archive is not in the form Lifeline compresses: ${what}`, {
    fix: 'nothing was added to the catalog; check that pg_dump is a PostgreSQL 12-15 pg_dump writing the custom format, or use --compress gzip:1 (pg_dump compresses at levels 1-3)',
    details: { endOfStream },
  });
}

/** zlib's adler32_combine: the adler32 of A+B from those of A and B and B's length. */
export function adler32Combine(adler1: number, adler2: number, length2: number): number {
  const BASE = 65521;
  const rem = length2 % BASE;
  let sum1 = adler1 & 0xffff;
  let sum2 = (rem * sum1) % BASE;
  sum1 += (adler2 & 0xffff) + BASE - 1;
  sum2 += ((adler1 >>> 16) & 0xffff) + ((adler2 >>> 16) & 0xffff) + BASE - rem;
  if (sum1 >= BASE) sum1 -= BASE;
  if (sum1 >= BASE) sum1 -= BASE;
  if (sum2 >= BASE * 2) sum2 -= BASE * 2;
  if (sum2 >= BASE) sum2 -= BASE;
  return ((sum2 << 16) | sum1) >>> 0;
}

/** adler32 of `input`, computed by zlib on the thread pool (a stored, level-0 zlib stream ends with it). */
async function adler32Of(input: Buffer): Promise<number> {
  if (input.length === 0) return 1;
  const stored = await deflateAsync(input, { level: 0, chunkSize: input.length + 1024 });
  return stored.readUInt32BE(stored.length - 4);
}

/** The two-byte zlib header zlib itself writes for a level (inflate checks only its checksum). */
function zlibHeader(level: number): Buffer {
  const flevel = level === 1 ? 0 : level < 6 ? 1 : level === 6 ? 2 : 3;
  const cmf = 0x78;
  let flg = flevel << 6;
  flg += 31 - ((cmf * 256 + flg) % 31);
  return Buffer.from([cmf, flg]);
}

const EMPTY = Buffer.alloc(0);
/** An empty final block with fixed codes (BFINAL 1, BTYPE 01, end-of-block), after a byte-aligning flush. */
const FINAL_EMPTY_BLOCK = Buffer.from([0x03, 0x00]);
/** A whole stream below this goes through the one long-lived zlib context for small streams. */
const SMALL_BYTES = 64 * 1024;

/** adler32 in JavaScript, for small inputs (zlib's own is used for segments). */
function adler32(input: Buffer): number {
  let a = 1;
  let b = 0;
  for (let i = 0; i < input.length;) {
    const end = Math.min(i + 5552, input.length);
    for (; i < end; i++) {
      a += input[i]!;
      b += a;
    }
    a %= 65521;
    b %= 65521;
  }
  return ((b << 16) | a) >>> 0;
}

/** Thrown inside the header parser when the bytes so far end mid-field. */
const NEED_MORE = Symbol('need more');

class Cursor {
  pos = 0;
  constructor(
    readonly buf: Buffer,
    private readonly intSize: number,
  ) {}
  need(n: number): void {
    if (this.pos + n > this.buf.length) throw NEED_MORE;
  }
  byte(): number {
    this.need(1);
    return this.buf[this.pos++]!;
  }
  int(): number {
    this.need(1 + this.intSize);
    const value = decodeInt(this.buf, this.pos, this.intSize, `at offset ${this.pos}`);
    this.pos += 1 + this.intSize;
    return value;
  }
  /** Skips a string (length -1 is NULL); returns whether it was NULL. */
  str(): boolean {
    const length = this.int();
    if (length === -1) return true;
    if (length < 0) throw unexpected(`a string of length ${length}`);
    this.need(length);
    this.pos += length;
    return false;
  }
}

/** pg_dump's integer at `pos`: a sign byte, then `intSize` bytes, least significant first. */
function decodeInt(buf: Buffer, pos: number, intSize: number, where: string): number {
  const sign = buf[pos]!;
  if (sign > 1) throw unexpected(`an integer with sign byte ${sign} ${where}`);
  let value = 0;
  for (let i = intSize; i >= 1; i--) value = value * 256 + buf[pos + i]!;
  return sign ? -value : value;
}

function encodeInt(value: number, intSize: number): Buffer {
  const out = Buffer.alloc(1 + intSize);
  out[0] = value < 0 ? 1 : 0;
  let v = Math.abs(value);
  for (let i = 1; i <= intSize; i++) {
    out[i] = v % 256;
    v = Math.floor(v / 256);
  }
  return out;
}

/** What one zlib stream (a table's data, or one large object) has so far. */
interface DeflateStream {
  segment: Buffer | undefined;
  used: number;
  dictionary: Buffer | undefined;
  first: boolean;
  adler: number;
}

/**
 * Rewrites pg_dump's uncompressed custom archive (`source`) into the same archive compressed with
 * gzip at `level`, yielding it in order. Memory stays bounded: at most IN_FLIGHT segments (and their
 * outputs) are held, and the source is not read while they wait.
 */
export async function* compressArchive(source: AsyncIterable<Buffer>, level: number): AsyncGenerator<Buffer> {
  const header = zlibHeader(level);
  // In order: each entry resolves to a function that, called in order, gives the bytes to emit.
  const queue: Promise<() => Buffer>[] = [];
  const emitNow = (bytes: Buffer) => queue.push(Promise.resolve(() => bytes));

  // ---- header and table of contents: passed on as they are parsed, with the level set ----
  let intSize = 0;
  let offSize = 0;
  let head: Buffer = EMPTY;
  let headDone = false;
  let tocLeft = -1;
  let tocStart = 0;
  const dataDumpIds = new Set<number>();
  const blocksSeen = new Set<number>();
  let compressionAt = -1;

  // ---- data blocks ----
  type State = 'block' | 'blockId' | 'blobOid' | 'chunkLen' | 'chunkData';
  let state: State = 'block';
  let blockType = 0;
  let carry: Buffer = EMPTY;
  let remaining = 0;
  let stream: DeflateStream | undefined;

  // The long-lived context for small streams: each is compressed and sync-flushed (byte-aligned,
  // no back-references kept after the reset), then closed with an empty final block of our own.
  let small: SmallDeflate | undefined;
  let smallTurn: Promise<unknown> = Promise.resolve();
  const compressSmall = (input: Buffer): Promise<Buffer> => {
    small ??= createSmallDeflate(level);
    const context = small;
    const run = smallTurn.then(
      () =>
        new Promise<Buffer>((resolve, reject) => {
          context._processChunk(input, constants.Z_SYNC_FLUSH, (error?: Error | null) => {
            if (error) return reject(error);
            const out = context.read() as Buffer | null;
            context.reset();
            resolve(Buffer.concat([out ?? EMPTY, FINAL_EMPTY_BLOCK]));
          });
        }),
    );
    smallTurn = run.catch(() => {});
    return run;
  };

  // Bytes allocated (reads, segments, outputs) since the last young-generation collection.
  let sinceGc = 0;
  const collectNow = () => {
    if (sinceGc < COLLECT_EVERY) return;
    sinceGc = 0;
    collectYoungGarbage();
  };

  /** The archive chunk for a segment's compressed bytes, built in order (the stream's adler32 so far is combined here). */
  const chunkOf = (s: DeflateStream, raw: Buffer, adler: number, inputLength: number, first: boolean, final: boolean): Buffer => {
    s.adler = adler32Combine(s.adler, adler, inputLength);
    const parts = first ? [header, raw] : [raw];
    if (final) {
      const trailer = Buffer.alloc(4);
      trailer.writeUInt32BE(s.adler);
      parts.push(trailer);
    }
    const length = parts.reduce((n, p) => n + p.length, 0);
    sinceGc += 2 * length;
    return Buffer.concat([encodeInt(length, intSize), ...parts], 1 + intSize + length);
  };
  const submit = (s: DeflateStream, final: boolean) => {
    const input = s.segment ? s.segment.subarray(0, s.used) : EMPTY;
    const dictionary = s.dictionary;
    const first = s.first;
    s.first = false;
    s.dictionary = input.length >= DICTIONARY_BYTES ? input.subarray(input.length - DICTIONARY_BYTES) : undefined;
    s.segment = undefined;
    s.used = 0;
    if (first && final && input.length < SMALL_BYTES) {
      // A whole small stream (a small table, a small large object): one zlib context per stream,
      // thousands of them (one per large object), cost more memory than the work (1.7 GB for
      // 15,000 large objects). They go through one long-lived context instead, one after another.
      const adler = adler32(input);
      const job = compressSmall(input).then((raw) => () => chunkOf(s, raw, adler, input.length, first, final));
      job.catch(() => {});
      queue.push(job);
      return;
    }
    const options: ZlibOptions = { level, finishFlush: final ? constants.Z_FINISH : constants.Z_SYNC_FLUSH, chunkSize: 256 * 1024 };
    if (dictionary) options.dictionary = dictionary;
    const job = Promise.all([deflateRawAsync(input, options), adler32Of(input)]).then(
      ([raw, adler]) =>
        () =>
          chunkOf(s, raw, adler, input.length, first, final),
    );
    job.catch(() => {});
    queue.push(job);
  };
  const append = (s: DeflateStream, bytes: Buffer, from: number, to: number) => {
    while (from < to) {
      // Small streams (a few rows, a small large object) get small buffers: grown up to a segment.
      if (!s.segment) {
        s.segment = Buffer.allocUnsafe(Math.min(SEGMENT_BYTES, Math.max(4 * 1024, to - from)));
        sinceGc += s.segment.length;
      } else if (s.used === s.segment.length) {
        const grown = Buffer.allocUnsafe(Math.min(SEGMENT_BYTES, s.segment.length * 2));
        sinceGc += grown.length;
        s.segment.copy(grown, 0, 0, s.used);
        s.segment = grown;
      }
      const n = Math.min(to - from, s.segment.length - s.used);
      bytes.copy(s.segment, s.used, from, from + n);
      s.used += n;
      from += n;
      if (s.used === SEGMENT_BYTES) submit(s, false);
    }
  };
  const openStream = (): DeflateStream => ({ segment: undefined, used: 0, dictionary: undefined, first: true, adler: 1 });

  const parseHead = (): boolean => {
    const c = new Cursor(head, intSize);
    try {
      if (!intSize) {
        c.need(11);
        if (head.subarray(0, 5).toString('latin1') !== 'PGDMP') throw unexpected('it does not start with PGDMP');
        const [major, minor] = [head[5]!, head[6]!];
        if (major !== ARCHIVE_VERSION[0] || minor !== ARCHIVE_VERSION[1]) throw unexpected(`archive version ${major}.${minor} (only ${ARCHIVE_VERSION.join('.')}, pg_dump 12-15, is rewritten)`);
        intSize = head[8]!;
        offSize = head[9]!;
        if (intSize < 1 || intSize > 6 || offSize < 1 || offSize > 8) throw unexpected(`integer size ${intSize}, offset size ${offSize}`);
        if (head[10] !== FORMAT_CUSTOM) throw unexpected(`format ${head[10]} (not the custom format)`);
        return parseHead();
      }
      if (tocLeft < 0) {
        c.pos = 11;
        compressionAt = c.pos;
        const compression = c.int();
        if (compression !== 0) throw unexpected(`pg_dump already compressed it (level ${compression})`);
        for (let i = 0; i < 7; i++) c.int();
        for (let i = 0; i < 3; i++) c.str();
        tocLeft = c.int();
        if (tocLeft < 0) throw unexpected(`a table of contents of ${tocLeft} entries`);
        tocStart = c.pos;
      }
      c.pos = tocStart;
      while (tocLeft > 0) {
        const dumpId = c.int();
        const hadDumper = c.int();
        for (let i = 0; i < 4; i++) c.str(); // catalog table oid, oid, tag, desc
        c.int(); // section
        for (let i = 0; i < 8; i++) c.str(); // defn, drop, copy, namespace, tablespace, table AM, owner, "false"
        while (!c.str()); // dependencies, NULL-terminated
        const flagAt = c.pos;
        const flag = c.byte();
        if (flag < 1 || flag > 3) throw unexpected(`data offset flag ${flag} in entry ${dumpId}`);
        c.need(offSize);
        // A data offset (pg_dump writing to a file sets them) points into the uncompressed archive:
        // cleared to "not set", as pg_dump writes it to a pipe; pg_restore then finds blocks by reading.
        if (flag === K_OFFSET_POS_SET) {
          head[flagAt] = K_OFFSET_POS_NOT_SET;
          head.fill(0, c.pos, c.pos + offSize);
        }
        c.pos += offSize;
        if (hadDumper) dataDumpIds.add(dumpId);
        tocLeft--;
        tocStart = c.pos;
      }
      return true;
    } catch (error) {
      if (error === NEED_MORE) return false;
      throw error;
    }
  };

  /**
   * Parses data-block bytes, queuing what they turn into; keeps what it did not parse (an incomplete
   * integer, or the rest after a pause) in `carry`. Returns true when it paused because IN_FLIGHT
   * entries wait in the queue (one read can hold thousands of small tables or large objects): the
   * caller drains the queue and calls it again with nothing new.
   */
  const parseBlocks = (input: Buffer): boolean => {
    let buf = carry.length ? (input.length ? Buffer.concat([carry, input]) : carry) : input;
    carry = EMPTY;
    let pos = 0;
    const intLength = 1 + intSize;
    const readInt = (): number | undefined => {
      if (pos + intLength > buf.length) return undefined;
      const value = decodeInt(buf, pos, intSize, 'in the data blocks');
      pos += intLength;
      return value;
    };
    while (pos < buf.length) {
      if (queue.length > IN_FLIGHT) {
        carry = buf.subarray(pos);
        return true;
      }
      if (state === 'chunkData') {
        const n = Math.min(remaining, buf.length - pos);
        append(stream!, buf, pos, pos + n);
        pos += n;
        remaining -= n;
        if (remaining === 0) state = 'chunkLen';
        continue;
      }
      if (state === 'block') {
        blockType = buf[pos++]!;
        if (blockType !== BLK_DATA && blockType !== BLK_BLOBS) throw unexpected(`a data block of type ${blockType}`);
        state = 'blockId';
        continue;
      }
      const at = pos;
      const value = readInt();
      if (value === undefined) break;
      if (state === 'blockId') {
        if (!dataDumpIds.has(value)) throw unexpected(`a data block for entry ${value}, which the table of contents does not list with data`);
        if (blocksSeen.has(value)) throw unexpected(`a second data block for entry ${value}`);
        blocksSeen.add(value);
        emitNow(Buffer.from([blockType, ...buf.subarray(at, pos)]));
        if (blockType === BLK_DATA) {
          stream = openStream();
          state = 'chunkLen';
        } else state = 'blobOid';
      } else if (state === 'blobOid') {
        emitNow(Buffer.from(buf.subarray(at, pos)));
        if (value === 0) state = 'block';
        else {
          stream = openStream();
          state = 'chunkLen';
        }
      } else if (state === 'chunkLen') {
        if (value < 0) throw unexpected(`a data chunk of length ${value}`);
        if (value === 0) {
          submit(stream!, true);
          stream = undefined;
          emitNow(encodeInt(0, intSize));
          state = blockType === BLK_BLOBS ? 'blobOid' : 'block';
        } else {
          remaining = value;
          state = 'chunkData';
        }
      }
    }
    // An incomplete integer at the end: kept (a copy, so the read it came from is not held).
    if (pos < buf.length) carry = Buffer.from(buf.subarray(pos));
    return false;
  };

  for await (let chunk of source as AsyncIterable<Buffer>) {
    sinceGc += chunk.length;
    collectNow();
    if (!headDone) {
      head = head.length ? Buffer.concat([head, chunk]) : chunk;
      const complete = parseHead();
      if (tocLeft >= 0) {
        // The header is read: what is parsed goes on now (the level set once), so a large table of
        // contents (one entry per large object) is never gathered whole, nor copied again per read.
        if (compressionAt >= 0) {
          head = Buffer.from(head);
          encodeInt(level, intSize).copy(head, compressionAt);
          compressionAt = -1;
        }
        emitNow(head.subarray(0, tocStart));
        head = head.subarray(tocStart);
        tocStart = 0;
      }
      if (!complete) continue;
      headDone = true;
      carry = EMPTY;
      chunk = head;
      head = EMPTY;
    }
    for (let paused = parseBlocks(chunk); ; paused = parseBlocks(EMPTY)) {
      while (queue.length > IN_FLIGHT) yield (await queue.shift()!)();
      collectNow();
      if (!paused) break;
    }
  }
  if (!headDone) throw unexpected('it ended inside its header or table of contents', true);
  if (state !== 'block' || carry.length) throw unexpected('it ended inside a data block (pg_dump stopped early?)', true);
  // pg_dump writes a block for every entry with data; one missing is an archive cut at a block's end.
  const missing = [...dataDumpIds].filter((id) => !blocksSeen.has(id));
  if (missing.length)
    throw unexpected(`it ended without the data of ${missing.length} entr${missing.length === 1 ? 'y' : 'ies'} (${missing.slice(0, 5).join(', ')}${missing.length > 5 ? ', ...' : ''})`, true);
  try {
    while (queue.length) yield (await queue.shift()!)();
  } finally {
    small?.close();
  }
}

/** A zlib DeflateRaw stream driven chunk by chunk (Node's `_processChunk`, kept for compatibility), read in paused mode. */
type SmallDeflate = ReturnType<typeof createDeflateRaw> & { _processChunk(chunk: Buffer, flush: number, callback: (error?: Error | null) => void): void };

function createSmallDeflate(level: number): SmallDeflate {
  // The readable side holds a whole small stream's output (< 64 KiB in, so < 64 KiB out) without
  // asking to be read: it is read once the chunk is done.
  // (zlib streams take a Transform's options too; @types/node's ZlibOptions does not list them.)
  const context = createDeflateRaw({ level, chunkSize: 64 * 1024, highWaterMark: 1024 * 1024 } as ZlibOptions) as SmallDeflate;
  context.on('error', () => {});
  return context;
}
