import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, copyFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { Catalog } from '../../src/catalog/store';
import { REPO, runProcess } from '../helpers/cli';
import { makeTestSigningKey, signTestRelease, type TestSigningKey } from '../helpers/releases';

/** The shell blocks of docs/manifest-verification.md marked `<!-- tested: NAME -->`. */
function testedBlocks(): Record<string, string> {
  const text = readFileSync(join(REPO, 'docs', 'manifest-verification.md'), 'utf8');
  const blocks: Record<string, string> = {};
  for (const m of text.matchAll(/<!-- tested: ([a-z0-9-]+) -->\n```bash\n([\s\S]*?)\n```/g)) blocks[m[1]!] = m[2]!;
  return blocks;
}

/**
 * Runs the published verification steps as an operator would: from a directory with the
 * catalog in ./.lifeline and the public key in ./release-signing.pub, with `lifeline` on PATH.
 */
describe('the published verification steps (docs/manifest-verification.md)', () => {
  let dir: string;
  let key: TestSigningKey;
  const blocks = testedBlocks();
  const run = (name: string, cwd = dir) => runProcess('bash', ['-euo', 'pipefail', '-c', blocks[name]!], { cwd, env: { PATH: `${join(dir, 'bin')}:${process.env.PATH}` } });
  const releaseDir = () => join(dir, '.lifeline', 'production', 'releases', 'v1.4.0');

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'lifeline-manifest-docs-'));
    key = makeTestSigningKey();
    copyFileSync(key.publicKeyPath, join(dir, 'release-signing.pub'));
    mkdirSync(join(dir, 'bin'));
    const wrapper = join(dir, 'bin', 'lifeline');
    writeFileSync(wrapper, `#!/bin/sh\nexec "${process.execPath}" --import "${join(REPO, 'node_modules/tsx/dist/esm/index.mjs')}" "${join(REPO, 'src/cli/index.ts')}" "$@"\n`);
    chmodSync(wrapper, 0o755);
    await signTestRelease(new Catalog(join(dir, '.lifeline')), 'production', 'v1.4.0', undefined, { key, migrationHead: 'a1b2c3' });
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  test('the doc marks both blocks', () => {
    expect(Object.keys(blocks).sort()).toEqual(['cli-key', 'openssl-key']);
  });

  test('lifeline manifest verify, as documented, accepts the release', async () => {
    const result = await run('cli-key');
    expect(result.stderr).not.toContain('error');
    expect(result.code).toBe(0);
    expect(result.stdout).toContain('verified for production');
  });

  test('the openssl steps accept the release and leave the catalog unchanged', async () => {
    const before = readFileSync(join(releaseDir(), 'manifest.json'));
    const result = await run('openssl-key');
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    expect(result.stdout).toContain('Verified OK');
    expect(readFileSync(join(releaseDir(), 'manifest.json'))).toEqual(before);
  });

  test('the openssl steps reject another key and a changed payload', async () => {
    const other = mkdtempSync(join(dir, 'other-'));
    mkdirSync(join(other, '.lifeline', 'production', 'releases'), { recursive: true });
    const copy = join(other, '.lifeline', 'production', 'releases', 'v1.4.0');
    mkdirSync(copy);
    for (const name of ['manifest.json', 'manifest.sigstore.json']) copyFileSync(join(releaseDir(), name), join(copy, name));
    copyFileSync(makeTestSigningKey().publicKeyPath, join(other, 'release-signing.pub'));
    const wrongKey = await run('openssl-key', other);
    expect(wrongKey.code).not.toBe(0);
    expect(wrongKey.stdout).toContain('Verification failure');

    copyFileSync(key.publicKeyPath, join(other, 'release-signing.pub'));
    const bundlePath = join(copy, 'manifest.sigstore.json');
    const bundle = JSON.parse(readFileSync(bundlePath, 'utf8'));
    const payload = Buffer.from(bundle.dsseEnvelope.payload, 'base64');
    const at = payload.indexOf('"v1.4.0"') + 2;
    payload[at] = '2'.charCodeAt(0);
    bundle.dsseEnvelope.payload = payload.toString('base64');
    writeFileSync(bundlePath, JSON.stringify(bundle));
    writeFileSync(join(copy, 'manifest.json'), payload);
    const tampered = await run('openssl-key', other);
    expect(tampered.code).not.toBe(0);
    expect(tampered.stdout).toContain('Verification failure');
  });
});
