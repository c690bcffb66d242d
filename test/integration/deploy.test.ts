import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Catalog } from '../../src/catalog/store';
import { buildReleaseImages, createStack, ROLES, type Role, type TestStack } from '../fixtures/stack/stack';
import { lifeline, parseGithubOutput, REPO, runBundle, type CliRun } from '../helpers/cli';
import { createDatabase, dropDatabase, sql, tempDir } from '../helpers/db';
import { dockerAvailable, startDockerEnvironment, type DockerEnvironment } from '../helpers/docker';
import { makeTestSigningKey, signTestRelease, testSigningKey } from '../helpers/releases';

const ENV = 'production';
const PRE_MIGRATION_BACKUP = { id: '20261121T220000000Z-0a1b2c', sha256: 'a'.repeat(64) };

// Several deploys per case, each with its settle window: minutes on a loaded 2-core machine.
describe.skipIf(!dockerAvailable())('deploy and rollback on a real Docker engine', { timeout: 600_000 }, () => {
  let docker: DockerEnvironment;
  let stack: TestStack;
  let store: ReturnType<typeof tempDir>;
  let configPath: string;
  let images: Record<'v1' | 'v2' | 'v3', Record<Role, string>>;
  let dbContainer: string;

  beforeAll(async () => {
    docker = await startDockerEnvironment();
    stack = await createStack(docker, 'llshop');
    store = tempDir('lifeline-deploy-');
    images = {
      v1: buildReleaseImages(docker, 'v1'),
      v2: buildReleaseImages(docker, 'v2'),
      v3: buildReleaseImages(docker, 'v3', { unhealthy: ['api'] }),
    };
    const catalog = new Catalog(store.path);
    await signTestRelease(catalog, ENV, 'v1', images.v1, { migrationHead: 'a1' });
    await signTestRelease(catalog, ENV, 'v2', images.v2, { migrationHead: 'b2', backup: PRE_MIGRATION_BACKUP });
    await signTestRelease(catalog, ENV, 'v3', images.v3, { migrationHead: 'b2' });
    // Signed with the right key, then edited: v1's images swapped for v3's.
    const tampered = await signTestRelease(catalog, ENV, 'v1-tampered', images.v1, { migrationHead: 'a1' });
    writeFileSync(tampered.manifestPath, readFileSync(tampered.manifestPath, 'utf8').split(images.v1.api).join(images.v3.api));
    await signTestRelease(catalog, ENV, 'v2-other-key', images.v2, { key: makeTestSigningKey(), migrationHead: 'b2' });

    configPath = join(stack.dir, 'lifeline.yml');
    writeFileSync(
      configPath,
      [
        'version: 1',
        'environments:',
        `  ${ENV}:`,
        `    store: ${store.path}`,
        '    postgres:',
        '      binDir: /usr/lib/postgresql/15/bin',
        '      migrationHeadQuery: SELECT version_num FROM alembic_version',
        '    compose:',
        '      files: [docker-compose.yml]',
        `      projectName: ${stack.projectName}`,
        '      command: docker-compose',
        // web is judged by an HTTP URL, api and worker by their Compose healthchecks.
        `      services: { web: { healthUrl: "http://127.0.0.1:${stack.ports.web}/health" } }`,
        '      healthTimeout: 60s',
        '      settle: 2s',
        '    manifest:',
        `      publicKey: ${testSigningKey().publicKeyPath}`,
        '',
      ].join('\n'),
    );
    const up = stack.compose(['up', '-d', 'db']);
    expect(up.status, up.stderr).toBe(0);
    dbContainer = stack.containers().db!.id;
  });

  afterAll(async () => {
    stack?.remove();
    await docker?.stop();
    store?.cleanup();
  });

  const run = (args: string[], env: Record<string, string | undefined> = {}): Promise<CliRun> =>
    lifeline([...args, '--config', configPath, '--env', ENV], { env: { ...docker.env, DATABASE_URL: undefined, LIFELINE_STORE: undefined, GITHUB_ACTOR: 'deploy-bot', ...env } });

  async function expectRunning(version: 'v1' | 'v2') {
    expect(await stack.health()).toEqual({ api: `api ${version}`, web: `web ${version}`, worker: `worker ${version}` });
    const containers = stack.containers();
    for (const role of ROLES) expect(containers[role]?.imageRef, role).toBe(images[version][role]);
    // The database stand-in is never recreated by a deploy.
    expect(containers.db?.id).toBe(dbContainer);
  }

  it('deploys v1, then v2, then rolls back to v1 on the v1 digests', async () => {
    const first = await run(['deploy', '--release', 'v1']);
    expect(first.code, first.stderr).toBe(0);
    await expectRunning('v1');

    const second = await run(['deploy', '--release', 'v2', '--json']);
    expect(second.code, second.stderr).toBe(0);
    const outcome = JSON.parse(second.stdout);
    expect(outcome).toMatchObject({ action: 'deploy', release: 'v2', from: 'v1' });
    // The override kept in the catalog is what pinned the services.
    const override = readFileSync(outcome.overrideFile, 'utf8');
    for (const role of ROLES) expect(override).toContain(images.v2[role]);
    expect(outcome.overrideFile.startsWith(join(store.path, ENV, 'deployments'))).toBe(true);
    await expectRunning('v2');

    const back = await run(['rollback', '--to', 'previous']);
    expect(back.code, back.stderr).toBe(0);
    expect(back.stderr).toContain('schema check was skipped');
    await expectRunning('v1');

    const history = await run(['history', '--json']);
    expect(history.code, history.stderr).toBe(0);
    const events = JSON.parse(history.stdout);
    expect(events.map((e: { action: string; from: string | null; to: string; result: string }) => [e.action, e.from, e.to, e.result])).toEqual([
      ['deploy', null, 'v1', 'succeeded'],
      ['deploy', 'v1', 'v2', 'succeeded'],
      ['rollback', 'v2', 'v1', 'succeeded'],
    ]);
    expect(events[2].by).toContain('deploy-bot');
    expect(events[2].durationsMs.total).toBeGreaterThan(0);
    const text = await run(['history']);
    expect(text.stdout + text.stderr).toMatch(/rollback\s+v2\s+-> v1\s+succeeded\s+by deploy-bot/);
  });

  it('puts all three services back on v2 when the api of v3 never gets healthy', async () => {
    const v2 = await run(['deploy', '--release', 'v2']);
    expect(v2.code, v2.stderr).toBe(0);
    const v3 = await run(['deploy', '--release', 'v3', '--health-timeout', '30s']);
    expect(v3.code).toBe(1);
    expect(v3.stderr).toMatch(/api did not get healthy on v3/);
    expect(v3.stderr).toContain('back on v2 and healthy');
    // Its last log lines are in the message.
    expect(v3.stderr).toContain('api v3 listening');
    await expectRunning('v2');
    const events = JSON.parse((await run(['history', '--json'])).stdout);
    expect(events.at(-1)).toMatchObject({ action: 'deploy', from: 'v2', to: 'v3', result: 'failed', running: 'v2', failedService: 'api' });
  });

  it('changes no container when the manifest is tampered with or signed by another key', async () => {
    const before = stack.containers();
    const tampered = await run(['deploy', '--release', 'v1-tampered']);
    expect(tampered.code).toBe(1);
    expect(tampered.stderr).toContain('verification failed');
    const otherKey = await run(['rollback', '--to', 'v2-other-key']);
    expect(otherKey.code).toBe(1);
    expect(otherKey.stderr).toContain('verification failed');
    expect(stack.containers()).toEqual(before);
    await expectRunning('v2');
  });

  it('lets only one of two concurrent deploys through the lock', async () => {
    const [a, b] = await Promise.all([run(['deploy', '--release', 'v1']), run(['deploy', '--release', 'v1'])]);
    const codes = [a.code, b.code].sort();
    expect(codes, `${a.stderr}\n${b.stderr}`).toEqual([0, 3]);
    const loser = a.code === 3 ? a : b;
    expect(loser.stderr).toMatch(/locked by deploy-bot/);
    await expectRunning('v1');
  });

  it('refuses to roll back below the database schema and prints both ways forward', async () => {
    const db = await createDatabase('deployschema');
    try {
      await sql("CREATE TABLE alembic_version (version_num text PRIMARY KEY); INSERT INTO alembic_version VALUES ('b2')", db.name);
      const v2 = await run(['deploy', '--release', 'v2', '--database-url', db.url]);
      expect(v2.code, v2.stderr).toBe(0);
      const before = stack.containers();

      const refused = await run(['rollback', '--to', 'v1', '--database-url', db.url]);
      expect(refused.code).toBe(3);
      expect(refused.stderr).toContain('the database is at migration head b2, the head of the running release v2');
      expect(refused.stderr).toContain(`lifeline rollback --env ${ENV} --to v1 --allow-schema-ahead`);
      expect(refused.stderr).toContain(`lifeline restore --env ${ENV} --backup ${PRE_MIGRATION_BACKUP.id} --target-env DATABASE_URL `);
      expect(refused.stderr).toContain(`--confirm ${db.name}`);
      const password = new URL(db.url).password;
      if (password) expect(refused.stderr).not.toContain(password);
      expect(stack.containers()).toEqual(before);

      const allowed = await run(['rollback', '--to', 'v1', '--database-url', db.url, '--allow-schema-ahead']);
      expect(allowed.code, allowed.stderr).toBe(0);
      await expectRunning('v1');
      const events = JSON.parse((await run(['history', '--json'])).stdout);
      expect(events.slice(-2).map((e: { result: string }) => e.result)).toEqual(['refused', 'succeeded']);
    } finally {
      await dropDatabase(db.name);
    }
  });

  it.runIf(existsSync(join(REPO, 'dist/rollback/index.js')))('runs as the shipped rollback action (INPUT_* and GITHUB_OUTPUT)', async () => {
    const outputFile = join(stack.dir, 'github-output');
    writeFileSync(outputFile, '');
    const action = await runBundle('rollback', { to: 'v2', config: configPath, env: ENV }, { env: { ...docker.env, GITHUB_OUTPUT: outputFile, DATABASE_URL: undefined, GITHUB_ACTOR: 'deploy-bot' } });
    expect(action.code, `${action.stdout}\n${action.stderr}`).toBe(0);
    expect(parseGithubOutput(readFileSync(outputFile, 'utf8'))).toMatchObject({ release: 'v2', 'previous-release': 'v1' });
    await expectRunning('v2');
  });
});
