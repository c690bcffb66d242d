import { describe, expect, test } from 'vitest';
import { LifelineError } from '../../src/errors';
import { parseImageReference } from '../../src/manifest/image-ref';
import { parseChallenge, registryBaseUrl } from '../../src/manifest/registry';
import { buildStatement, parseVerifiedStatement, serializeStatement } from '../../src/manifest/statement';
import { exactIdentityPattern } from '../../src/manifest/trust';
import type { ReleaseManifest } from '../../src/manifest/types';
import { fakeImages } from '../helpers/releases';

const DIGEST = `sha256:${'a'.repeat(64)}`;

describe('image references', () => {
  test.each([
    ['127.0.0.1:5000/lifeline/api:1.2.3', { registry: '127.0.0.1:5000', repository: 'lifeline/api', tag: '1.2.3', digest: undefined }],
    [`ghcr.io/acme/shop-api@${DIGEST}`, { registry: 'ghcr.io', repository: 'acme/shop-api', tag: undefined, digest: DIGEST }],
    [`ghcr.io/acme/api:v1@${DIGEST}`, { registry: 'ghcr.io', repository: 'acme/api', tag: 'v1', digest: DIGEST }],
    ['nginx', { registry: 'docker.io', repository: 'library/nginx', tag: 'latest', digest: undefined }],
    ['acme/api:2', { registry: 'docker.io', repository: 'acme/api', tag: '2', digest: undefined }],
    ['localhost/api', { registry: 'localhost', repository: 'api', tag: 'latest', digest: undefined }],
  ])('%s', (reference, expected) => {
    expect(parseImageReference(reference)).toEqual(expected);
  });

  test.each(['', 'Upper/Case:1', `ghcr.io/acme/api@sha256:${'a'.repeat(63)}`, 'ghcr.io/acme/api@md5:abc', 'ghcr.io/acme/api:bad tag'])('%j is a usage error', (reference) => {
    const error = (() => {
      try {
        parseImageReference(reference);
      } catch (e) {
        return e;
      }
    })();
    expect(error).toBeInstanceOf(LifelineError);
    expect((error as LifelineError).exitCode).toBe(2);
  });

  test('plain http only for loopback registries', () => {
    expect(registryBaseUrl('127.0.0.1:5000')).toBe('http://127.0.0.1:5000');
    expect(registryBaseUrl('localhost:5000')).toBe('http://localhost:5000');
    expect(registryBaseUrl('ghcr.io')).toBe('https://ghcr.io');
    expect(registryBaseUrl('docker.io')).toBe('https://registry-1.docker.io');
    expect(registryBaseUrl('127.0.0.1.evil.example')).toBe('https://127.0.0.1.evil.example');
  });

  test('bearer challenges with commas inside quoted values', () => {
    expect(parseChallenge('Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:acme/api:pull,push"')).toEqual({
      scheme: 'bearer',
      params: { realm: 'https://ghcr.io/token', service: 'ghcr.io', scope: 'repository:acme/api:pull,push' },
    });
    expect(parseChallenge('Basic realm="Registry"').scheme).toBe('basic');
  });
});

describe('exact identity matching', () => {
  const identity = 'https://github.com/acme/shop/.github/workflows/deploy.yml@refs/heads/main';
  test('only the identity itself matches', () => {
    const pattern = exactIdentityPattern(identity);
    expect(pattern.test(identity)).toBe(true);
    expect(pattern.test(`${identity}-evil`)).toBe(false);
    expect(pattern.test(`https://evil.example/?${identity}`)).toBe(false);
    expect(pattern.test(identity.replace('deploy.yml', 'deployXyml'))).toBe(false);
  });
  test('regex metacharacters are literal', () => {
    const odd = 'https://x/(a|b)*+?[c]{2}^$\\.yml@refs/heads/main';
    expect(exactIdentityPattern(odd).test(odd)).toBe(true);
    expect(exactIdentityPattern(odd).test('https://x/a')).toBe(false);
  });
});

describe('the statement', () => {
  const manifest: ReleaseManifest = {
    release: { version: 'v1', environment: 'production', createdAt: '2026-11-21T00:00:00.000Z' },
    images: fakeImages('v1'),
    migrationHead: 'abc',
    backup: { id: 'b1', sha256: 'c'.repeat(64) },
  };
  const roundTrip = (change: (s: Record<string, any>) => void) => {
    const statement = JSON.parse(serializeStatement(buildStatement(manifest)).toString()) as Record<string, any>;
    change(statement);
    return () => parseVerifiedStatement(Buffer.from(JSON.stringify(statement)));
  };

  test('round-trips', () => {
    expect(roundTrip(() => {})()).toEqual(manifest);
  });
  test.each([
    ['another statement type', (s: Record<string, any>) => (s._type = 'https://in-toto.io/Statement/v0.1'), 'MANIFEST_WRONG_TYPE'],
    ['another predicate type', (s: Record<string, any>) => (s.predicateType = 'https://slsa.dev/provenance/v1'), 'MANIFEST_WRONG_PREDICATE'],
    ['an image by tag', (s: Record<string, any>) => (s.predicate.images.web = 'registry.test/lifeline/web:latest'), 'MANIFEST_IMAGE_NOT_PINNED'],
    ['a subject that is not the image', (s: Record<string, any>) => (s.subject[0].digest.sha256 = 'f'.repeat(64)), 'MANIFEST_SUBJECT_MISMATCH'],
    ['an extra subject', (s: Record<string, any>) => s.subject.push({ name: 'x', digest: { sha256: 'f'.repeat(64) } }), 'MANIFEST_SUBJECT_MISMATCH'],
    ['a missing service', (s: Record<string, any>) => delete s.predicate.images.worker, 'MANIFEST_INVALID_PREDICATE'],
    ['a bad backup checksum', (s: Record<string, any>) => (s.predicate.backup.sha256 = 'xyz'), 'MANIFEST_INVALID_PREDICATE'],
  ])('refuses %s', (_what, change, code) => {
    expect(roundTrip(change)).toThrow(expect.objectContaining({ code, kind: 'failed' }));
  });
});

describe('the published JSON Schema', () => {
  test('names the predicate type and requires what the verifier requires', async () => {
    const { readFileSync } = await import('node:fs');
    const { join } = await import('node:path');
    const schema = JSON.parse(readFileSync(join(import.meta.dirname, '..', '..', 'schemas', 'release-manifest.v1.schema.json'), 'utf8'));
    expect(schema.$id).toBe('https://lifeline.dev/release-manifest/v1');
    expect(schema.required.sort()).toEqual(['backup', 'images', 'migrationHead', 'release']);
    expect(schema.properties.images.required).toEqual(['api', 'web', 'worker']);
    const pinned = new RegExp(schema.$defs.pinnedImage.pattern);
    for (const ref of Object.values(fakeImages('v1'))) expect(pinned.test(ref)).toBe(true);
    expect(pinned.test('registry.test/lifeline/api:latest')).toBe(false);
  });
});
