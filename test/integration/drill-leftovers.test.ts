import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findLeftovers, type Leftover } from '../../src/runner/leftovers';
import { freePort, stopPid, waitFor } from '../../src/runner/ports';
import { buildAppCheckImages, type AppImageMode } from '../helpers/app-image';
import { cliArgv, lifeline, REPO, type CliRun } from '../helpers/cli';
import { createSampleDatabase, dropDatabase, tempDir } from '../helpers/db';
import { dockerAvailable, startDockerEnvironment, type DockerEnvironment } from '../helpers/docker';

const ENV = 'production';

/** A CLI run we can watch and kill -9, as a cancelled CI job or the OOM killer would. */
interface Watched {
  child: ChildProcess;
  stderr: () => string;
  done: Promise<CliRun>;
}

/** Running, not a zombie: a stopped server reparented to PID 1 may wait there a while before it is reaped. */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

describe.skipIf(!dockerAvailable())('killed drills leave nothing running (issue 16 item 7)', () => {
  let docker: DockerEnvironment;
  let work: ReturnType<typeof tempDir>;
  let live: Awaited<ReturnType<typeof createSampleDatabase>>;
  let images: Record<AppImageMode, string>;
  const started: ChildProcess[] = [];

  beforeAll(async () => {
    work = tempDir('lifeline-drill-kill-');
    docker = await startDockerEnvironment();
    images = buildAppCheckImages(docker);
    live = await createSampleDatabase(1, 'drill_kill_live');
    const backup = await lifeline(['backup', '--config', config('backup'), '--env', ENV], { env: cliEnv() });
    expect(backup.code, backup.stderr).toBe(0);
  });

  afterAll(async () => {
    for (const child of started) if (child.pid && alive(child.pid)) await stopPid(child.pid, 'SIGKILL', 1000);
    // Whatever the tests' own killed drills left: the reaper under test removes it, and we check.
    await lifeline(['drill', '--config', config('cleanup'), '--env', ENV], { env: cliEnv() }).catch(() => undefined);
    await docker?.stop();
    if (live) await dropDatabase(live.name);
    work?.cleanup();
  });

  const cliEnv = () => ({ ...docker.env, DATABASE_URL: live.url, LIFELINE_STORE: undefined, LIFELINE_CONFIG: undefined });

  /** A config with optional appCheck lines and smoke file. */
  function config(name: string, options: { appCheck?: string[]; smoke?: string } = {}): string {
    const path = join(work.path, `${name}.yml`);
    const lines = ['version: 1', `store: ${join(work.path, 'store')}`, 'environments:', `  ${ENV}:`, '    rto: 10m'];
    if (options.appCheck || options.smoke) lines.push('    drill:');
    if (options.smoke) lines.push(`      smokeSql: ${options.smoke}`);
    if (options.appCheck) lines.push('      appCheck:', ...options.appCheck.map((l) => `        ${l}`));
    writeFileSync(path, `${lines.join('\n')}\n`);
    return path;
  }

  function smokeFile(name: string, sleepSeconds: number): string {
    const path = join(work.path, `${name}.sql`);
    writeFileSync(path, ['-- name: slow smoke query', '-- expect: 1', `SELECT 1 FROM pg_sleep(${sleepSeconds})`, ''].join('\n'));
    return path;
  }

  function watch(args: string[]): Watched {
    const env: NodeJS.ProcessEnv = { ...process.env, ...docker.env, DATABASE_URL: live.url };
    delete env.LIFELINE_STORE;
    delete env.LIFELINE_CONFIG;
    const child = spawn(process.execPath, [...cliArgv(), ...args], { cwd: REPO, env, stdio: ['ignore', 'pipe', 'pipe'] });
    started.push(child);
    let stdout = '';
    let stderr = '';
    child.stdout!.setEncoding('utf8').on('data', (c: string) => (stdout += c));
    child.stderr!.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    const done = new Promise<CliRun>((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr })));
    return { child, stderr: () => stderr, done };
  }

  const ownedBy = (pid: number) => findLeftovers().filter((l) => l.owner.pid === pid);
  const runningContainers = () => docker.docker(['ps', '-q']).stdout.trim();

  async function appCheckLines(image: string, timeout = '120s'): Promise<{ lines: string[]; port: number }> {
    const port = await freePort();
    return { lines: [`image: ${image}`, `healthUrl: http://127.0.0.1:${port}/health`, `timeout: ${timeout}`, `env: ${JSON.stringify({ PORT: String(port) })}`], port };
  }

  it('the app container gets the database URL without it showing in docker inspect; kill -9 while it runs, and the next drill removes it and the cluster', async () => {
    // An app that never becomes healthy keeps the drill in its health wait: the moment to kill it.
    const never = await appCheckLines(images.never);
    const drill = watch(['drill', '--config', config('kill-app', { appCheck: never.lines }), '--env', ENV, '--json']);
    await waitFor(async () => /as (lifeline-drill-[a-z0-9-]+)/.test(drill.stderr()) && docker.docker(['ps', '-q', '--filter', 'label=lifeline.drill']).stdout.trim() !== '', {
      timeoutMs: 120_000,
      what: 'the app container to run',
    });
    const name = /as (lifeline-drill-[a-z0-9-]+)/.exec(drill.stderr())![1]!;
    await waitFor(async () => docker.docker(['logs', name]).stdout.includes('starting with DATABASE_URL=postgres://'), { timeoutMs: 30_000, what: 'the app to log its URL' });

    // What an operator (or anything with access to the engine) sees of the running container: no URL, no password.
    const inspect = docker.docker(['inspect', name]);
    expect(inspect.status).toBe(0);
    const [cluster] = ownedBy(drill.child.pid!).filter((l) => l.kind === 'cluster');
    expect(cluster?.pid).toBeGreaterThan(0);
    const appLog = docker.docker(['logs', name]).stdout;
    // The app did get the restored cluster's URL, password included (it logs it, as careless apps do)...
    const password = /postgres:\/\/postgres:([^@]+)@127\.0\.0\.1/.exec(appLog)?.[1];
    expect(password, appLog).toBeTruthy();
    // ...yet neither the URL nor the password is in the container's configuration.
    expect(inspect.stdout).not.toContain(password!);
    expect(inspect.stdout).not.toContain('DATABASE_URL');
    expect(JSON.parse(inspect.stdout)[0].Config.Labels).toMatchObject({ 'lifeline.drill.environment': ENV, 'lifeline.drill': expect.stringMatching(/^\d{8}T/) });
    // The file it came in was deleted at start-up (busybox has rm as an applet even without a link).
    expect(docker.docker(['exec', name, '/bin/sh', '-c', 'test -e /lifeline-drill/env && echo present || echo gone']).stdout.trim()).toBe('gone');

    process.kill(drill.child.pid!, 'SIGKILL');
    await drill.done;
    // The problem as it was: both still run after the kill.
    expect(docker.docker(['inspect', '--format', '{{.State.Running}}', name]).stdout.trim()).toBe('true');
    expect(alive(cluster!.pid!)).toBe(true);
    expect(
      findLeftovers()
        .filter((l) => l.owner.pid === drill.child.pid)
        .map((l) => l.state),
    ).toEqual(expect.arrayContaining(['orphaned']));

    // The next drill, on the same health port: reaps first, then passes.
    const healthy = await appCheckLines(images.db);
    // Another drill on this host (a parallel test file) may reap them first; the end state below is checked either way.
    const unreaped = ownedBy(drill.child.pid!).length > 0;
    const next = await lifeline(
      [
        'drill',
        '--config',
        config('after-kill-app', {
          appCheck: [
            ...healthy.lines.filter((l) => !l.startsWith('healthUrl') && !l.startsWith('env')),
            `healthUrl: http://127.0.0.1:${never.port}/health`,
            `env: ${JSON.stringify({ PORT: String(never.port) })}`,
          ],
        }),
        '--env',
        ENV,
        '--json',
      ],
      { env: cliEnv() },
    );
    expect(next.code, next.stderr).toBe(0);
    expect(JSON.parse(next.stdout).passed).toBe(true);
    if (unreaped) expect(next.stderr).toContain(`removed what a killed drill left: application check of the drill of ${ENV}: container ${name}`);
    if (unreaped) expect(next.stderr).toMatch(new RegExp(`removed what a killed drill left: drill \\S+ of ${ENV}: throwaway cluster restored from backup \\S+: PostgreSQL server pid ${cluster!.pid}`));
    // Nothing of the killed drill runs or stays: by container name, by pid, by directory, by record.
    expect(docker.docker(['ps', '-aq', '--filter', `name=${name}`]).stdout.trim()).toBe('');
    expect(runningContainers()).toBe('');
    expect(alive(cluster!.pid!)).toBe(false);
    expect(existsSync(cluster!.dataDir!)).toBe(false);
    expect(ownedBy(drill.child.pid!)).toEqual([]);
  }, 300_000);

  it('kill -9 while the throwaway cluster runs (no app check): the next drill stops it by pid and removes its copy of the data', async () => {
    const drill = watch(['drill', '--config', config('kill-cluster', { smoke: smokeFile('slow', 20) }), '--env', ENV, '--json']);
    let cluster: Leftover | undefined;
    await waitFor(
      async () => {
        // The slow smoke query holds the cluster: kill once the drill has reached it.
        cluster = ownedBy(drill.child.pid!).find((l) => l.kind === 'cluster' && l.pid);
        return Boolean(cluster) && /slow smoke query|Run the operator's smoke queries/i.test(drill.stderr());
      },
      { timeoutMs: 120_000, what: 'the drill to reach its smoke queries' },
    );
    process.kill(drill.child.pid!, 'SIGKILL');
    await drill.done;
    expect(alive(cluster!.pid!)).toBe(true);
    // The copy of production it holds still listens on 127.0.0.1.
    const port = Number(/^port = (\d+)$/m.exec(readFileSync(join(cluster!.dataDir!, 'postgresql.auto.conf'), 'utf8'))?.[1]);
    expect(port).toBeGreaterThan(0);
    const listening = () =>
      new Promise<boolean>((resolve) => {
        const socket = connect(port, '127.0.0.1');
        socket.once('connect', () => {
          socket.destroy();
          resolve(true);
        });
        socket.once('error', () => resolve(false));
      });
    expect(await listening()).toBe(true);

    const unreaped = ownedBy(drill.child.pid!).length > 0;
    const next = await lifeline(['drill', '--config', config('after-kill-cluster'), '--env', ENV, '--json'], { env: cliEnv() });
    expect(next.code, next.stderr).toBe(0);
    if (unreaped) expect(next.stderr).toContain(`PostgreSQL server pid ${cluster!.pid}`);
    expect(alive(cluster!.pid!)).toBe(false);
    expect(await listening()).toBe(false);
    expect(existsSync(cluster!.path!)).toBe(false);
    expect(ownedBy(drill.child.pid!)).toEqual([]);
  }, 300_000);

  it('an image without /bin/sh fails the check with the reason, and leaves no container', async () => {
    const rootfs = join(work.path, 'noshell');
    mkdirSync(rootfs);
    writeFileSync(join(rootfs, 'hello'), 'not a shell');
    const imported = spawnSync('sh', ['-c', `tar -C ${rootfs} -c . | docker import --change 'CMD ["/hello"]' - lifeline-test/noshell:1`], { env: { ...process.env, ...docker.env }, encoding: 'utf8' });
    expect(imported.status, imported.stderr).toBe(0);
    const { lines } = await appCheckLines('lifeline-test/noshell:1', '20s');
    const run = await lifeline(['drill', '--config', config('noshell', { appCheck: lines }), '--env', ENV, '--json'], { env: cliEnv() });
    expect(run.code, run.stderr).toBe(1);
    const check = JSON.parse(run.stdout).checks.find((c: { name: string }) => c.name === 'application starts on the restored data');
    expect(check.status).toBe('fail');
    expect(check.detail).toContain('the image has no /bin/sh');
    expect(docker.docker(['ps', '-aq']).stdout.trim()).toBe('');
  }, 300_000);

  it("two drills at once: each keeps its own cluster, the second leaves the first one's alone, both pass with separate reports", async () => {
    const smoke = smokeFile('overlap', 6);
    const first = watch(['drill', '--config', config('first', { smoke }), '--env', ENV, '--json']);
    await waitFor(async () => ownedBy(first.child.pid!).some((l) => l.kind === 'cluster' && l.pid), { timeoutMs: 120_000, what: "the first drill's cluster" });
    const firstCluster = ownedBy(first.child.pid!).find((l) => l.kind === 'cluster')!;
    const second = watch(['drill', '--config', config('second', { smoke }), '--env', ENV, '--json']);
    const [a, b] = await Promise.all([first.done, second.done]);
    expect(a.code, a.stderr).toBe(0);
    expect(b.code, b.stderr).toBe(0);
    // The second drill saw the first one's cluster as in use and did not touch it (the first passed on it).
    expect(b.stderr).toMatch(/left alone: \d+ drill resources? of processes that still run/);
    expect(a.stderr).not.toContain('removed what a killed drill left');
    expect(b.stderr).not.toContain(`server pid ${firstCluster.pid}`);
    const [ra, rb] = [JSON.parse(a.stdout), JSON.parse(b.stdout)];
    expect(ra.passed && rb.passed).toBe(true);
    expect(ra.id).not.toBe(rb.id);
    const drills = await lifeline(['drills', '--config', config('list'), '--env', ENV, '--json'], { env: cliEnv() });
    const ids = JSON.stringify(JSON.parse(drills.stdout));
    expect(ids).toContain(ra.id);
    expect(ids).toContain(rb.id);
    expect(ownedBy(first.child.pid!)).toEqual([]);
    expect(ownedBy(second.child.pid!)).toEqual([]);
    expect(alive(firstCluster.pid!)).toBe(false);
  }, 300_000);
});
