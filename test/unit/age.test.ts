import { chmodSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { generateIdentity, identityToRecipient } from 'age-encryption';
import { afterAll, describe, expect, it } from 'vitest';
import { decryptReadable, encryptingWriter, loadIdentity, parseRecipients } from '../../src/crypto/age';
import { isLifelineError } from '../../src/errors';
import { createMemoryLogger } from '../../src/logger';

const dir = mkdtempSync(join(tmpdir(), 'lifeline-age-unit-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function keyPair() {
  const key = await generateIdentity();
  return { key, recipient: await identityToRecipient(key) };
}

function failureOf(fn: () => unknown): { kind?: string; code?: string; message: string; fix?: string } {
  try {
    fn();
  } catch (error) {
    if (isLifelineError(error)) return { kind: error.kind, code: error.code, message: error.message, fix: error.fix };
    throw error;
  }
  throw new Error('did not throw');
}

async function encrypt(data: Buffer, recipients: string[]): Promise<Buffer> {
  const chunks: Buffer[] = [];
  const sink = new Writable({ write: (c, _e, cb) => (chunks.push(Buffer.from(c)), cb()) });
  const writer = encryptingWriter(sink, recipients);
  await pipeline(Readable.from([data]), writer.stream);
  await writer.done();
  return Buffer.concat(chunks);
}

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(Buffer.from(c));
  return Buffer.concat(chunks);
}

describe('age recipients in lifeline.yml', () => {
  it('names the key path and the fix; a secret key pasted as a recipient is called a leak', async () => {
    const { key, recipient } = await keyPair();
    expect(parseRecipients([recipient, recipient], 'environments.prod.encryption.recipients')).toEqual([recipient]);
    const bad = failureOf(() => parseRecipients([recipient, 'age1abc'], 'environments.prod.encryption.recipients'));
    expect(bad).toMatchObject({ kind: 'usage', code: 'CONFIG_INVALID' });
    expect(bad.message).toContain('environments.prod.encryption.recipients[1]');
    expect(bad.fix).toContain('age-keygen -y');
    // A right-looking key with a broken bech32 checksum.
    const flipped = recipient.slice(0, -1) + (recipient.endsWith('q') ? 'p' : 'q');
    expect(failureOf(() => parseRecipients([flipped], 'r')).code).toBe('CONFIG_INVALID');
    const leaked = failureOf(() => parseRecipients([key], 'environments.prod.encryption.recipients'));
    expect(leaked.message).toContain('secret key');
    expect(leaked.message).not.toContain(key);
  });
});

describe('the identity', () => {
  it('reads age-keygen output with comments and several keys, and registers every key with the masker', async () => {
    const a = await keyPair();
    const b = await keyPair();
    const logger = createMemoryLogger();
    const text = `# created: 2026-12-02\n# public key: ${a.recipient}\n${a.key}\n\n# second\n${b.key}\n`;
    const identity = (await loadIdentity({ LIFELINE_AGE_IDENTITY: text }, logger))!;
    expect(identity.recipients).toEqual([a.recipient, b.recipient]);
    logger.info(`oops ${a.key} and ${b.key}`);
    expect(logger.lines.at(-1)).toBe('oops *** and ***');
    expect(await loadIdentity({}, logger)).toBeUndefined();
  });

  it('refuses a key file others can read, a link, and never quotes a malformed line', async () => {
    const a = await keyPair();
    const file = join(dir, 'key.txt');
    writeFileSync(file, `${a.key}\n`, { mode: 0o644 });
    chmodSync(file, 0o644);
    const loose = await loadIdentity({ LIFELINE_AGE_IDENTITY_FILE: file }, createMemoryLogger()).catch((e) => e);
    expect(loose).toMatchObject({ kind: 'refused', code: 'AGE_IDENTITY_UNSAFE' });
    expect(loose.fix).toBe(`chmod 600 ${file} (and consider the key exposed to whoever could read it)`);
    chmodSync(file, 0o600);
    expect((await loadIdentity({ LIFELINE_AGE_IDENTITY_FILE: file }, createMemoryLogger()))!.recipients).toEqual([a.recipient]);
    const link = join(dir, 'link.txt');
    symlinkSync(file, link);
    expect(await loadIdentity({ LIFELINE_AGE_IDENTITY_FILE: link }, createMemoryLogger()).catch((e) => e)).toMatchObject({ code: 'AGE_IDENTITY_UNSAFE' });
    const mangled = `${a.key.slice(0, -3)}XYZ!`;
    const bad = await loadIdentity({ LIFELINE_AGE_IDENTITY: mangled }, createMemoryLogger()).catch((e) => e);
    expect(bad).toMatchObject({ kind: 'usage', code: 'AGE_IDENTITY_INVALID' });
    expect(bad.message).not.toContain(mangled.slice(20));
    expect(await loadIdentity({ LIFELINE_AGE_IDENTITY_FILE: join(dir, 'missing') }, createMemoryLogger()).catch((e) => e)).toMatchObject({ kind: 'usage', code: 'AGE_IDENTITY_UNREADABLE' });
    // Outside attack: the key itself pasted where its path belongs was printed whole in the error.
    const pasted = await loadIdentity({ LIFELINE_AGE_IDENTITY_FILE: a.key }, createMemoryLogger()).catch((e) => e);
    expect(pasted).toMatchObject({ kind: 'usage', code: 'AGE_IDENTITY_UNREADABLE' });
    expect(`${pasted.message} ${pasted.fix}`).not.toContain(a.key.slice(16));
    expect(pasted.fix).toContain('LIFELINE_AGE_IDENTITY');
  });
});

describe('streaming encryption', () => {
  it('round-trips several MiB through a slow consumer, holding bounded memory', async () => {
    const { key, recipient } = await keyPair();
    const identity = (await loadIdentity({ LIFELINE_AGE_IDENTITY: key }, createMemoryLogger()))!;
    const data = Buffer.alloc(5 * 1024 * 1024 + 17);
    for (let i = 0; i < data.length; i++) data[i] = (i * 31) & 0xff;
    // A target that takes 64 KiB and then waits: the writer must respect its backpressure.
    const received: Buffer[] = [];
    let maxBuffered = 0;
    const slow = new Writable({ highWaterMark: 64 * 1024, write: (c, _e, cb) => (received.push(Buffer.from(c)), setImmediate(cb)) });
    const writer = encryptingWriter(slow, [recipient]);
    const source = Readable.from(
      (function* () {
        for (let i = 0; i < data.length; i += 256 * 1024) yield data.subarray(i, i + 256 * 1024);
      })(),
    );
    const watch = setInterval(() => (maxBuffered = Math.max(maxBuffered, writer.stream.writableLength)), 1);
    await pipeline(source, writer.stream);
    const plain = await writer.done();
    clearInterval(watch);
    expect(plain.bytes).toBe(data.length);
    expect(maxBuffered).toBeLessThan(2 * 1024 * 1024);
    const back = await readAll(await decryptReadable(Readable.from([Buffer.concat(received)]), identity, 'test'));
    expect(back.equals(data)).toBe(true);
  });

  it('a wrong identity fails at the header; a flipped byte fails the stream', async () => {
    const a = await keyPair();
    const b = await keyPair();
    const sealed = await encrypt(Buffer.alloc(200_000, 7), [a.recipient]);
    const wrong = (await loadIdentity({ LIFELINE_AGE_IDENTITY: b.key }, createMemoryLogger()))!;
    await expect(decryptReadable(Readable.from([sealed]), wrong, 'backup X')).rejects.toMatchObject({ code: 'AGE_WRONG_IDENTITY' });
    const right = (await loadIdentity({ LIFELINE_AGE_IDENTITY: a.key }, createMemoryLogger()))!;
    const tampered = Buffer.from(sealed);
    tampered[tampered.length - 100]! ^= 1;
    const stream = await decryptReadable(Readable.from([tampered]), right, 'backup X');
    await expect(readAll(stream)).rejects.toMatchObject({ code: 'AGE_DECRYPT_FAILED' });
  });
});
