import { createReadStream } from 'node:fs';
import { lstat, readFile } from 'node:fs/promises';
import { PassThrough, Readable, Transform, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Decrypter, Encrypter, identityToRecipient } from 'age-encryption';
import { failure, refusal, usageError } from '../errors';
import { HashingTransform, type HashedFile } from '../catalog/files';
import type { Logger } from '../logger';

/** The suffix of every payload stored encrypted. */
export const AGE_SUFFIX = '.age';
export const IDENTITY_ENV = 'LIFELINE_AGE_IDENTITY';
export const IDENTITY_FILE_ENV = 'LIFELINE_AGE_IDENTITY_FILE';
/** How to give an identity, for every message that needs one. */
export const IDENTITY_FIX = `give the age identity (the AGE-SECRET-KEY-1... line age-keygen wrote) in ${IDENTITY_ENV}, or the path of its key file (mode 0600) in ${IDENTITY_FILE_ENV}`;

/**
 * The action input that carries the identity (a secret): masked with core.setSecret before
 * anything else runs, then handed to the command as LIFELINE_AGE_IDENTITY.
 */
export const AGE_IDENTITY_INPUT = {
  name: 'age-identity',
  type: 'string',
  actionOnly: true,
  description:
    'The age identity (AGE-SECRET-KEY-1... as age-keygen writes it) to decrypt backups stored encrypted (encryption.recipients); pass it from a secret. Masked before anything runs. The CLI reads LIFELINE_AGE_IDENTITY or LIFELINE_AGE_IDENTITY_FILE instead.',
} as const;

/** What backup.json records for a payload stored as an age file. */
export interface PayloadEncryption {
  format: 'age';
  /** The public keys it was encrypted to. */
  recipients: string[];
  /** sha256 and size of the plaintext: what a decrypting verify checks. */
  plaintextSha256: string;
  plaintextBytes: number;
}

// Bech32: "age1" + 58 characters of the bech32 alphabet (a 32-byte X25519 key).
const X25519_RECIPIENT = /^age1[02-9ac-hj-np-z]{58}$/;
const X25519_IDENTITY = /^AGE-SECRET-KEY-1[02-9AC-HJ-NP-Z]{58}$/;

/**
 * Checks `encryption.recipients` (X25519 `age1...` keys, as `age-keygen -y` prints them). A bad one
 * is a configuration error naming its key path; the age library checks the checksum too.
 */
export function parseRecipients(values: readonly string[], keyPath: string): string[] {
  const seen = new Set<string>();
  values.forEach((raw, i) => {
    const value = raw.trim();
    const where = `${keyPath}[${i}]`;
    const fix = 'write the public key as age-keygen prints it ("Public key: age1..."; age-keygen -y KEYFILE prints it again): age1 followed by 58 letters and digits; never the AGE-SECRET-KEY line';
    if (/^AGE-SECRET-KEY-/i.test(value))
      throw usageError(
        'CONFIG_INVALID',
        `${where} is a secret key (AGE-SECRET-KEY-...), not a recipient: remove it from lifeline.yml and treat it as leaked`,
        'put the public key there (age-keygen -y KEYFILE prints it) and give the secret key only through LIFELINE_AGE_IDENTITY / LIFELINE_AGE_IDENTITY_FILE',
      );
    if (!X25519_RECIPIENT.test(value)) throw usageError('CONFIG_INVALID', `${where} ${JSON.stringify(value.slice(0, 80))} is not an age X25519 recipient`, fix);
    try {
      new Encrypter().addRecipient(value);
    } catch (error) {
      throw usageError('CONFIG_INVALID', `${where} ${JSON.stringify(value)} is not a valid age recipient (${(error as Error).message})`, fix);
    }
    seen.add(value);
  });
  return [...seen];
}

export interface AgeIdentity {
  /** The secret keys (AGE-SECRET-KEY-1...). Never printed. */
  keys: string[];
  /** Their public keys. */
  recipients: string[];
  /** Where it came from (the variable's name, or the file's path): safe to print. */
  source: string;
}

/**
 * The identity from LIFELINE_AGE_IDENTITY (key text, possibly several lines with comments, as
 * age-keygen writes it) or LIFELINE_AGE_IDENTITY_FILE (a file only its owner can read). Every
 * key is registered with the logger's masker (core.setSecret in Actions) before anything else.
 * Undefined when neither is set.
 */
export async function loadIdentity(env: NodeJS.ProcessEnv, logger: Logger): Promise<AgeIdentity | undefined> {
  const text = env[IDENTITY_ENV];
  const file = env[IDENTITY_FILE_ENV];
  if (text && text.trim() !== '') {
    maskKeyLines(text, logger);
    if (file) logger.warn(`both ${IDENTITY_ENV} and ${IDENTITY_FILE_ENV} are set: ${IDENTITY_ENV} is used`);
    return { ...(await parseIdentityText(text, IDENTITY_ENV)), source: IDENTITY_ENV };
  }
  if (!file || file.trim() === '') return undefined;
  // A key pasted where its path belongs is a secret: never print it, and tell where a key goes.
  if (/AGE-SECRET-KEY-/i.test(file)) {
    logger.secret(file);
    throw usageError(
      'AGE_IDENTITY_UNREADABLE',
      `${IDENTITY_FILE_ENV} holds an age secret key, not the path of a file (the key is not shown)`,
      `put the key in ${IDENTITY_ENV} instead, or write it to a file readable only by you and set ${IDENTITY_FILE_ENV} to that file's path`,
    );
  }
  let info;
  try {
    info = await lstat(file);
  } catch (error) {
    throw usageError('AGE_IDENTITY_UNREADABLE', `${IDENTITY_FILE_ENV} names ${file}, which cannot be read (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`, IDENTITY_FIX);
  }
  if (info.isSymbolicLink() || !info.isFile())
    throw refusal(
      'AGE_IDENTITY_UNSAFE',
      `${IDENTITY_FILE_ENV} names ${file}, which is not a regular file (a link or special file is never read as a key)`,
      'point it at the key file itself, a regular file of mode 0600',
    );
  if ((info.mode & 0o077) !== 0) {
    throw refusal(
      'AGE_IDENTITY_UNSAFE',
      `the age identity file ${file} is readable or writable by others (mode ${(info.mode & 0o777).toString(8).padStart(4, '0')}); it was not used`,
      `chmod 600 ${file} (and consider the key exposed to whoever could read it)`,
    );
  }
  if (typeof process.getuid === 'function' && info.uid !== process.getuid()) {
    throw refusal(
      'AGE_IDENTITY_UNSAFE',
      `the age identity file ${file} belongs to uid ${info.uid}, not to the user running Lifeline (uid ${process.getuid()}); it was not used`,
      `chown $(id -u) ${file} && chmod 600 ${file}`,
    );
  }
  const content = await readFile(file, 'utf8');
  maskKeyLines(content, logger);
  return { ...(await parseIdentityText(content, file)), source: file };
}

function maskKeyLines(text: string, logger: Logger): void {
  for (const line of text.split(/\r?\n/)) {
    const value = line.trim();
    if (value && !value.startsWith('#')) logger.secret(value);
  }
}

async function parseIdentityText(text: string, source: string): Promise<{ keys: string[]; recipients: string[] }> {
  const keys: string[] = [];
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim();
    if (line === '' || line.startsWith('#')) continue;
    // The message never quotes the line: it may be a mangled secret key.
    if (!X25519_IDENTITY.test(line)) {
      throw usageError(
        'AGE_IDENTITY_INVALID',
        `line ${i + 1} of ${source} is not an age X25519 identity (expected AGE-SECRET-KEY-1 followed by 58 letters and digits; comments start with #)`,
        `${IDENTITY_FIX}; an identity in another form (passphrase, plugin, SSH key) is not supported`,
      );
    }
    keys.push(line);
  }
  if (!keys.length) throw usageError('AGE_IDENTITY_INVALID', `${source} holds no age identity (no AGE-SECRET-KEY-1... line)`, IDENTITY_FIX);
  const recipients: string[] = [];
  for (const key of keys) {
    try {
      recipients.push(await identityToRecipient(key));
    } catch (error) {
      throw usageError('AGE_IDENTITY_INVALID', `${source} holds an AGE-SECRET-KEY line that is not a valid key (${(error as Error).message.replace(/AGE-SECRET-KEY-1\S*/g, '***')})`, IDENTITY_FIX);
    }
  }
  return { keys, recipients };
}

/** Exit 2 naming both variables: the operation needs an identity and none was given. */
export function identityRequired(what: string): Error {
  return usageError('AGE_IDENTITY_REQUIRED', `${what} is encrypted with age and no identity was given; nothing was changed`, IDENTITY_FIX);
}

/**
 * A writable that takes plaintext, hashes and counts it, encrypts it to `recipients` and pipes the
 * age file into `target`, with backpressure all the way (the plaintext side waits for the target).
 * `done()` resolves with the plaintext's hash and size once the target has finished.
 */
export function encryptingWriter(target: Writable, recipients: readonly string[]): { stream: Writable; done: () => Promise<HashedFile> } {
  if (!recipients.length) throw failure('INTERNAL_INVARIANT', 'internal error: encryptingWriter needs at least one recipient');
  const plain = new HashingTransform();
  const finished = (async () => {
    const encrypter = new Encrypter();
    for (const r of recipients) encrypter.addRecipient(r);
    const cipher = await encrypter.encrypt(Readable.toWeb(plain) as ReadableStream<Uint8Array>);
    await pipeline(Readable.fromWeb(cipher as import('node:stream/web').ReadableStream<Uint8Array>), target);
  })();
  finished.catch(() => {
    // Reported through done(); a writer whose target failed must not block the producer.
    plain.destroy();
  });
  return {
    stream: plain,
    async done() {
      await finished;
      return { sha256: plain.digest(), bytes: plain.bytes };
    },
  };
}

/** Encrypts a readable to `recipients`: the age file as a readable (for pipelines). */
export function encryptReadable(source: Readable, recipients: readonly string[]): Readable {
  const out = new PassThrough();
  const writer = encryptingWriter(out, recipients);
  pipeline(source, writer.stream).catch((error: Error) => out.destroy(error));
  writer.done().catch((error: Error) => out.destroy(error));
  return out;
}

/**
 * The age library's reasons, as a fixed phrase: some of its messages quote the bytes they choke on
 * ("invalid version " + the file's first line), and a plaintext file taken for an age file would put
 * its first row (a tenant's data) into the error, the log and --json.
 */
const AGE_REASONS = [
  'invalid version',
  'invalid header HMAC',
  'invalid header',
  'invalid footer',
  'invalid stanza',
  'invalid X25519 stanza',
  'invalid base64',
  'invalid line length',
  'invalid non-ASCII byte in header',
  'ciphertext is too small',
  'ciphertext size is invalid',
  'final chunk is empty',
  'stream ended before reading',
  'invalid tag',
];
function safeReason(message: string): string {
  const known = AGE_REASONS.filter((r) => message.toLowerCase().includes(r.toLowerCase())).sort((a, b) => b.length - a.length)[0];
  if (known === 'invalid version') return 'it does not start with an age header (age-encryption.org/v1)';
  return known ?? 'the age stream is invalid';
}

/** The message of a decryption failure (wrong key, damaged file): exit 1, with what to do. */
function decryptFailure(what: string, error: unknown): Error {
  const message = (error as Error).message ?? String(error);
  if (/no identity matched/i.test(message)) {
    return failure('AGE_WRONG_IDENTITY', `${what} cannot be decrypted with the given identity (it was encrypted to other recipients)`, {
      fix: `give an identity whose public key is among the recipients recorded in backup.json; ${IDENTITY_FIX}`,
    });
  }
  return failure('AGE_DECRYPT_FAILED', `${what} failed to decrypt: ${safeReason(message)} (the file is damaged or not an age file)`, {
    fix: 'check its checksum (lifeline verify) and use another copy or backup',
  });
}

/**
 * Decrypts an age stream: the header is read (and the identity tried) before this resolves, so a
 * wrong identity fails here, before anything downstream starts. The returned readable errors if
 * any later chunk fails authentication (a tampered byte): consumers must treat that as failure.
 */
export async function decryptReadable(source: Readable, identity: AgeIdentity, what: string): Promise<Readable> {
  const decrypter = new Decrypter();
  for (const key of identity.keys) decrypter.addIdentity(key);
  let plain;
  try {
    plain = await decrypter.decrypt(Readable.toWeb(source) as ReadableStream<Uint8Array>);
  } catch (error) {
    source.destroy();
    throw decryptFailure(what, error);
  }
  const out = Readable.fromWeb(plain as import('node:stream/web').ReadableStream<Uint8Array>);
  // Later failures (a chunk that fails authentication) carry the same explanation.
  const wrapped = new Transform({ transform: (chunk, _enc, cb) => cb(null, chunk) });
  out.on('error', (error) => wrapped.destroy(decryptFailure(what, error)));
  out.pipe(wrapped);
  return wrapped;
}

/** Decrypts a stored file as a readable of plaintext (1 MiB reads). */
export function decryptFile(path: string, identity: AgeIdentity, what: string): Promise<Readable> {
  return decryptReadable(createReadStream(path, { highWaterMark: 1024 * 1024 }), identity, what);
}

/** Whether `identity` holds a key for one of `recipients` (recorded public keys). */
export function identityMatches(identity: AgeIdentity, recipients: readonly string[]): boolean {
  return identity.recipients.some((r) => recipients.includes(r));
}

/** The first line of every age file (the format's version line). */
export const AGE_HEADER = 'age-encryption.org/v1\n';

/** Whether bytes (the start of a file) begin as an age file does. */
export function startsAsAge(head: Buffer): boolean {
  return head.subarray(0, AGE_HEADER.length).toString('latin1') === AGE_HEADER;
}
