import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { Signature, Signer } from '@sigstore/sign';
import { usageError } from '../errors';

/** A new ECDSA P-256 key pair in PEM (PKCS#8 private, SPKI public), the form `signing-key` takes. */
export function generateSigningKeyPair(): { privateKeyPem: string; publicKeyPem: string } {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return {
    privateKeyPem: privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(),
    publicKeyPem: publicKey.export({ format: 'pem', type: 'spki' }).toString(),
  };
}

/** The key id a bundle carries as its public key hint: sha256 of the DER SubjectPublicKeyInfo, hex. */
export function publicKeyHint(key: KeyObject): string {
  const publicKey = key.type === 'private' ? createPublicKey(key) : key;
  return createHash('sha256')
    .update(publicKey.export({ format: 'der', type: 'spki' }))
    .digest('hex');
}

function assertP256(key: KeyObject, what: string): void {
  if (key.asymmetricKeyType !== 'ec' || key.asymmetricKeyDetails?.namedCurve !== 'prime256v1') {
    throw usageError(
      'BAD_SIGNING_KEY',
      `${what} is not an ECDSA P-256 key`,
      'generate one with `openssl ecparam -name prime256v1 -genkey -noout | openssl pkcs8 -topk8 -nocrypt` or `lifeline manifest keygen`',
    );
  }
}

/** The private key from a PEM string or from the path of a PEM file (the secret may be either). */
export async function loadSigningKey(pemOrPath: string): Promise<KeyObject> {
  const pem = pemOrPath.includes('-----BEGIN') ? pemOrPath : await readKeyFile(pemOrPath, 'signing key');
  let key: KeyObject;
  try {
    key = createPrivateKey({ key: pem, format: 'pem' });
  } catch (error) {
    throw usageError(
      'BAD_SIGNING_KEY',
      `the signing key is not a readable unencrypted PEM private key (${(error as Error).message})`,
      'pass an unencrypted PKCS#8 or SEC1 PEM ECDSA P-256 private key, or the path of one',
    );
  }
  assertP256(key, 'the signing key');
  return key;
}

export async function loadPublicKey(path: string): Promise<KeyObject> {
  const pem = await readKeyFile(path, 'public key');
  let key: KeyObject;
  try {
    key = createPublicKey({ key: pem, format: 'pem' });
  } catch (error) {
    throw usageError('BAD_PUBLIC_KEY', `${path} is not a PEM public key (${(error as Error).message})`, 'pass the PEM public key published for the signing key (-----BEGIN PUBLIC KEY-----)');
  }
  assertP256(key, path);
  return key;
}

async function readKeyFile(path: string, what: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (error) {
    throw usageError(
      'KEY_FILE_UNREADABLE',
      `cannot read the ${what} file ${path} (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`,
      `pass the path of the ${what} PEM file${what === 'signing key' ? ', or the PEM itself from a secret' : ''}`,
    );
  }
}

/** A Sigstore `Signer` that signs with a local ECDSA P-256 key; the bundle names the key by its hint. */
export class KeySigner implements Signer {
  readonly hint: string;
  private readonly publicKeyPem: string;

  constructor(private readonly privateKey: KeyObject) {
    this.hint = publicKeyHint(privateKey);
    this.publicKeyPem = createPublicKey(privateKey).export({ format: 'pem', type: 'spki' }).toString();
  }

  async sign(data: Buffer): Promise<Signature> {
    return {
      signature: sign('sha256', data, this.privateKey),
      key: { $case: 'publicKey', publicKey: this.publicKeyPem, hint: this.hint },
    };
  }
}
