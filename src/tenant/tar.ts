import { createReadStream } from 'node:fs';
import { Readable } from 'node:stream';

/** One member of a tar archive: a file on disk (streamed) or a small text. */
export type TarMember = { name: string; path: string; size: number } | { name: string; text: string };

const BLOCK = 512;

function writeOctal(header: Buffer, offset: number, length: number, value: number): void {
  header.write(value.toString(8).padStart(length - 1, '0') + '\0', offset, length, 'ascii');
}

/** A ustar header; sizes beyond 8 GiB use the GNU base-256 form that GNU tar and bsdtar read. */
function tarHeader(name: string, size: number, mtimeSeconds: number): Buffer {
  if (Buffer.byteLength(name) > 100) throw new Error(`tar member name too long: ${name}`);
  const header = Buffer.alloc(BLOCK);
  header.write(name, 0, 100, 'utf8');
  writeOctal(header, 100, 8, 0o644);
  writeOctal(header, 108, 8, 0);
  writeOctal(header, 116, 8, 0);
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
  header.write('0', 156, 1, 'ascii');
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
      if ('text' in member) {
        const body = Buffer.from(member.text, 'utf8');
        yield tarHeader(member.name, body.length, mtimeSeconds);
        yield body;
        yield padding(body.length);
        continue;
      }
      yield tarHeader(member.name, member.size, mtimeSeconds);
      let written = 0;
      for await (const chunk of createReadStream(member.path, { highWaterMark: 1024 * 1024 })) {
        written += (chunk as Buffer).length;
        if (written > member.size) throw new Error(`${member.path} grew while it was being archived`);
        yield chunk as Buffer;
      }
      if (written !== member.size) throw new Error(`${member.path} changed size while it was being archived`);
      yield padding(member.size);
    }
    yield Buffer.alloc(BLOCK * 2);
  }
  return Readable.from(generate(), { objectMode: false });
}
