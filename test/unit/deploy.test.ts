import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { Catalog } from '../../src/catalog/store';
import { COMPOSE_V1, COMPOSE_V2, composeInvocation, detectComposeCommand, normalizeProjectName } from '../../src/runner/compose';
import { appendHistory, currentRelease, previousRelease, releasesInUse, type HistoryEvent } from '../../src/deploy/history';
import { renderOverride } from '../../src/deploy/override';
import { assertPinnedImages } from '../../src/deploy/release';
import { LocalRunner } from '../../src/runner/runner';
import { tempDir } from '../helpers/db';

const digest = (c: string) => `127.0.0.1:5000/shop/api@sha256:${c.repeat(64)}`;

describe('Compose command construction', () => {
  const project = { files: ['/srv/shop/docker-compose.yml', '/srv/shop/prod.yml'], projectName: 'shop' };

  it('builds v2 and v1 argv with the override file last, so it wins', () => {
    expect(composeInvocation({ ...project, command: COMPOSE_V2 }, ['up', '-d', '--no-deps', 'api', 'web', 'worker'], '/store/o.yml')).toEqual({
      tool: 'docker',
      args: ['compose', '-f', '/srv/shop/docker-compose.yml', '-f', '/srv/shop/prod.yml', '-f', '/store/o.yml', '-p', 'shop', 'up', '-d', '--no-deps', 'api', 'web', 'worker'],
    });
    expect(composeInvocation({ files: ['c.yml'], command: COMPOSE_V1 }, ['pull', 'api'])).toEqual({ tool: 'docker-compose', args: ['-f', 'c.yml', 'pull', 'api'] });
  });

  it('names the project the way Compose labels its containers', () => {
    expect(normalizeProjectName('Shop.Prod_1')).toBe('shopprod_1');
  });

  it('uses the configured command without probing, and detects v2 before v1', async () => {
    const dirs = tempDir('lifeline-compose-');
    try {
      const noTools = new LocalRunner({ baseEnv: { PATH: dirs.path } });
      expect(await detectComposeCommand(noTools, 'docker compose', dirs.path)).toBe(COMPOSE_V2);
      expect(await detectComposeCommand(noTools, 'docker-compose', dirs.path)).toBe(COMPOSE_V1);
      await expect(detectComposeCommand(noTools, 'auto', dirs.path)).rejects.toMatchObject({ code: 'COMPOSE_MISSING', exitCode: 2 });

      // A docker CLI whose Compose plugin answers (v2 cannot be installed on this machine).
      const v2Dir = join(dirs.path, 'v2');
      mkdirSync(v2Dir);
      writeFileSync(join(v2Dir, 'docker'), '#!/bin/sh\n[ "$1 $2" = "compose version" ] && echo "Docker Compose version v2.29.0" && exit 0\nexit 1\n');
      chmodSync(join(v2Dir, 'docker'), 0o755);
      expect(await detectComposeCommand(new LocalRunner({ baseEnv: { PATH: v2Dir } }), 'auto', v2Dir)).toBe(COMPOSE_V2);
    } finally {
      dirs.cleanup();
    }
  });

  const onlyV1 = spawnSync('sh', ['-c', 'command -v docker-compose'], { stdio: 'ignore' }).status === 0 && spawnSync('docker', ['compose', 'version'], { stdio: 'ignore' }).status !== 0;
  it.runIf(onlyV1)('falls back to docker-compose (v1) on a machine without the plugin', async () => {
    expect(await detectComposeCommand(new LocalRunner(), 'auto', process.env.PATH ?? '')).toBe(COMPOSE_V1);
  });
});

describe('override file', () => {
  it('pins each service image and keeps the rest of the operator file (docker-compose config)', () => {
    const dirs = tempDir('lifeline-override-');
    try {
      const base = join(dirs.path, 'docker-compose.yml');
      writeFileSync(
        base,
        'version: "3.8"\nservices:\n  api:\n    image: shop/api:latest\n    environment: { A: "1" }\n  web:\n    image: shop/web:latest\n  worker:\n    image: shop/worker:latest\n  db:\n    image: postgres:15\n',
      );
      const override = join(dirs.path, 'override.yml');
      const images = { api: digest('a'), web: digest('b'), worker: digest('c') };
      writeFileSync(override, renderOverride(images, 'release v42\nline two'));
      expect(parse(renderOverride(images, 'x'))).toEqual({ services: { api: { image: images.api }, web: { image: images.web }, worker: { image: images.worker } } });
      const config = spawnSync('docker-compose', ['-f', base, '-f', override, 'config'], { encoding: 'utf8' });
      expect(config.status, config.stderr).toBe(0);
      const merged = parse(config.stdout);
      expect(merged.services.api).toMatchObject({ image: images.api, environment: { A: '1' } });
      expect(merged.services.worker.image).toBe(images.worker);
      expect(merged.services.db.image).toBe('postgres:15');
    } finally {
      dirs.cleanup();
    }
  });

  it('refuses a release whose image is a tag rather than a digest', () => {
    const release = { version: 'v1', images: { api: digest('a'), web: 'shop/web:latest', worker: digest('c') }, migrationHead: null, backup: null };
    expect(() => assertPinnedImages(release)).toThrow(/web image "shop\/web:latest" is not pinned by digest/);
  });
});

describe('history', () => {
  const dirs = tempDir('lifeline-history-');
  afterAll(() => dirs.cleanup());
  const event = (action: 'deploy' | 'rollback', from: string | null, to: string, result: HistoryEvent['result'], running: string | null): HistoryEvent => ({
    action,
    from,
    to,
    result,
    running,
    runningDeployment: running ? `dep-${running}` : null,
    deployment: `dep-${to}`,
    at: new Date().toISOString(),
    by: 'test',
    durationsMs: { total: 1 },
  });

  it('knows the current and previous release, and which releases rollback still needs', async () => {
    const history = [
      event('deploy', null, 'v1', 'succeeded', 'v1'),
      event('deploy', 'v1', 'v2', 'succeeded', 'v2'),
      event('deploy', 'v2', 'v3', 'failed', 'v2'),
      event('deploy', 'v2', 'v4', 'succeeded', 'v4'),
      event('rollback', 'v4', 'v5', 'refused', 'v4'),
    ];
    expect(currentRelease(history)).toEqual({ release: 'v4', deployment: 'dep-v4' });
    expect(previousRelease(history)).toBe('v2');
    expect(previousRelease([...history, event('rollback', 'v4', 'v2', 'succeeded', 'v2')])).toBe('v4');
    expect(previousRelease(history.slice(0, 1))).toBeUndefined();

    const catalog = new Catalog(dirs.path);
    for (const e of history) await appendHistory(catalog, 'production', e);
    expect(await releasesInUse(catalog, 'production', 1)).toEqual(new Set(['v4', 'v2']));
    expect(await releasesInUse(catalog, 'production', 5)).toEqual(new Set(['v4', 'v2', 'v1']));
    expect(await releasesInUse(catalog, 'staging', 5)).toEqual(new Set());
  });
});

describe('status never prints a forged history value raw', () => {
  it('escapes the release the history claims and every container value in the differences', async () => {
    const { reconcile } = await import('../../src/deploy/state');
    const event = {
      action: 'deploy' as const,
      from: 'v5',
      to: 'v2',
      result: 'succeeded' as const,
      running: 'v2\nfix: run rm -rf /',
      runningDeployment: null,
      deployment: 'x',
      at: '2026-12-02T08:17:30.000Z',
      by: 'root',
      durationsMs: { total: 1 },
    };
    const row = {
      role: 'api' as const,
      service: 'api',
      containerId: 'abcdef0123456789',
      imageRef: '127.0.0.1:5000/api@sha256:00\nFAKE',
      imageId: null,
      status: 'running',
      health: null,
      release: 'v4',
    };
    const result = reconcile({ events: [event], lines: [1], corrupt: [] }, { services: [row], release: null, allRunning: true });
    for (const line of result.differences) expect(line).not.toContain('\n');
    expect(result.differences.join('|')).toContain('but the history says v2\\nfix: run rm -rf /');
  });
});
