import { spawn } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Catalog } from '../../src/catalog/store';
import { appendHistory, loadHistory } from '../../src/deploy/history';
import { stopPid, waitFor } from '../../src/runner/ports';
import { buildReleaseImages, createStack, ROLES, type Role, type TestStack } from '../fixtures/stack/stack';
import { lifeline, REPO, type CliRun } from '../helpers/cli';
import { tempDir } from '../helpers/db';
import { dockerAvailable, startDockerEnvironment, type DockerEnvironment } from '../helpers/docker';
import { signTestRelease, testSigningKey } from '../helpers/releases';
import { lifelineWatching, strayHealthServer } from '../helpers/stray';

const ENV = 'production';
type Version = 'v1' | 'v2' | 'vcrash' | 'vflap' | 'vwrong' | 'vbad';

/**
 * Deploys attacked on a real engine: releases that crash after their first healthy answer, a
 * flapping health URL, a stray process answering the health URL, kill -9 at phase boundaries and
 * a crafted override in the catalog. After each, `lifeline status` and the next command must tell
 * the truth, and the documented fix must recover.
 */
// Each case runs the CLI many times; on a loaded 2-core machine that takes minutes.
describe.skipIf(!dockerAvailable())('deploy recovery and health on a real Docker engine', { timeout: 900_000 }, () => {
  let docker: DockerEnvironment;
  let stack: TestStack;
  let store: ReturnType<typeof tempDir>;
  let configPath: string;
  let catalog: Catalog;
  let images: Record<Version, Record<Role, string>>;
  const pids: number[] = [];

  beforeAll(async () => {
    docker = await startDockerEnvironment();
    stack = await createStack(docker, 'llrecover');
    store = tempDir('lifeline-recover-');
    images = {
      v1: buildReleaseImages(docker, 'v1'),
      v2: buildReleaseImages(docker, 'v2'),
      // api exits 15s after it starts answering: healthy at first, by its Compose healthcheck (slow on a loaded machine).
      vcrash: buildReleaseImages(docker, 'vcrash', { behaviour: { api: 'crash-after-15' } }),
      vflap: buildReleaseImages(docker, 'vflap', { behaviour: { web: 'flap' } }),
      vwrong: buildReleaseImages(docker, 'vwrong', { behaviour: { web: 'wrong-port' } }),
      vbad: buildReleaseImages(docker, 'vbad', { unhealthy: ['api'] }),
    };
    catalog = new Catalog(store.path);
    for (const version of Object.keys(images) as Version[]) await signTestRelease(catalog, ENV, version, images[version]);
    configPath = join(stack.dir, 'lifeline.yml');
    writeFileSync(
      configPath,
      [
        'version: 1',
        'environments:',
        `  ${ENV}:`,
        `    store: ${store.path}`,
        '    compose:',
        '      files: [docker-compose.yml]',
        `      projectName: ${stack.projectName}`,
        '      command: docker-compose',
        // web is judged by its URL and its Compose healthcheck, api and worker by their healthchecks.
        `      services: { web: { healthUrl: "http://127.0.0.1:${stack.ports.web}/health" } }`,
        '      healthTimeout: 30s',
        '      settle: 3s',
        '    manifest:',
        `      publicKey: ${testSigningKey().publicKeyPath}`,
        '',
      ].join('\n'),
    );
  });

  afterAll(async () => {
    for (const pid of pids) await stopPid(pid, 'SIGKILL', 5000).catch(() => {});
    stack?.remove();
    await docker?.stop();
    store?.cleanup();
  });

  const cliEnv = () => ({ ...docker.env, DATABASE_URL: undefined, LIFELINE_STORE: undefined, GITHUB_ACTOR: undefined });
  const run = (args: string[]): Promise<CliRun> => lifeline([...args, '--config', configPath, '--env', ENV], { env: cliEnv() });
  const status = async () => {
    const result = await run(['status', '--json']);
    expect(result.code, result.stderr).toBe(0);
    return JSON.parse(result.stdout) as {
      consistent: boolean;
      historySays: string | null;
      running: string | null;
      services: { service: string; release: string | null; status: string; imageRef: string | null }[];
      differences: string[];
      unfinished: unknown;
    };
  };

  async function expectRunning(version: Version) {
    expect(await stack.health()).toEqual({ api: `api ${version}`, web: `web ${version}`, worker: `worker ${version}` });
    const containers = stack.containers();
    for (const role of ROLES) expect(containers[role]?.imageRef, role).toBe(images[version][role]);
    const now = await status();
    expect(now).toMatchObject({ consistent: true, historySays: version, running: version });
  }

  /** Starts the CLI in its own process group and kill -9s the whole group (as a cancelled CI job is) when its output shows `marker`. */
  async function killAt(args: string[], marker: RegExp): Promise<string> {
    const env: NodeJS.ProcessEnv = { ...process.env, ...cliEnv() };
    for (const [k, v] of Object.entries(cliEnv())) if (v === undefined) delete env[k];
    const child = spawn(process.execPath, ['--import', 'tsx', join(REPO, 'src/cli/index.ts'), ...args, '--config', configPath, '--env', ENV], {
      cwd: REPO,
      env,
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    pids.push(child.pid!);
    let output = '';
    const exited = new Promise<void>((resolve) => child.on('close', () => resolve()));
    await new Promise<void>((resolve, reject) => {
      const onData = (chunk: Buffer) => {
        output += chunk.toString();
        if (marker.test(output)) {
          process.kill(-child.pid!, 'SIGKILL');
          resolve();
        }
      };
      child.stdout!.on('data', onData);
      child.stderr!.on('data', onData);
      child.on('close', () => reject(new Error(`the command ended before ${marker}:\n${output}`)));
    });
    await exited;
    return output;
  }

  it('deploys v1 and `status` shows what each service runs, by release', async () => {
    const first = await run(['deploy', '--release', 'v1']);
    expect(first.code, first.stderr).toBe(0);
    expect(first.stderr).toContain('settle window');
    // No false positive: web's health URL is tied to the process in its new container that holds the port.
    const port = stack.ports.web;
    expect(first.stderr).toMatch(
      new RegExp(`web: http://127\\.0\\.0\\.1:${port}/health answered on port ${port} by pid \\d+ \\(httpd -f -p 127\\.0\\.0\\.1:${port} -h /www\\) in container [0-9a-f]{12}`),
    );
    expect(first.stderr).not.toContain('could not be tied');
    await expectRunning('v1');
    const text = await run(['status']);
    expect(text.stdout).toContain(`api: ${images.v1.api} -> release v1`);
    expect(text.stdout).toContain('the history agrees: v1 runs');
  });

  it('fails a release whose api crashes a few seconds after its first healthy answer, and puts v1 back', async () => {
    const crash = await run(['deploy', '--release', 'vcrash', '--settle', '30s']);
    expect(crash.code, crash.stderr).toBe(1);
    expect(crash.stderr).toMatch(/api did not get healthy on vcrash: .*settle window/);
    expect(crash.stderr).toContain('api vcrash crashing on purpose');
    expect(crash.stderr).toContain('back on v1 and healthy');
    await expectRunning('v1');
    const events = (await loadHistory(catalog, ENV)).events;
    expect(events.at(-1)).toMatchObject({ to: 'vcrash', result: 'failed', running: 'v1', failedService: 'api' });
  });

  it('fails a release whose health URL flaps, even though it answered 2xx at first', async () => {
    const flap = await run(['deploy', '--release', 'vflap', '--settle', '8s']);
    expect(flap.code, flap.stderr).toBe(1);
    expect(flap.stderr).toMatch(/web did not get healthy on vflap: stopped being healthy .*settle window.*HTTP 404/);
    await expectRunning('v1');
  });

  it('puts v1 back from its verified manifest, not from a crafted override or deployment.json in the catalog', async () => {
    // Someone with write access to the catalog edits every recorded deployment.
    const deployments = join(store.path, ENV, 'deployments');
    for (const id of readdirSync(deployments)) {
      writeFileSync(
        join(deployments, id, 'compose.override.yml'),
        `services:\n  api:\n    image: ${images.v1.api}\n    privileged: true\n    volumes: ["/:/host"]\n  web: { image: "${images.v1.web}" }\n  worker: { image: "${images.v1.worker}" }\n`,
      );
      const metadata = JSON.parse(readFileSync(join(deployments, id, 'deployment.json'), 'utf8'));
      writeFileSync(join(deployments, id, 'deployment.json'), JSON.stringify({ ...metadata, images: { api: images.vbad.api, web: images.vbad.web, worker: images.vbad.worker } }));
    }
    const bad = await run(['deploy', '--release', 'vbad', '--health-timeout', '8s']);
    expect(bad.code, bad.stderr).toBe(1);
    expect(bad.stderr).toContain('back on v1 and healthy');
    await expectRunning('v1');
    const api = JSON.parse(docker.docker(['inspect', stack.containers().api!.id]).stdout)[0];
    expect(api.HostConfig.Privileged).toBe(false);
    expect(api.Mounts).toEqual([]);
  });

  it('fails the wrong-port release when a stray process takes the health port in the recreate window, and puts v1 back', async () => {
    // vwrong's web listens on the port after its own. The stray keeps trying to bind web's port and
    // gets it the moment Compose stops v1's web: it then answers both the healthUrl and web's
    // Compose healthcheck (host network). It lets go when the output says v1 is being put back.
    const port = stack.ports.web;
    const stray = strayHealthServer(port);
    let letGo = false;
    let run;
    try {
      run = await lifelineWatching(['deploy', '--release', 'vwrong', '--config', configPath, '--env', ENV], cliEnv(), (out) => {
        if (!letGo && out.includes('Put api, web and worker back on v1')) {
          letGo = true;
          void stray.stop();
        }
      });
    } finally {
      await stray.stop();
    }
    expect(run.code, run.stderr).toBe(1);
    expect(stray.answered()).toBeGreaterThan(0);
    expect(run.stderr).toContain(`web did not get healthy on vwrong: http://127.0.0.1:${port}/health is not answered by web's new container: port ${port} is held by pid ${process.pid} (`);
    expect(run.stderr).toContain(`kill ${process.pid}`);
    expect(run.stderr).toContain('back on v1 and healthy');
    // The put-back's own proof: v1's web holds the port again.
    const putBack = run.stderr.slice(run.stderr.indexOf('Put api, web and worker back on v1'));
    expect(putBack).toMatch(new RegExp(`web: http://127\\.0\\.0\\.1:${port}/health answered on port ${port} by pid \\d+ \\(httpd [^)]*\\) in container`));
    await expectRunning('v1');
    const last = (await loadHistory(catalog, ENV)).events.at(-1)!;
    expect(last).toMatchObject({ to: 'vwrong', result: 'failed', running: 'v1', failedService: 'web' });
    expect(last.reason).toContain(`port ${port} is held by pid ${process.pid}`);
  });

  it('refuses a release while a stray process answers the health URL of a stopped web, and recovers with rollback --to', async () => {
    expect(docker.docker(['stop', '-t', '1', stack.containers().web!.id]).status).toBe(0);
    const www = join(stack.dir, 'stray');
    mkdirSync(www, { recursive: true });
    writeFileSync(join(www, 'health'), 'not the release\n');
    const stray = spawn('busybox', ['httpd', '-f', '-p', `127.0.0.1:${stack.ports.web}`, '-h', www], { stdio: 'ignore' });
    pids.push(stray.pid!);
    try {
      await waitFor(async () => (await fetch(`http://127.0.0.1:${stack.ports.web}/health`).catch(() => undefined))?.ok === true, { timeoutMs: 10000, what: 'the stray httpd' });
      const before = stack.containers();
      // The history does not match (web stopped): a deploy is refused for that alone...
      const refused = await run(['deploy', '--release', 'vwrong']);
      expect(refused.code).toBe(3);
      expect(refused.stderr).toMatch(/web runs .*release v1.*exited/);
      // ...and a rollback to a named release, the documented fix, is refused while something else answers the URL.
      const stray1 = await run(['rollback', '--to', 'vwrong']);
      expect(stray1.code).toBe(3);
      expect(stray1.stderr).toContain(`http://127.0.0.1:${stack.ports.web}/health already answers (HTTP 200) while no container of web runs`);
      expect(stack.containers()).toEqual(before);
    } finally {
      await stopPid(stray.pid!, 'SIGKILL', 5000);
    }
    const fixed = await run(['rollback', '--to', 'v1']);
    expect(fixed.code, fixed.stderr).toBe(0);
    expect(fixed.stderr).toContain('the history did not match what runs');
    await expectRunning('v1');
  });

  it('after kill -9 during the health wait: a stale lock, a status that tells the truth, a refused deploy, and history reconcile', async () => {
    await killAt(['deploy', '--release', 'v2'], /Wait for health/);
    const lockStatus = await run(['lock', 'status']);
    expect(lockStatus.stdout + lockStatus.stderr).toContain('STALE');
    const locked = await run(['deploy', '--release', 'v1']);
    expect(locked.code).toBe(3);
    expect(locked.stderr).toContain('that process is gone');
    expect((await run(['lock', 'break'])).code).toBe(0);

    const now = await status();
    expect(now.consistent).toBe(false);
    expect(now.historySays).toBeNull();
    expect(now.unfinished).toMatchObject({ action: 'deploy', to: 'v2', from: 'v1', result: 'started' });
    await waitFor(async () => (await status()).services.every((s) => s.status === 'running' && s.release === 'v2'), { timeoutMs: 20000, what: 'v2 running' });
    const history = await run(['history']);
    expect(history.stdout).toContain('NOTE: the deploy of v2 started at');

    const refused = await run(['deploy', '--release', 'v1']);
    expect(refused.code).toBe(3);
    expect(refused.stderr).toContain('does not match what runs');
    expect(refused.stderr).toContain(`api runs ${images.v2.api} (release v2)`);
    expect(refused.stderr).toContain('lifeline history reconcile --env production');
    const previous = await run(['rollback', '--to', 'previous']);
    expect(previous.code).toBe(3);

    const reconciled = await run(['history', 'reconcile']);
    expect(reconciled.code, reconciled.stderr).toBe(0);
    expect(reconciled.stderr + reconciled.stdout).toContain('recorded v2 as running');
    await expectRunning('v2');
    expect((await loadHistory(catalog, ENV)).events.at(-1)).toMatchObject({ action: 'reconcile', from: null, to: 'v2', running: 'v2' });
  });

  it('after kill -9 during `up`: the next deploy is refused unless nothing changed, and rollback --to recovers', async () => {
    await killAt(['deploy', '--release', 'v1'], /Recreate api, web, worker/);
    expect((await run(['lock', 'break'])).code).toBe(0);
    const now = await status();
    expect(now.unfinished).toMatchObject({ to: 'v1', from: 'v2' });
    for (const service of now.services) expect([null, 'v1', 'v2']).toContain(service.release);
    const next = await run(['deploy', '--release', 'v1']);
    if (next.code === 3) {
      expect(next.stderr).toContain('never recorded its end');
      const fixed = await run(['rollback', '--to', 'v1']);
      expect(fixed.code, fixed.stderr).toBe(0);
    } else {
      // Killed before Compose replaced anything: the same containers still ran v2, so the deploy closed the record and went on.
      expect(next.code, next.stderr).toBe(0);
      expect(next.stderr).toContain('interrupted before it changed any container');
    }
    await expectRunning('v1');
  });

  it('closes an in-progress record by itself when the same containers still run, then deploys', async () => {
    const ids = Object.values(stack.containers())
      .map((c) => c.id)
      .filter((id) => id !== stack.containers().db?.id);
    const full = ids.map((id) => docker.docker(['inspect', '--format', '{{.Id}}', id]).stdout.trim());
    const history = await loadHistory(catalog, ENV);
    const last = history.events.at(-1)!;
    await appendHistory(catalog, ENV, {
      action: 'deploy',
      from: 'v1',
      to: 'v2',
      result: 'started',
      running: null,
      runningDeployment: null,
      deployment: 'killed-after-the-record',
      containers: full,
      at: new Date().toISOString(),
      by: 'ci',
      durationsMs: {},
    });
    expect((await status()).consistent).toBe(false);
    const deploy = await run(['deploy', '--release', 'v2']);
    expect(deploy.code, deploy.stderr).toBe(0);
    expect(deploy.stderr).toContain('interrupted before it changed any container');
    await expectRunning('v2');
    const events = (await loadHistory(catalog, ENV)).events.slice(-4).map((e) => [e.to, e.result, e.running]);
    expect(events[0]).toEqual(['v2', 'started', null]);
    expect(events[1]).toEqual(['v2', 'failed', 'v1']);
    expect(events.at(-1)).toEqual(['v2', 'succeeded', 'v2']);
    expect(last.running).toBe('v1');
  });

  it('refuses a revoked release without touching a container', async () => {
    const revoke = await run(['release', 'revoke', 'v1', '--reason', 'leaks connections']);
    expect(revoke.code, revoke.stderr).toBe(0);
    const before = stack.containers();
    const refused = await run(['rollback', '--to', 'previous']);
    expect(refused.code).toBe(3);
    expect(refused.stderr).toContain('skipped revoked: v1');
    const named = await run(['rollback', '--to', 'v1']);
    expect(named.code).toBe(3);
    expect(named.stderr).toContain('leaks connections');
    expect(stack.containers()).toEqual(before);
  });
});
