import { createReadStream } from 'node:fs';
import { Readable } from 'node:stream';
import { failure } from '../errors';

/** Who owns a member and its permission bits; default root:root, 0644 for files, 0755 for directories. */
export interface TarOwnership {
  mode?: number;
  uid?: number;
  gid?: number;
}

/** One member of a tar archive: a file on disk (streamed), a small text or buffer, or a directory. */
export type TarMember = (
  | { name: string; path: string; size: number }
  | { name: string; /** Opened when the member is reached (a decrypting stream); must give exactly `size` bytes. */ open: () => Promise<Readable>; size: number }
  | { name: string; text: string }
  | { name: string; content: Uint8Array }
  | { name: string; directory: true }
) &
  TarOwnership;

const BLOCK = 512;

function writeOctal(header: Buffer, offset: number, length: number, value: number): void {
  header.write(value.toString(8).padStart(length - 1, '0') + '\0', offset, length, 'ascii');
}

/** A ustar header; sizes beyond 8 GiB use the GNU base-256 form that GNU tar and bsdtar read. */
function tarHeader(name: string, size: number, mtimeSeconds: number, type: '0' | '5', owner: Required<TarOwnership>): Buffer {
  if (Buffer.byteLength(name) > 100) throw failure('TAR_NAME_TOO_LONG', `tar member name too long (over 100 bytes): ${name}`);
  const header = Buffer.alloc(BLOCK);
  header.write(name, 0, 100, 'utf8');
  writeOctal(header, 100, 8, owner.mode & 0o7777);
  writeOctal(header, 108, 8, owner.uid);
  writeOctal(header, 116, 8, owner.gid);
  if (size < 8 ** 11) {
    writeOctal(header, 124, 12, size);
  } else {
    header[124] = 0x80;
    let rest = BigInt(size);
    for (let i = 135; i > 124; i--) {
      header[i] = Number(rest & 0xffn);
      rest >>= 8n;
    }
  }
  writeOctal(header, 136, 12, Math.floor(mtimeSeconds));
  header.fill(' ', 148, 156);
  header.write(type, 156, 1, 'ascii');
  header.write('ustar\0', 257, 6, 'ascii');
  header.write('00', 263, 2, 'ascii');
  let checksum = 0;
  for (const byte of header) checksum += byte;
  header.write(checksum.toString(8).padStart(6, '0') + '\0 ', 148, 8, 'ascii');
  return header;
}

const padding = (size: number) => Buffer.alloc((BLOCK - (size % BLOCK)) % BLOCK);

/** A tar stream of the members, reading each file as it goes (bounded memory). */
export function tarStream(members: readonly TarMember[], mtime = new Date()): Readable {
  const mtimeSeconds = mtime.getTime() / 1000;
  async function* generate(): AsyncGenerator<Buffer> {
    for (const member of members) {
      const owner = { uid: member.uid ?? 0, gid: member.gid ?? 0 };
      if ('directory' in member) {
        yield tarHeader(`${member.name.replace(/\/$/, '')}/`, 0, mtimeSeconds, '5', { mode: member.mode ?? 0o755, ...owner });
        continue;
      }
      const fileOwner = { mode: member.mode ?? 0o644, ...owner };
      if ('open' in member) {
        yield tarHeader(member.name, member.size, mtimeSeconds, '0', fileOwner);
        let written = 0;
        for await (const chunk of await member.open()) {
          written += (chunk as Buffer).length;
          if (written > member.size) throw failure('FILE_CHANGED', `${member.name} is longer than the ${member.size} bytes recorded`);
          yield chunk as Buffer;
        }
        if (written !== member.size) throw failure('FILE_CHANGED', `${member.name} is ${written} bytes, ${member.size} were recorded`);
        yield padding(member.size);
        continue;
      }
      if (!('path' in member)) {
        const body = 'text' in member ? Buffer.from(member.text, 'utf8') : Buffer.from(member.content);
        yield tarHeader(member.name, body.length, mtimeSeconds, '0', fileOwner);
        yield body;
        yield padding(body.length);
        continue;
      }
      yield tarHeader(member.name, member.size, mtimeSeconds, '0', fileOwner);
      let written = 0;
      for await (const chunk of createReadStream(member.path, { highWaterMark: 1024 * 1024 })) {
        written += (chunk as Buffer).length;
        if (written > member.size) throw failure('FILE_CHANGED', `${member.path} grew while it was being archived`);
        yield chunk as Buffer;
      }
      if (written !== member.size) throw failure('FILE_CHANGED', `${member.path} changed size while it was being archived (${written} bytes, expected ${member.size})`);
      yield padding(member.size);
    }
    yield Buffer.alloc(BLOCK * 2);
  }
  return Readable.from(generate(), { objectMode: false });
}

/** The first file's content of a (small) tar archive, e.g. `docker cp CONTAINER:FILE -`. */
export function firstTarFile(archive: Buffer): Buffer | undefined {
  if (archive.length < BLOCK) return undefined;
  const size = parseInt(archive.subarray(124, 136).toString('ascii').replace(/\0.*$/s, '').trim() || '0', 8);
  if (!Number.isFinite(size)) return undefined;
  return archive.subarray(BLOCK, BLOCK + size);
}

/** What `readTarMembers` reports of each member. */
export interface TarMemberDigest {
  name: string;
  /** '0' regular file, '5' directory, anything else as written in the header. */
  type: string;
  size: number;
  sha256: string;
  /** The first bytes of its content (at most `headBytes`). */
  head: Buffer;
}

/**
 * Reads a tar stream to its end, one member at a time, hashing each member's content and keeping
 * its first `headBytes` bytes: what an archive holds, checked without extracting it (bounded
 * memory whatever the member sizes). A header with a bad checksum or a stream that ends inside a
 * member fails.
 */
export async function readTarMembers(source: AsyncIterable<Buffer | string>, headBytes = 32): Promise<TarMemberDigest[]> {
  const { createHash } = await import('node:crypto');
  const members: TarMemberDigest[] = [];
  let header = Buffer.alloc(0);
  let current: { digest: TarMemberDigest; hash: ReturnType<typeof createHash>; left: number; pad: number } | undefined;
  let ended = false;
  for await (const raw of source) {
    let chunk = typeof raw === 'string' ? Buffer.from(raw) : raw;
    while (chunk.length && !ended) {
      if (current) {
        if (current.left > 0) {
          const take = chunk.subarray(0, Math.min(current.left, chunk.length));
          current.hash.update(take);
          if (current.digest.head.length < headBytes) current.digest.head = Buffer.concat([current.digest.head, take.subarray(0, headBytes - current.digest.head.length)]);
          current.left -= take.length;
          chunk = chunk.subarray(take.length);
          continue;
        }
        const skip = Math.min(current.pad, chunk.length);
        current.pad -= skip;
        chunk = chunk.subarray(skip);
        if (current.pad === 0) {
          current.digest.sha256 = current.hash.digest('hex');
          members.push(current.digest);
          current = undefined;
        }
        continue;
      }
      const need = BLOCK - header.length;
      header = Buffer.concat([header, chunk.subarray(0, need)]);
      chunk = chunk.subarray(need);
      if (header.length < BLOCK) continue;
      const block = header;
      header = Buffer.alloc(0);
      if (block.every((b) => b === 0)) {
        ended = true;
        break;
      }
      const recorded = parseInt(block.subarray(148, 156).toString('ascii').replace(/\0.*$/s, '').trim(), 8);
      let sum = 0;
      for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 32 : block[i]!;
      if (recorded !== sum) throw failure('TAR_CORRUPT', 'the archive has a tar header with a wrong checksum: it is damaged or not a tar archive');
      const name = block.subarray(0, 100).toString('utf8').replace(/\0.*$/s, '');
      const prefix = block.subarray(257, 262).toString('ascii') === 'ustar' ? block.subarray(345, 500).toString('utf8').replace(/\0.*$/s, '') : '';
      const size =
        block[124]! & 0x80
          ? Number(block.subarray(125, 136).reduce((acc, b) => acc * 256n + BigInt(b), 0n))
          : parseInt(block.subarray(124, 136).toString('ascii').replace(/\0.*$/s, '').trim() || '0', 8);
      const type = String.fromCharCode(block[156]!) === '\0' ? '0' : String.fromCharCode(block[156]!);
      current = { digest: { name: prefix ? `${prefix}/${name}` : name, type, size, sha256: '', head: Buffer.alloc(0) }, hash: createHash('sha256'), left: size, pad: (BLOCK - (size % BLOCK)) % BLOCK };
      if (size === 0) {
        current.digest.sha256 = current.hash.digest('hex');
        members.push(current.digest);
        current = undefined;
      }
    }
  }
  if (current || header.length) throw failure('TAR_CORRUPT', 'the archive ends inside a member: it is truncated');
  return members;
}
