import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Catalog } from '../../src/catalog/store';
import { createMemoryLogger } from '../../src/logger';
import { createReleaseManifest, type CreatedRelease } from '../../src/manifest/create';
import { generateSigningKeyPair } from '../../src/manifest/keys';
import type { ReleaseImages } from '../../src/manifest/types';
import { trackedTempDir } from './temp-dirs';

export interface TestSigningKey {
  privateKeyPem: string;
  publicKeyPem: string;
  /** Path of the public key PEM, for `{ publicKey }` policies and `--public-key`. */
  publicKeyPath: string;
  /** Path of the private key PEM, for `--signing-key`. */
  privateKeyPath: string;
}

/** A fresh ECDSA P-256 key pair written to a temporary directory (removed when the test file ends). */
export function makeTestSigningKey(): TestSigningKey {
  const pair = generateSigningKeyPair();
  const dir = trackedTempDir('lifeline-keys-');
  const publicKeyPath = join(dir, 'release-signing.pub');
  const privateKeyPath = join(dir, 'release-signing.key');
  writeFileSync(publicKeyPath, pair.publicKeyPem);
  writeFileSync(privateKeyPath, pair.privateKeyPem, { mode: 0o600 });
  return { ...pair, publicKeyPath, privateKeyPath };
}

let sharedKey: TestSigningKey | undefined;
/** One key per test process, so several releases verify against the same public key. */
export function testSigningKey(): TestSigningKey {
  return (sharedKey ??= makeTestSigningKey());
}

/** A digest-pinned reference that needs no registry: `registry.test/lifeline/<name>@sha256:<hash of seed>`. */
export function fakeImage(name: string, seed: string = name): string {
  return `registry.test/lifeline/${name}@sha256:${createHash('sha256').update(seed).digest('hex')}`;
}

/** Images for a version, distinct per version, pinned by digest. */
export function fakeImages(version: string): ReleaseImages {
  return { api: fakeImage('api', `api-${version}`), web: fakeImage('web', `web-${version}`), worker: fakeImage('worker', `worker-${version}`) };
}

/**
 * Signs a release into the catalog with a key (no registry, no network), for tests of deploy
 * and rollback. Verify it with `{ publicKey: key.publicKeyPath }`.
 */
export async function signTestRelease(
  catalog: Catalog,
  env: string,
  version: string,
  images: ReleaseImages = fakeImages(version),
  options: { key?: TestSigningKey; migrationHead?: string | null; backup?: { id: string; sha256: string } | null; gitSha?: string; now?: Date } = {},
): Promise<CreatedRelease & { key: TestSigningKey }> {
  const key = options.key ?? testSigningKey();
  const created = await createReleaseManifest({
    catalog,
    env,
    release: version,
    images,
    gitSha: options.gitSha,
    migrationHead: options.migrationHead,
    backup: options.backup,
    signer: { privateKeyPem: key.privateKeyPem },
    logger: createMemoryLogger(),
    now: options.now,
  });
  return { ...created, key };
}
