import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { parseGithubOutput, REPO, runBundle } from '../helpers/cli';
import { fakeImages, makeTestSigningKey } from '../helpers/releases';

const noEnv = {
  LIFELINE_STORE: undefined,
  LIFELINE_ENV: undefined,
  LIFELINE_CONFIG: undefined,
  LIFELINE_SIGNING_KEY: undefined,
  ACTIONS_ID_TOKEN_REQUEST_URL: undefined,
  ACTIONS_ID_TOKEN_REQUEST_TOKEN: undefined,
};
/** What a reader of the job log sees: the runner hides `::add-mask::` lines and masks their values. */
const visible = (text: string) =>
  text
    .split('\n')
    .filter((line) => !line.startsWith('::add-mask::'))
    .join('\n');

describe('the manifest action bundle, run the way the GitHub runner runs it', () => {
  let dir: string;
  const key = makeTestSigningKey();
  const images = Object.entries(fakeImages('v1'))
    .map(([role, ref]) => `${role}=${ref}`)
    .join('\n');

  beforeAll(() => {
    execFileSync(process.execPath, [join(REPO, 'scripts/build.mjs'), 'manifest'], { cwd: REPO, stdio: 'inherit' });
    dir = mkdtempSync(join(tmpdir(), 'lifeline-manifest-action-'));
  }, 300_000);
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  function runnerFiles(name: string) {
    const files = { output: join(dir, `${name}.output`), summary: join(dir, `${name}.summary`) };
    for (const f of Object.values(files)) writeFileSync(f, '');
    return files;
  }

  test('operation create signs with the PEM from a secret, never prints it, and sets the outputs', async () => {
    const gh = runnerFiles('create');
    const store = join(dir, 'store');
    mkdirSync(store);
    const run = await runBundle(
      'manifest',
      { operation: 'create', store, env: 'production', release: 'v1', image: images, 'migration-head': 'h1', 'signing-key': key.privateKeyPem, keyless: 'false' },
      { env: { ...noEnv, GITHUB_OUTPUT: gh.output, GITHUB_STEP_SUMMARY: gh.summary } },
    );
    expect(run.code, run.stdout + run.stderr).toBe(0);
    const outputs = parseGithubOutput(readFileSync(gh.output, 'utf8'));
    expect(outputs['manifest-path']).toBe(join(store, 'production', 'releases', 'v1', 'manifest.json'));
    expect(outputs.digest).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(readFileSync(gh.summary, 'utf8')).toContain('Release manifest signed');
    for (const line of key.privateKeyPem.split('\n').filter((l) => l && !l.startsWith('-----'))) expect(visible(run.stdout + run.stderr)).not.toContain(line);

    const verifyFiles = runnerFiles('verify');
    const verified = await runBundle(
      'manifest',
      { operation: 'verify', store, env: 'production', release: 'v1', 'public-key': key.publicKeyPath },
      { env: { ...noEnv, GITHUB_OUTPUT: verifyFiles.output, GITHUB_STEP_SUMMARY: verifyFiles.summary } },
    );
    expect(verified.code, verified.stdout + verified.stderr).toBe(0);
    expect(parseGithubOutput(readFileSync(verifyFiles.output, 'utf8')).digest).toBe(outputs.digest);
  });

  test('keyless without the id-token permission fails with the permission to add, and writes nothing', async () => {
    const gh = runnerFiles('keyless');
    const store = join(dir, 'store-keyless');
    const run = await runBundle(
      'manifest',
      { operation: 'create', store, env: 'production', release: 'v1', image: images, keyless: 'true' },
      { env: { ...noEnv, GITHUB_OUTPUT: gh.output, GITHUB_STEP_SUMMARY: gh.summary } },
    );
    expect(run.code).not.toBe(0);
    expect(run.stdout + run.stderr).toContain('id-token: write');
    expect(() => readFileSync(join(store, 'production', 'releases', 'v1', 'release.json'))).toThrow();
  });
});
