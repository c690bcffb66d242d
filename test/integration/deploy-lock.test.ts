import { existsSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Catalog } from '../../src/catalog/store';
import { lifeline } from '../helpers/cli';
import { tempDir } from '../helpers/db';
import { signTestRelease, testSigningKey } from '../helpers/releases';

const ENV = 'production';

// No engine needed: every case here stops before Compose is called.
describe('deploy refusals before anything runs', () => {
  let dir: ReturnType<typeof tempDir>;
  let config: string;
  let catalog: Catalog;

  beforeAll(async () => {
    dir = tempDir('lifeline-deploy-lock-');
    catalog = new Catalog(join(dir.path, 'store'));
    await signTestRelease(catalog, ENV, 'v7');
    config = join(dir.path, 'lifeline.yml');
    writeFileSync(join(dir.path, 'docker-compose.yml'), 'services:\n  api: { image: "x" }\n  web: { image: "x" }\n  worker: { image: "x" }\n');
    writeFileSync(
      config,
      `version: 1\nenvironments:\n  ${ENV}:\n    store: store\n    compose:\n      files: [docker-compose.yml]\n      command: docker-compose\n    manifest:\n      publicKey: ${testSigningKey().publicKeyPath}\n`,
    );
  });
  afterAll(() => dir.cleanup());

  const run = (args: string[]) => lifeline([...args, '--config', config, '--env', ENV], { env: { DATABASE_URL: undefined, LIFELINE_STORE: undefined, DOCKER_HOST: 'unix:///nonexistent.sock' } });

  it('reports a stale lock with its owner and leaves it for `lifeline lock break`', async () => {
    const lockFile = join(catalog.envDir(ENV), '.lock');
    writeFileSync(lockFile, JSON.stringify({ owner: 'alice (deploy run 41)', pid: 2 ** 22 + 17, host: hostname(), command: 'lifeline deploy', acquiredAt: '2026-11-21T10:00:00.000Z' }));
    const refused = await run(['deploy', '--release', 'v7']);
    expect(refused.code).toBe(3);
    expect(refused.stderr).toContain('locked by alice (deploy run 41)');
    expect(refused.stderr).toContain('lifeline lock break --env production');
    expect(existsSync(lockFile)).toBe(true);
    expect(await catalog.list(ENV, 'deployments', 'deployment.json')).toEqual([]);

    const broken = await run(['lock', 'break']);
    expect(broken.code, broken.stderr).toBe(0);
    expect(existsSync(lockFile)).toBe(false);
  });

  it('needs a verification policy and says how to give one', async () => {
    const noPolicy = join(dir.path, 'no-policy.yml');
    writeFileSync(noPolicy, `version: 1\nenvironments:\n  ${ENV}:\n    store: store\n    compose:\n      files: [docker-compose.yml]\n      command: docker-compose\n`);
    const result = await lifeline(['deploy', '--release', 'v7', '--config', noPolicy, '--env', ENV], { env: { DATABASE_URL: undefined, LIFELINE_STORE: undefined } });
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('--public-key');
  });

  it('refuses `rollback --to previous` when the history has no earlier release', async () => {
    const result = await run(['rollback', '--to', 'previous']);
    expect(result.code).toBe(3);
    expect(result.stderr).toContain('no earlier release to roll back to');
  });

  it('fails on an unknown release with nothing deployed', async () => {
    const result = await run(['deploy', '--release', 'v8']);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('release v8 has no manifest');
    expect(await catalog.list(ENV, 'deployments', 'deployment.json')).toEqual([]);
  });
});
