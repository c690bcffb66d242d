import { createServer, type IncomingMessage, type Server } from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { Catalog } from '../../src/catalog/store';
import { LifelineError } from '../../src/errors';
import { resolveImageDigest } from '../../src/manifest/registry';
import { verifyReleaseManifest } from '../../src/manifest/verify';
import { lifeline } from '../helpers/cli';
import { dockerAvailable, startDockerEnvironment, type DockerEnvironment } from '../helpers/docker';
import { makeTestSigningKey } from '../helpers/releases';

/**
 * A registry that demands a bearer token the way ghcr.io and Docker Hub do: it answers 401 with
 * a `WWW-Authenticate: Bearer realm=...` challenge, hands out a token only for the right basic
 * credentials, and forwards authorized requests to the real registry.
 */
async function startTokenAuthRegistry(upstream: string, credentials: { username: string; password: string }): Promise<{ registry: string; tokenRequests: string[]; stop(): Promise<void> }> {
  const token = 'token-for-tests';
  const tokenRequests: string[] = [];
  const server: Server = createServer(async (req: IncomingMessage, res) => {
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const url = new URL(req.url ?? '/', base);
    if (url.pathname === '/token') {
      tokenRequests.push(url.search);
      const expected = `Basic ${Buffer.from(`${credentials.username}:${credentials.password}`).toString('base64')}`;
      if (req.headers.authorization !== expected) return void res.writeHead(401).end();
      res.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify({ token }));
      return;
    }
    if (req.headers.authorization !== `Bearer ${token}`) {
      res.writeHead(401, { 'WWW-Authenticate': `Bearer realm="${base}/token",service="test-registry",scope="repository:lifeline/api:pull"` }).end();
      return;
    }
    const upstreamResponse = await fetch(`http://${upstream}${url.pathname}`, { method: req.method, headers: { Accept: String(req.headers.accept ?? '') } });
    res.writeHead(upstreamResponse.status, Object.fromEntries(upstreamResponse.headers)).end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { registry: `127.0.0.1:${(server.address() as AddressInfo).port}`, tokenRequests, stop: () => new Promise<void>((resolve) => server.close(() => resolve())) };
}

describe.skipIf(!dockerAvailable())('resolving image tags through a real registry', () => {
  let docker: DockerEnvironment;
  let dir: string;
  const pushed: Record<string, string> = {};

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'lifeline-manifest-registry-'));
    docker = await startDockerEnvironment();
    for (const role of ['api', 'web', 'worker']) {
      // A distinct image per service, so a digest put under the wrong service cannot pass unnoticed.
      const tag = `${docker.registry}/lifeline/${role}:1.0.0`;
      const build = docker.docker(['build', '-q', '-t', tag, '-'], { input: `FROM ${docker.baseImage}\nLABEL org.lifeline.role=${role}\n` });
      expect(build.status, build.stderr).toBe(0);
      const push = docker.docker(['push', tag]);
      expect(push.status, push.stderr).toBe(0);
      pushed[role] = docker.docker(['inspect', '--format', '{{index .RepoDigests 0}}', tag]).stdout.trim();
    }
  });
  afterAll(async () => {
    await docker?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test('a tag resolves to the digest the registry reports for the pushed image', async () => {
    expect(pushed.api).toMatch(new RegExp(`^${docker.registry}/lifeline/api@sha256:[0-9a-f]{64}$`));
    expect(new Set(Object.values(pushed)).size).toBe(3);
    expect(await resolveImageDigest(`${docker.registry}/lifeline/api:1.0.0`)).toBe(pushed.api);
  });

  test('an unknown tag is refused with exit 2', async () => {
    const error = await resolveImageDigest(`${docker.registry}/lifeline/api:9.9.9`).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(LifelineError);
    expect((error as LifelineError).exitCode).toBe(2);
    expect((error as LifelineError).message).toContain('no tag 9.9.9');
  });

  test('the bearer-token challenge is answered with the registry credentials', async () => {
    const auth = await startTokenAuthRegistry(docker.registry, { username: 'ci', password: 'registry-secret' });
    try {
      const resolved = await resolveImageDigest(`${auth.registry}/lifeline/api:1.0.0`, { auth: { username: 'ci', password: 'registry-secret' } });
      expect(resolved).toBe(pushed.api!.replace(docker.registry, auth.registry));
      expect(auth.tokenRequests[0]).toContain('scope=repository%3Alifeline%2Fapi%3Apull');
      const anonymous = await resolveImageDigest(`${auth.registry}/lifeline/api:1.0.0`).catch((e: unknown) => e);
      expect((anonymous as LifelineError).exitCode).toBe(2);
    } finally {
      await auth.stop();
    }
  });

  test('lifeline manifest create signs the digests of tagged images; an unresolvable tag writes nothing', async () => {
    const key = makeTestSigningKey();
    const store = join(dir, 'store');
    const tags = ['api', 'web', 'worker'].flatMap((role) => ['--image', `${role}=${docker.registry}/lifeline/${role}:1.0.0`]);
    const run = await lifeline(['manifest', 'create', '--store', store, '--env', 'production', '--release', 'v1', ...tags, '--signing-key', key.privateKeyPath, '--json']);
    expect(run.stderr).not.toContain('error');
    expect(run.code).toBe(0);
    const verified = await verifyReleaseManifest({ catalog: new Catalog(store), env: 'production', release: 'v1', policy: { publicKey: key.publicKeyPath } });
    expect(verified.manifest.images).toEqual(pushed);

    const missing = await lifeline([
      'manifest',
      'create',
      '--store',
      store,
      '--env',
      'production',
      '--release',
      'v2',
      ...tags.slice(0, 4),
      '--image',
      `worker=${docker.registry}/lifeline/worker:nope`,
      '--signing-key',
      key.privateKeyPath,
    ]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain('never written with a bare tag');
    expect(await new Catalog(store).get('production', 'releases', 'v2', 'release.json')).toBeUndefined();
  });
});
