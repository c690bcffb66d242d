import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { gunzipSync } from 'node:zlib';
import { afterAll, describe, expect, it } from 'vitest';
import { readTarMembers, tarStream } from '../../src/catalog/tar';

const dir = mkdtempSync(join(tmpdir(), 'lifeline-tar-read-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe('readTarMembers: what an archive holds, without extracting it', () => {
  it("reads GNU tar's archive: names (long ones through ustar's prefix), sizes, sha256 and first bytes of every member", async () => {
    const root = join(dir, 'gnu');
    const deep = join(root, 'folder', 'a'.repeat(60), 'b'.repeat(60));
    mkdirSync(deep, { recursive: true });
    const big = randomBytes(3 * 1024 * 1024 + 17);
    writeFileSync(join(root, 'folder', 'big.bin'), big);
    writeFileSync(join(root, 'folder', 'empty'), '');
    writeFileSync(join(deep, 'x.age'), 'age-encryption.org/v1\nrest');
    const archive = join(dir, 'gnu.tar.gz');
    execFileSync('tar', ['--format=ustar', '-czf', archive, '-C', root, 'folder']);
    const members = await readTarMembers(Readable.from([gunzipSync(readFileSync(archive))]), 22);
    const files = members.filter((m) => m.type === '0');
    expect(files.map((m) => m.name).sort()).toEqual([`folder/${'a'.repeat(60)}/${'b'.repeat(60)}/x.age`, 'folder/big.bin', 'folder/empty']);
    const byName = new Map(files.map((m) => [m.name, m]));
    expect(byName.get('folder/big.bin')).toMatchObject({ size: big.length, sha256: sha(big), head: big.subarray(0, 22) });
    expect(byName.get('folder/empty')).toMatchObject({ size: 0, sha256: sha(Buffer.alloc(0)) });
    expect(byName.get(`folder/${'a'.repeat(60)}/${'b'.repeat(60)}/x.age`)!.head.toString()).toBe('age-encryption.org/v1\n');
    expect(members.some((m) => m.type === '5')).toBe(true);
  });

  it('reads what Lifeline writes, fed in pieces of every size', async () => {
    const content = randomBytes(5000);
    const chunks: Buffer[] = [];
    for await (const c of tarStream([
      { name: 'f/one', content },
      { name: 'f/two', text: 'hello' },
    ]))
      chunks.push(c as Buffer);
    const whole = Buffer.concat(chunks);
    const pieces: Buffer[] = [];
    for (let i = 0, n = 1; i < whole.length; i += n, n = (n * 7) % 1031 || 1) pieces.push(whole.subarray(i, i + n));
    const members = await readTarMembers(Readable.from(pieces), 4);
    expect(members.map((m) => [m.name, m.size, m.sha256])).toEqual([
      ['f/one', 5000, sha(content)],
      ['f/two', 5, sha(Buffer.from('hello'))],
    ]);
  });

  it('a truncated archive or a damaged header fails with TAR_CORRUPT instead of reading as fewer members', async () => {
    const chunks: Buffer[] = [];
    for await (const c of tarStream([{ name: 'f/one', content: randomBytes(2000) }])) chunks.push(c as Buffer);
    const whole = Buffer.concat(chunks);
    await expect(readTarMembers(Readable.from([whole.subarray(0, 1200)]))).rejects.toMatchObject({ code: 'TAR_CORRUPT' });
    const damaged = Buffer.from(whole);
    damaged[10] ^= 0x20;
    await expect(readTarMembers(Readable.from([damaged]))).rejects.toMatchObject({ code: 'TAR_CORRUPT' });
  });
});
