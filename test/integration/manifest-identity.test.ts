import { createServer, type Server } from 'node:http';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { exactIdentityPattern, trustedIdentities } from '../../src/manifest/trust';
import { parse } from 'yaml';
import { lifeline, REPO } from '../helpers/cli';

const OLD = 'https://github.com/acme/lifeline/.github/workflows/deploy.yml@1111111111111111111111111111111111111111';
const NEW = 'https://github.com/acme/lifeline/.github/workflows/deploy.yml@2222222222222222222222222222222222222222';
const ISSUER = 'https://token.actions.githubusercontent.com';

describe('a set of trusted keyless identities (a Lifeline upgrade keeps older manifests verifiable)', () => {
  it('reads a config list or a flag with one identity per line or comma, without blanks or repeats', () => {
    expect(trustedIdentities([OLD, NEW])).toEqual([OLD, NEW]);
    expect(trustedIdentities(`${OLD},\n ${NEW}\n${OLD}\n`)).toEqual([OLD, NEW]);
    expect(trustedIdentities(undefined)).toEqual([]);
  });

  it('matches each trusted identity exactly and nothing around them', () => {
    const pattern = exactIdentityPattern([OLD, NEW]);
    expect(pattern.test(OLD)).toBe(true);
    expect(pattern.test(NEW)).toBe(true);
    expect(pattern.test(`${OLD}x`)).toBe(false);
    expect(pattern.test(`x${NEW}`)).toBe(false);
    // The alternation is anchored as a whole: ^(?:a|b)$, never ^a|b$.
    expect(pattern.test(`${OLD} ${NEW}`)).toBe(false);
    expect(pattern.test('https://github.com/acme/lifeline/.github/workflows/deploy.yml@3333333333333333333333333333333333333333')).toBe(false);
  });
});

describe('lifeline manifest check-identity: the first job of a keyless deploy refuses before anything changes', () => {
  let dir: string;
  let config: string;
  let server: Server;
  let oidcUrl: string;
  let claims: Record<string, string> = {};

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'lifeline-identity-'));
    config = join(dir, 'lifeline.yml');
    writeFileSync(
      config,
      `version: 1\nstore: ${join(dir, 'store')}\nenvironments:\n  production:\n    manifest:\n      certificateIdentity:\n        - ${OLD}\n        - ${NEW}\n      certificateOidcIssuer: ${ISSUER}\n  staging:\n    manifest:\n      publicKey: ${join(dir, 'release.pub')}\n`,
    );
    // GitHub's OIDC endpoint, as the runner exposes it to a job with id-token: write.
    server = createServer((request, response) => {
      if (request.headers.authorization !== 'Bearer request-token' || !request.url?.includes('audience=sigstore')) {
        response.writeHead(403).end();
        return;
      }
      const part = (value: object) => Buffer.from(JSON.stringify(value)).toString('base64url');
      response.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ value: `${part({ alg: 'RS256' })}.${part(claims)}.c2lnbmF0dXJl` }));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const address = server.address() as { port: number };
    oidcUrl = `http://127.0.0.1:${address.port}/token?api-version=2.0`;
  });

  afterAll(async () => {
    await new Promise((resolve) => server.close(resolve));
    rmSync(dir, { recursive: true, force: true });
  });

  const inActions = { ACTIONS_ID_TOKEN_REQUEST_URL: () => oidcUrl, ACTIONS_ID_TOKEN_REQUEST_TOKEN: 'request-token' };
  const run = (args: string[], oidc = true) =>
    lifeline(['manifest', 'check-identity', '--config', config, '--env', 'production', '--json', ...args], {
      env: oidc
        ? { ACTIONS_ID_TOKEN_REQUEST_URL: inActions.ACTIONS_ID_TOKEN_REQUEST_URL(), ACTIONS_ID_TOKEN_REQUEST_TOKEN: inActions.ACTIONS_ID_TOKEN_REQUEST_TOKEN }
        : { ACTIONS_ID_TOKEN_REQUEST_URL: undefined, ACTIONS_ID_TOKEN_REQUEST_TOKEN: undefined },
    });

  it("accepts this job's own workflow identity, read from its OIDC token, when it is one of the trusted ones", async () => {
    claims = { job_workflow_ref: NEW.replace('https://github.com/', ''), job_workflow_sha: '2222222222222222222222222222222222222222', iss: ISSUER };
    const result = await run([]);
    expect(result.code, result.stderr).toBe(0);
    expect(JSON.parse(result.stdout)).toMatchObject({ trusted: true, identity: NEW, 'workflow-sha': '2222222222222222222222222222222222222222' });
  });

  it('refuses (exit 3) a workflow commit the policy does not list, and names the fix', async () => {
    claims = { job_workflow_ref: 'acme/lifeline/.github/workflows/deploy.yml@3333333333333333333333333333333333333333', iss: ISSUER };
    const result = await run([]);
    expect(result.code).toBe(3);
    const error = JSON.parse(result.stdout).error;
    expect(error.code).toBe('IDENTITY_NOT_TRUSTED');
    expect(error.message).toContain('@3333333333333333333333333333333333333333');
    // The same check guards the drill job: the message names both things the identity signs.
    expect(error.message).toContain('a release manifest or drill report signed by');
    expect(error.fix).toContain('manifest.certificateIdentity');
  });

  it('refuses a token from another OIDC issuer', async () => {
    claims = { job_workflow_ref: OLD.replace('https://github.com/', ''), iss: 'https://evil.example' };
    const result = await run([]);
    expect(result.code).toBe(3);
    expect(JSON.parse(result.stdout).error.message).toContain('https://evil.example');
  });

  it('checks an identity given explicitly, and a similar-looking one is not trusted', async () => {
    expect((await run(['--identity', OLD], false)).code).toBe(0);
    expect((await run(['--identity', `${OLD}-evil`], false)).code).toBe(3);
  });

  it('without an OIDC token (the caller did not grant id-token: write) it is a usage error that says which permission', async () => {
    const result = await run([], false);
    expect(result.code).toBe(2);
    expect(JSON.parse(result.stdout).error.fix).toContain('id-token: write');
  });

  // What the reusable drill.yml's first Lifeline step runs in a run called by examples/workflows/drill.yml:
  // GitHub's token names the called workflow at the ref the caller's `uses:` pins (job_workflow_ref).
  it("the example drill caller's keyless identity is trusted by the example lifeline.yml (production), and staging is told to use its key", async () => {
    const example = join(REPO, 'examples/lifeline.yml');
    const caller = parse(readFileSync(join(REPO, 'examples/workflows/drill.yml'), 'utf8')) as { jobs: Record<string, { uses?: string; with?: Record<string, unknown> }> };
    const production = caller.jobs['drill-production']!;
    expect(production.with!.keyless).toBe(true);
    const ref = production.uses!;
    expect(ref).toMatch(/^acme\/lifeline\/\.github\/workflows\/drill\.yml@[0-9a-f]{40}$/);
    claims = { job_workflow_ref: ref, job_workflow_sha: ref.split('@')[1]!, iss: ISSUER };
    const env = { ACTIONS_ID_TOKEN_REQUEST_URL: oidcUrl, ACTIONS_ID_TOKEN_REQUEST_TOKEN: 'request-token' };
    const ok = await lifeline(['manifest', 'check-identity', '--config', example, '--env', 'production', '--json'], { env });
    expect(ok.code, ok.stdout + ok.stderr).toBe(0);
    expect(JSON.parse(ok.stdout)).toMatchObject({ trusted: true, identity: `https://github.com/${ref}` });
    // The staging job of the same caller signs with the key; run keyless, it would be told so.
    expect(caller.jobs['drill-staging']!.with!.keyless).toBe(false);
    const staging = await lifeline(['manifest', 'check-identity', '--config', example, '--env', 'staging', '--json'], { env });
    expect(staging.code).toBe(2);
    expect(JSON.parse(staging.stdout).error.code).toBe('POLICY_EXPECTS_KEY');
  });

  it('an environment that verifies with a public key is told that keyless signing will not verify', async () => {
    const result = await lifeline(['manifest', 'check-identity', '--config', config, '--env', 'staging', '--identity', NEW, '--json']);
    expect(result.code).toBe(2);
    expect(JSON.parse(result.stdout).error.code).toBe('POLICY_EXPECTS_KEY');
  });
});
