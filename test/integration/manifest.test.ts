import { createHash } from 'node:crypto';
import { cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DSSEBundleBuilder } from '@sigstore/sign';
import { bundleToJSON } from '@sigstore/bundle';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { Catalog } from '../../src/catalog/store';
import { LifelineError } from '../../src/errors';
import { createMemoryLogger } from '../../src/logger';
import { createReleaseManifest, listReleases } from '../../src/manifest/create';
import { KeySigner, loadSigningKey } from '../../src/manifest/keys';
import { verifyReleaseManifest } from '../../src/manifest/verify';
import type { VerificationPolicy } from '../../src/manifest/types';
import { lifeline } from '../helpers/cli';
import { fakeImage, fakeImages, makeTestSigningKey, signTestRelease, testSigningKey } from '../helpers/releases';

const failureOf = async (promise: Promise<unknown>): Promise<LifelineError> => {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(LifelineError);
  return error as LifelineError;
};

/** Every file of a directory tree with its content, to prove a refusal changed nothing. */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string) => {
    for (const entry of readdirSync(d, { withFileTypes: true })) {
      const path = join(d, entry.name);
      if (entry.isDirectory()) walk(path);
      else out[path] = createHash('sha256').update(readFileSync(path)).digest('hex');
    }
  };
  walk(dir);
  return out;
}

/** Signs arbitrary statement bytes with the test key and stores them as a release, bypassing create's checks. */
async function storeRawRelease(catalog: Catalog, env: string, release: string, payload: Buffer, payloadType = 'application/vnd.in-toto+json') {
  const signer = new KeySigner(await loadSigningKey(testSigningKey().privateKeyPem));
  const bundle = await new DSSEBundleBuilder({ signer, witnesses: [] }).create({ data: payload, type: payloadType });
  const staged = await catalog.begin(env, 'releases', release, 'release.json');
  await staged.addText('manifest.json', payload.toString('utf8'));
  await staged.addText('manifest.sigstore.json', JSON.stringify(bundleToJSON(bundle)));
  await staged.commit({ schemaVersion: 1, id: release, createdAt: new Date().toISOString() });
}

function statementWith(predicateChanges: (predicate: Record<string, any>) => void, images = fakeImages('raw')): Buffer {
  const predicate: Record<string, any> = { release: { version: 'raw', environment: 'production', createdAt: new Date().toISOString() }, images, migrationHead: null, backup: null };
  predicateChanges(predicate);
  const subject = Object.values(predicate.images as Record<string, string>).map((ref) => {
    const [name, digest] = ref.split('@');
    return { name: name!.replace(/:[^/:]+$/, ''), digest: { sha256: (digest ?? 'sha256:' + '0'.repeat(64)).slice(7) } };
  });
  return Buffer.from(JSON.stringify({ _type: 'https://in-toto.io/Statement/v1', subject, predicateType: 'https://lifeline.dev/release-manifest/v1', predicate }));
}

describe('key-based release manifests', () => {
  let dir: string;
  let catalog: Catalog;
  const env = 'production';
  const policy = (): VerificationPolicy => ({ publicKey: testSigningKey().publicKeyPath });
  const verify = (release: string, p: VerificationPolicy = policy(), c = catalog) => verifyReleaseManifest({ catalog: c, env, release, policy: p });

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'lifeline-manifest-'));
    catalog = new Catalog(join(dir, 'store'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  test('create then verify: the manifest pins images by digest and comes back from the verified payload', async () => {
    const backup = { id: '20261121T000000000Z-abcdef', sha256: 'b'.repeat(64) };
    const created = await signTestRelease(catalog, env, 'v1', fakeImages('v1'), { migrationHead: 'a1b2c3', backup, gitSha: 'deadbeef' });
    const statement = JSON.parse(readFileSync(created.manifestPath, 'utf8'));
    expect(statement._type).toBe('https://in-toto.io/Statement/v1');
    expect(statement.predicateType).toBe('https://lifeline.dev/release-manifest/v1');
    expect(statement.subject).toEqual((['api', 'web', 'worker'] as const).map((role) => ({ name: `registry.test/lifeline/${role}`, digest: { sha256: fakeImages('v1')[role].split(':').pop() } })));
    expect(created.digest).toBe(`sha256:${createHash('sha256').update(readFileSync(created.manifestPath)).digest('hex')}`);
    const bundle = JSON.parse(readFileSync(created.bundlePath, 'utf8'));
    expect(bundle.mediaType).toBe('application/vnd.dev.sigstore.bundle.v0.3+json');
    expect(bundle.dsseEnvelope.payloadType).toBe('application/vnd.in-toto+json');
    expect(bundle.verificationMaterial.publicKey.hint).toMatch(/^[0-9a-f]{64}$/);

    const verified = await verify('v1');
    expect(verified.manifest).toEqual(created.manifest);
    expect(verified.manifest.backup).toEqual(backup);
    expect(verified.manifest.migrationHead).toBe('a1b2c3');
    expect(verified.manifest.release).toMatchObject({ version: 'v1', environment: env, gitSha: 'deadbeef' });
    expect(verified.digest).toBe(created.digest);
    expect(verified.dir).toBe(catalog.entryDir(env, 'releases', 'v1'));
  });

  test('releases list newest first', async () => {
    await signTestRelease(catalog, env, 'v2', undefined, { now: new Date(Date.now() + 1000) });
    await signTestRelease(catalog, env, 'v3', undefined, { now: new Date(Date.now() + 2000) });
    expect((await listReleases(catalog, env)).map((r) => r.id).slice(0, 3)).toEqual(['v3', 'v2', 'v1']);
    expect((await listReleases(catalog, env))[0]!.metadata).toMatchObject({ id: 'v3', environment: env, signing: 'key' });
  });

  test('one byte changed in manifest.json fails verification', async () => {
    await signTestRelease(catalog, env, 'tamper-file');
    const path = join(catalog.entryDir(env, 'releases', 'tamper-file'), 'manifest.json');
    const bytes = readFileSync(path);
    const at = bytes.indexOf('@sha256:') + 8;
    bytes[at] = bytes[at] === 0x61 ? 0x62 : 0x61;
    writeFileSync(path, bytes);
    const error = await failureOf(verify('tamper-file'));
    expect(error.exitCode).toBe(1);
    expect(error.code).toBe('MANIFEST_TAMPERED');
  });

  test('one byte changed in the signed payload fails the signature, even with manifest.json changed to match', async () => {
    await signTestRelease(catalog, env, 'tamper-payload');
    const entry = catalog.entryDir(env, 'releases', 'tamper-payload');
    const bundlePath = join(entry, 'manifest.sigstore.json');
    const bundle = JSON.parse(readFileSync(bundlePath, 'utf8'));
    const payload = Buffer.from(bundle.dsseEnvelope.payload, 'base64');
    const at = payload.indexOf('@sha256:') + 8;
    payload[at] = payload[at] === 0x61 ? 0x62 : 0x61;
    bundle.dsseEnvelope.payload = payload.toString('base64');
    writeFileSync(bundlePath, JSON.stringify(bundle));
    writeFileSync(join(entry, 'manifest.json'), payload);
    const error = await failureOf(verify('tamper-payload'));
    expect(error.exitCode).toBe(1);
    expect(error.code).toBe('MANIFEST_BAD_SIGNATURE');
  });

  test('another key fails verification and names both keys', async () => {
    const other = makeTestSigningKey();
    const error = await failureOf(verify('v1', { publicKey: other.publicKeyPath }));
    expect(error.exitCode).toBe(1);
    expect(error.code).toBe('MANIFEST_BAD_SIGNATURE');
    expect(error.message).toContain('signed with another key');
  });

  test('a manifest signed for another environment fails in this one', async () => {
    const staging = new Catalog(join(dir, 'staging-store'));
    const created = await signTestRelease(staging, 'staging', 'v7');
    mkdirSync(catalog.kindDir(env, 'releases'), { recursive: true });
    cpSync(created.dir, catalog.entryDir(env, 'releases', 'v7'), { recursive: true });
    await expect(verifyReleaseManifest({ catalog: staging, env: 'staging', release: 'v7', policy: policy() })).resolves.toBeTruthy();
    const error = await failureOf(verify('v7'));
    expect(error.exitCode).toBe(1);
    expect(error.code).toBe('MANIFEST_WRONG_ENVIRONMENT');
    expect(error.message).toContain('staging');
  });

  test('a signed manifest that names an image by tag fails verification', async () => {
    await storeRawRelease(
      catalog,
      env,
      'raw',
      statementWith((p) => (p.images.api = 'registry.test/lifeline/api:latest')),
    );
    const error = await failureOf(verify('raw'));
    expect(error.exitCode).toBe(1);
    expect(error.code).toBe('MANIFEST_IMAGE_NOT_PINNED');
    expect(error.message).toContain('by tag');
  });

  test('a DSSE payloadType other than in-toto fails, though the signature itself is valid', async () => {
    await storeRawRelease(
      catalog,
      env,
      'raw2',
      statementWith((p) => (p.release.version = 'raw2')),
      'application/json',
    );
    const error = await failureOf(verify('raw2'));
    expect(error.exitCode).toBe(1);
    expect(error.code).toBe('MANIFEST_WRONG_PAYLOAD_TYPE');
  });

  test('a manifest stored under another version fails', async () => {
    await storeRawRelease(
      catalog,
      env,
      'v8',
      statementWith((p) => (p.release.version = 'v9')),
    );
    expect((await failureOf(verify('v8'))).code).toBe('MANIFEST_WRONG_RELEASE');
  });

  test('a release without its bundle is unsigned and fails', async () => {
    await signTestRelease(catalog, env, 'unsigned');
    rmSync(join(catalog.entryDir(env, 'releases', 'unsigned'), 'manifest.sigstore.json'));
    expect((await failureOf(verify('unsigned'))).code).toBe('MANIFEST_UNSIGNED');
  });

  test('unusable policies and a missing release are exit 2', async () => {
    const neither = await failureOf(verify('v1', {} as VerificationPolicy));
    expect(neither.exitCode).toBe(2);
    const both = await failureOf(verify('v1', { publicKey: testSigningKey().publicKeyPath, certificateIdentity: 'x', certificateOidcIssuer: 'https://y' } as unknown as VerificationPolicy));
    expect(both.exitCode).toBe(2);
    const missingKey = await failureOf(verify('v1', { publicKey: join(dir, 'nope.pub') }));
    expect(missingKey.exitCode).toBe(2);
    expect(missingKey.code).toBe('KEY_FILE_UNREADABLE');
    const missingRelease = await failureOf(verify('v404'));
    expect(missingRelease.exitCode).toBe(2);
  });

  test('create refuses an existing release and leaves it exactly as it was', async () => {
    const before = snapshot(catalog.entryDir(env, 'releases', 'v1'));
    const error = await failureOf(signTestRelease(catalog, env, 'v1', fakeImages('other')));
    expect(error.exitCode).toBe(2);
    expect(snapshot(catalog.entryDir(env, 'releases', 'v1'))).toEqual(before);
  });

  test('create refuses a non-P-256 key and an unsafe version before writing anything', async () => {
    const rsa = (await import('node:crypto')).generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();
    const base = { catalog, env, images: fakeImages('x'), logger: createMemoryLogger() };
    expect((await failureOf(createReleaseManifest({ ...base, release: 'rsa', signer: { privateKeyPem: rsa } }))).code).toBe('BAD_SIGNING_KEY');
    expect((await failureOf(createReleaseManifest({ ...base, release: '../escape', signer: { privateKeyPem: testSigningKey().privateKeyPem } }))).exitCode).toBe(2);
    expect(await catalog.get(env, 'releases', 'rsa', 'release.json')).toBeUndefined();
    expect(readdirSync(catalog.kindDir(env, 'releases')).filter((n) => n.startsWith('.'))).toEqual([]);
  });
});

describe('lifeline manifest (CLI)', () => {
  let dir: string;
  let store: string;
  const key = makeTestSigningKey();
  const images = (version: string) => Object.entries(fakeImages(version)).flatMap(([role, ref]) => ['--image', `${role}=${ref}`]);

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'lifeline-manifest-cli-'));
    store = join(dir, 'store');
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  test('create with --signing-key and --backup, verify with --public-key; outputs the paths and digest', async () => {
    const backupDir = join(store, 'production', 'backups', 'b1');
    mkdirSync(backupDir, { recursive: true });
    writeFileSync(join(backupDir, 'backup.json'), JSON.stringify({ schemaVersion: 1, id: 'b1', createdAt: new Date().toISOString(), files: { postgres: { sha256: 'c'.repeat(64) } } }));
    const created = await lifeline([
      'manifest',
      'create',
      '--store',
      store,
      '--env',
      'production',
      '--release',
      'v1',
      ...images('v1'),
      '--backup',
      'b1',
      '--migration-head',
      'h1',
      '--git-sha',
      'abc123',
      '--signing-key',
      key.privateKeyPath,
      '--json',
    ]);
    expect(created.stderr).not.toContain('error');
    expect(created.code).toBe(0);
    const out = JSON.parse(created.stdout);
    expect(out['manifest-path']).toBe(join(store, 'production', 'releases', 'v1', 'manifest.json'));
    expect(out.manifest.backup).toEqual({ id: 'b1', sha256: 'c'.repeat(64) });

    const verified = await lifeline(['manifest', 'verify', '--store', store, '--env', 'production', '--release', 'v1', '--public-key', key.publicKeyPath, '--json']);
    expect(verified.code).toBe(0);
    expect(JSON.parse(verified.stdout)).toMatchObject({ verified: true, digest: out.digest, 'bundle-path': out['bundle-path'] });
  });

  test('the signing key may come as PEM from LIFELINE_SIGNING_KEY and never reaches the output', async () => {
    const run = await lifeline(['manifest', 'create', '--store', store, '--env', 'production', '--release', 'v2', ...images('v2')], { env: { LIFELINE_SIGNING_KEY: key.privateKeyPem } });
    expect(run.code).toBe(0);
    const body = key.privateKeyPem.split('\n')[1]!;
    expect(run.stdout + run.stderr).not.toContain(body);
  });

  test('exit codes: 1 for a tampered manifest, 2 for a bad --image, a missing backup or no policy', async () => {
    const path = join(store, 'production', 'releases', 'v2', 'manifest.json');
    writeFileSync(path, readFileSync(path, 'utf8').replace('"v2"', '"v3"'));
    const tampered = await lifeline(['manifest', 'verify', '--store', store, '--env', 'production', '--release', 'v2', '--public-key', key.publicKeyPath]);
    expect(tampered.code).toBe(1);
    expect(tampered.stderr).toContain('verification failed');

    const badImage = await lifeline(['manifest', 'create', '--store', store, '--release', 'v4', '--image', `db=${fakeImage('db')}`, '--signing-key', key.privateKeyPath]);
    expect(badImage.code).toBe(2);
    const noBackup = await lifeline(['manifest', 'create', '--store', store, '--env', 'production', '--release', 'v4', ...images('v4'), '--backup', 'nope', '--signing-key', key.privateKeyPath]);
    expect(noBackup.code).toBe(2);
    expect(noBackup.stderr).toContain('backup nope does not exist');
    const badBackupDir = join(store, 'production', 'backups', 'b-bad');
    mkdirSync(badBackupDir, { recursive: true });
    writeFileSync(
      join(badBackupDir, 'backup.json'),
      JSON.stringify({ schemaVersion: 1, id: 'b-bad', createdAt: new Date().toISOString(), files: { postgres: { sha256: 'd'.repeat(64) } }, verified: { ok: false } }),
    );
    const failedBackup = await lifeline(['manifest', 'create', '--store', store, '--env', 'production', '--release', 'v4', ...images('v4'), '--backup', 'b-bad', '--signing-key', key.privateKeyPath]);
    expect(failedBackup.code).toBe(2);
    expect(failedBackup.stderr).toContain('failed its last verification');
    const noPolicy = await lifeline(['manifest', 'verify', '--store', store, '--env', 'production', '--release', 'v1']);
    expect(noPolicy.code).toBe(2);
  });

  test('the policy falls back to manifest.publicKey in lifeline.yml', async () => {
    const config = join(dir, 'lifeline.yml');
    writeFileSync(config, `version: 1\nstore: ${store}\nenvironments:\n  production:\n    manifest:\n      publicKey: ${key.publicKeyPath}\n`);
    const run = await lifeline(['manifest', 'verify', '--config', config, '--env', 'production', '--release', 'v1']);
    expect(run.stderr).not.toContain('error');
    expect(run.code).toBe(0);
  });

  test('keygen writes a P-256 pair that signs and verifies, and never overwrites a key', async () => {
    const out = join(dir, 'keys');
    expect((await lifeline(['manifest', 'keygen', '--out', out])).code).toBe(0);
    const again = await lifeline(['manifest', 'keygen', '--out', out]);
    expect(again.code).toBe(2);
    const create = await lifeline(['manifest', 'create', '--store', store, '--env', 'production', '--release', 'k1', ...images('k1'), '--signing-key', join(out, 'release-signing.key')]);
    expect(create.code).toBe(0);
    expect((await lifeline(['manifest', 'verify', '--store', store, '--env', 'production', '--release', 'k1', '--public-key', join(out, 'release-signing.pub')])).code).toBe(0);
  });
});
