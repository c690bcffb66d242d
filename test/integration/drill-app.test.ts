import { writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { connect, createServer as createNetServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Catalog } from '../../src/catalog/store';
import { DEPLOYMENT_METADATA } from '../../src/deploy/deploy';
import { appendHistory } from '../../src/deploy/history';
import { freePort } from '../../src/runner/ports';
import { formatPgUrl } from '../../src/runner/postgres-env';
import { buildAppCheckImages, type AppImageMode } from '../helpers/app-image';
import { lifeline, type CliRun } from '../helpers/cli';
import { createSampleDatabase, dropDatabase, tempDir } from '../helpers/db';
import { dockerAvailable, startDockerEnvironment, type DockerEnvironment } from '../helpers/docker';
import { fakeImage, signTestRelease, testSigningKey } from '../helpers/releases';
import { lifelineWatching, strayHealthServer, type StrayServer } from '../helpers/stray';

const ENV = 'production';
const CHECK = 'application starts on the restored data';

interface ReportCheck {
  step: string;
  name: string;
  status: string;
  detail: string;
}

describe.skipIf(!dockerAvailable())('lifeline drill: the application starts on the restored data (real Docker engine)', () => {
  let docker: DockerEnvironment;
  let work: ReturnType<typeof tempDir>;
  let live: Awaited<ReturnType<typeof createSampleDatabase>>;
  let images: Record<AppImageMode, string>;
  const drillDatabases: string[] = [];

  beforeAll(async () => {
    work = tempDir('lifeline-drill-app-');
    docker = await startDockerEnvironment();
    images = buildAppCheckImages(docker);
    live = await createSampleDatabase(1, 'drill_app_live');
    const backup = await drill('backup-only', undefined, ['backup']);
    expect(backup.code, backup.stderr).toBe(0);
  });

  afterAll(async () => {
    await docker?.stop();
    for (const name of drillDatabases) await dropDatabase(name).catch(() => {});
    if (live) await dropDatabase(live.name);
    work?.cleanup();
  });

  /**
   * Writes a config with the given appCheck lines (none: no appCheck) and runs the CLI with it;
   * `watch` sees the output as it comes; `env` adds to the CLI's environment.
   */
  async function drill(
    name: string,
    appCheck: string[] | undefined,
    args: string[],
    options: { watch?: (soFar: string) => void; composeLines?: string[]; env?: Record<string, string> } = {},
  ): Promise<CliRun> {
    const configPath = join(work.path, `${name}.yml`);
    const lines = ['version: 1', `store: ${join(work.path, 'store')}`, 'environments:', `  ${ENV}:`, '    rto: 10m', '    manifest:', `      publicKey: ${testSigningKey().publicKeyPath}`];
    if (options.composeLines) lines.push('    compose:', ...options.composeLines.map((l) => `      ${l}`));
    if (appCheck) lines.push('    drill:', '      appCheck:', ...appCheck.map((l) => `        ${l}`));
    writeFileSync(configPath, `${lines.join('\n')}\n`);
    const env = { ...docker.env, DATABASE_URL: live.url, LIFELINE_STORE: undefined, ...options.env };
    if (options.watch) return lifelineWatching([...args, '--config', configPath, '--env', ENV], env, options.watch);
    return lifeline([...args, '--config', configPath, '--env', ENV], { env });
  }

  async function appCheckLines(options: { image?: string; timeout?: string; port?: number; env?: Record<string, string> } = {}): Promise<{ lines: string[]; port: number }> {
    const port = options.port ?? (await freePort());
    const env = { PORT: String(port), ...options.env };
    const lines = [...(options.image ? [`image: ${options.image}`] : []), `healthUrl: http://127.0.0.1:${port}/health`, `timeout: ${options.timeout ?? '60s'}`, `env: ${JSON.stringify(env)}`];
    return { lines, port };
  }

  const drillTargetUrl = () => {
    const name = `drill_app_${Math.random().toString(16).slice(2, 10)}`;
    drillDatabases.push(name);
    return { name, url: formatPgUrl({ ...live.conn, database: name }) };
  };
  const containersLeft = () => docker.docker(['ps', '-aq']).stdout.trim();
  const appCheck = (report: { checks: ReportCheck[] }) => report.checks.find((c) => c.name === CHECK);
  const step = (report: { steps: { id: string; status: string; detail?: string; seconds?: number }[] }) => report.steps.find((s) => s.id === 'start-app')!;

  it('starts the app image against the restored throwaway cluster, passes, counts toward RTO and removes the container', async () => {
    const { lines, port } = await appCheckLines({ image: images.db });
    const run = await drill('pass', lines, ['drill', '--json']);
    expect(run.code, run.stderr).toBe(0);
    const report = JSON.parse(run.stdout);
    expect(report.passed).toBe(true);
    expect(appCheck(report)).toMatchObject({ step: 'start-app', status: 'pass' });
    expect(appCheck(report)!.detail).toContain(`http://127.0.0.1:${port}/health answered HTTP 200`);
    // Tied to the drill's own container: the process holding the port is httpd in it.
    expect(appCheck(report)!.detail).toMatch(
      new RegExp(`answered on port ${port} by pid \\d+ \\(httpd -f -p 127\\.0\\.0\\.1:${port} -h /www\\) in container [0-9a-f]{12} \\((its cgroup names the container|it descends from)`),
    );
    expect(step(report).status).toBe('done');
    expect(report.rto.phases['start-app']).toBeGreaterThan(0);
    const phases = Object.values(report.rto.phases as Record<string, number>).reduce((a, b) => a + b, 0);
    expect(report.rto.seconds).toBeCloseTo(phases, 2);
    expect(run.stderr).toContain(`starting ${images.db}`);
    expect(containersLeft()).toBe('');
  });

  it('fails when the health never comes up: names the check, shows the last log lines, masks the password, removes the container', async () => {
    const target = drillTargetUrl();
    const { lines, port } = await appCheckLines({ image: images.never, timeout: '3s' });
    const run = await drill('never', lines, ['drill', '--target', target.url, '--json']);
    expect(run.code, run.stderr).toBe(1);
    const report = JSON.parse(run.stdout);
    expect(report.passed).toBe(false);
    expect(step(report).status).toBe('failed');
    const failure = report.failures.find((f: string) => f.startsWith(`${CHECK}: `));
    expect(failure).toContain(`http://127.0.0.1:${port}/health did not answer 2xx within 3s`);
    expect(failure).toContain('health stays down on purpose');
    // The container got the restored database's URL (not the live one), with the password masked.
    expect(failure).toContain(`starting with DATABASE_URL=postgres://${live.conn.user}:***@127.0.0.1:${live.conn.port}/${target.name}`);
    expect(run.stdout + run.stderr).not.toContain(live.conn.password!);
    expect(containersLeft()).toBe('');
  });

  it('fails when the app cannot reach the database: it reads the URL from drill.appCheck.databaseUrlEnv only', async () => {
    // The restored URL goes to RESTORED_URL; the app reads DATABASE_URL, set here to a closed port.
    const closed = await freePort();
    const { lines } = await appCheckLines({ image: images.db, timeout: '3s', env: { DATABASE_URL: `postgres://app:unused@127.0.0.1:${closed}/none` } });
    const run = await drill('unreachable', [...lines, 'databaseUrlEnv: RESTORED_URL'], ['drill', '--json']);
    expect(run.code, run.stderr).toBe(1);
    const check = appCheck(JSON.parse(run.stdout))!;
    expect(check.status).toBe('fail');
    expect(check.detail).toContain(`database 127.0.0.1:${closed} not reachable yet`);
    expect(containersLeft()).toBe('');
  });

  it('fails at once when the container exits, with its last log lines', async () => {
    const target = drillTargetUrl();
    const { lines } = await appCheckLines({ image: images.crash, timeout: '60s' });
    const run = await drill('crash', lines, ['drill', '--target', target.url, '--json']);
    expect(run.code, run.stderr).toBe(1);
    const report = JSON.parse(run.stdout);
    const check = appCheck(report)!;
    expect(check.status).toBe('fail');
    expect(check.detail).toMatch(/exited \(exit code 3\)/);
    expect(check.detail).toContain('cannot load the application settings');
    expect(step(report).seconds).toBeLessThan(30);
    expect(run.stdout + run.stderr).not.toContain(live.conn.password!);
    expect(containersLeft()).toBe('');
  });

  it('without an image, uses the api image of the running release, and says to set drill.appCheck.image when there is none', async () => {
    const { lines } = await appCheckLines();
    const none = await drill('no-image', lines, ['drill', '--json']);
    expect(none.code, none.stderr).toBe(1);
    const failed = appCheck(JSON.parse(none.stdout))!;
    expect(failed.status).toBe('fail');
    expect(failed.detail).toContain('set drill.appCheck.image');

    // The record a deploy leaves: v7's signed manifest and the history naming v7 as running. Its
    // deployment.json, edited in the catalog to name another image, must not be what starts.
    const catalog = new Catalog(join(work.path, 'store'));
    const tag = `${docker.registry}/lifeline-test/drill-app:db`;
    expect(docker.docker(['tag', images.db, tag]).status).toBe(0);
    expect(docker.docker(['push', tag]).status).toBe(0);
    const pinned = docker.docker(['inspect', '--format', '{{index .RepoDigests 0}}', tag]).stdout.trim();
    const release = await signTestRelease(catalog, ENV, 'v7', { api: pinned, web: fakeImage('web'), worker: fakeImage('worker') });
    const staged = await catalog.begin(ENV, 'deployments', 'dep-v7', DEPLOYMENT_METADATA);
    await staged.commit({
      schemaVersion: 1,
      id: 'dep-v7',
      createdAt: new Date().toISOString(),
      action: 'deploy',
      release: 'v7',
      from: null,
      images: { api: images.never, web: images.never, worker: images.never },
      manifestDigest: null,
      by: 'test',
    });
    await appendHistory(catalog, ENV, {
      action: 'deploy',
      from: null,
      to: 'v7',
      result: 'succeeded',
      running: 'v7',
      runningDeployment: 'dep-v7',
      deployment: 'dep-v7',
      at: new Date().toISOString(),
      by: 'test',
      durationsMs: {},
    });

    const run = await drill('no-image', lines, ['drill', '--json']);
    expect(run.code, run.stderr).toBe(0);
    const passed = appCheck(JSON.parse(run.stdout))!;
    expect(passed.status).toBe('pass');
    expect(run.stderr).toContain(`starting ${pinned} (the api image of the running release v7 (manifest ${release.digest}))`);
    expect(containersLeft()).toBe('');
  });

  it('fails without starting anything when something already answers the health URL', async () => {
    const server: Server = createServer((_req, res) => res.end('someone else'));
    const port = await freePort();
    await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
    try {
      const { lines } = await appCheckLines({ image: images.db, port });
      const run = await drill('occupied', lines, ['drill', '--json']);
      expect(run.code, run.stderr).toBe(1);
      const check = appCheck(JSON.parse(run.stdout))!;
      expect(check.status).toBe('fail');
      expect(check.detail).toContain('already answers (HTTP 200)');
      expect(run.stderr).not.toContain(`starting ${images.db}`);
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
    expect(containersLeft()).toBe('');
  });

  it('fails when a stray process takes the health port after the drill started its container (which listens elsewhere)', async () => {
    const port = await freePort();
    // The application listens on the next port; the stray starts on the health port only once the
    // drill has checked that nothing answered it and started the container.
    const { lines } = await appCheckLines({ image: images.db, port, timeout: '30s', env: { PORT: String(port + 1) } });
    let stray: StrayServer | undefined;
    try {
      const run = await drill('stray', lines, ['drill', '--json'], {
        watch: (out) => {
          if (!stray && out.includes(`starting ${images.db}`)) stray = strayHealthServer(port);
        },
      });
      expect(run.code, run.stderr).toBe(1);
      expect(stray?.answered()).toBeGreaterThan(0);
      const check = appCheck(JSON.parse(run.stdout))!;
      expect(check.status).toBe('fail');
      expect(check.detail).toContain(`http://127.0.0.1:${port}/health answered HTTP 200`);
      expect(check.detail).toContain(`but not from the drill's container`);
      expect(check.detail).toContain(`port ${port} is held by pid ${process.pid} (`);
      expect(check.detail).toContain(`kill ${process.pid}`);
    } finally {
      await stray?.stop();
    }
    expect(containersLeft()).toBe('');
  });

  it('warns, or fails with compose.requireOwnedHealth, when the answer cannot be tied to the container (engine reached over TCP)', async () => {
    const { lines, port } = await appCheckLines({ image: images.db });
    // The docker CLI reaches the engine through a TCP forwarder: for Lifeline the engine may then be
    // on another host, whose container pids mean nothing here, so the answer cannot be tied.
    const forwarder = createNetServer((client) => {
      const engine = connect(docker.dockerHost.replace(/^unix:\/\//, ''));
      client.pipe(engine).pipe(client);
      client.on('error', () => engine.destroy());
      engine.on('error', () => client.destroy());
    });
    await new Promise<void>((resolve) => forwarder.listen(0, '127.0.0.1', resolve));
    const tcp = { DOCKER_HOST: `tcp://127.0.0.1:${(forwarder.address() as AddressInfo).port}` };
    try {
      const warned = await drill('untied', lines, ['drill', '--json'], { env: tcp });
      expect(warned.code, warned.stderr).toBe(0);
      const passed = appCheck(JSON.parse(warned.stdout))!;
      expect(passed.status).toBe('pass');
      expect(passed.detail).toContain(`http://127.0.0.1:${port}/health answered HTTP 200`);
      expect(passed.detail).toContain('WARNING: the answering process could not be tied to the container');
      expect(warned.stderr).toContain('the answering process could not be tied to the container');
      expect(warned.stderr).toContain('set compose.requireOwnedHealth: true');

      const strict = await drill('untied-strict', lines, ['drill', '--json'], { env: tcp, composeLines: ['requireOwnedHealth: true'] });
      expect(strict.code, strict.stderr).toBe(1);
      const failed = appCheck(JSON.parse(strict.stdout))!;
      expect(failed.status).toBe('fail');
      expect(failed.detail).toContain('the answering process could not be tied to the container');
      expect(failed.detail).toContain('compose.requireOwnedHealth is true');
    } finally {
      forwarder.close();
      forwarder.unref();
    }
    expect(containersLeft()).toBe('');
  });

  it('skips the step as before when appCheck is not configured', async () => {
    const run = await drill('none', undefined, ['drill', '--json']);
    expect(run.code, run.stderr).toBe(0);
    const report = JSON.parse(run.stdout);
    expect(step(report)).toMatchObject({ status: 'skipped', detail: 'no drill.appCheck configured' });
    expect(report.checks.find((c: ReportCheck) => c.step === 'start-app')).toMatchObject({ status: 'skipped' });
    expect(report.rto.phases['start-app']).toBeUndefined();
  });
});
