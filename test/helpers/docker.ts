import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync, copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { freePort, stopPid, waitFor } from '../../src/runner/ports';

/**
 * A private Docker engine and a local registry for tests, started the only way this machine
 * allows (no bridge, no iptables) with their own data and exec roots, and stopped by pid.
 * Containers must use `network_mode: host` and listen on 127.0.0.1.
 */
export interface DockerEnvironment {
  /** Environment for the docker / docker-compose CLIs: DOCKER_HOST points at the private engine. */
  env: Record<string, string>;
  dockerHost: string;
  /** `127.0.0.1:PORT` of the registry. */
  registry: string;
  root: string;
  docker(args: string[], options?: { input?: string; cwd?: string }): { status: number | null; stdout: string; stderr: string };
  /** A busybox-based image with `/bin/sh` and httpd, imported from the local root filesystem. */
  baseImage: string;
  stop(): Promise<void>;
}

export function dockerAvailable(): boolean {
  return spawnSync('sh', ['-c', 'command -v dockerd && command -v docker && test -x /bin/busybox'], { stdio: 'ignore' }).status === 0;
}

export async function startDockerEnvironment(): Promise<DockerEnvironment> {
  // Short paths: containerd's unix sockets must fit in 108 bytes.
  const root = mkdtempSync('/tmp/lld-');
  const sock = join(root, 'd.sock');
  const dockerHost = `unix://${sock}`;
  const env = { DOCKER_HOST: dockerHost, DOCKER_CONFIG: join(root, 'cli') };
  mkdirSync(env.DOCKER_CONFIG);
  const pids: number[] = [];
  const stop = async () => {
    for (const pid of pids.reverse()) await stopPid(pid, 'SIGTERM', 20000);
    // dockerd leaves mounts (the host netns, overlay layers) under its roots: unmount them first.
    const mounts = readFileSync('/proc/mounts', 'utf8')
      .split('\n')
      .map((line) => line.split(' ')[1] ?? '')
      .filter((point) => point.startsWith(`${root}/`))
      .sort((a, b) => b.length - a.length);
    for (const point of mounts) spawnSync('umount', ['-l', point]);
    rmSync(root, { recursive: true, force: true });
  };
  const docker = (args: string[], options: { input?: string; cwd?: string } = {}) => {
    const r = spawnSync('docker', args, { env: { ...process.env, ...env }, input: options.input, cwd: options.cwd, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
    return { status: r.status, stdout: r.stdout, stderr: r.stderr };
  };
  try {
    const daemon = spawn(
      'dockerd',
      ['--bridge=none', '--iptables=false', '--ip6tables=false', '--data-root', join(root, 'data'), '--exec-root', join(root, 'exec'), '--pidfile', join(root, 'dockerd.pid'), '--host', dockerHost],
      { stdio: ['ignore', 'ignore', 'ignore'], detached: false },
    );
    pids.push(daemon.pid!);
    await waitFor(async () => docker(['version', '--format', '{{.Server.Version}}']).status === 0, { timeoutMs: 30000, what: 'dockerd' });

    const registryPort = await freePort();
    const registryConfig = join(root, 'registry.yml');
    writeFileSync(registryConfig, `version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: ${join(root, 'registry')}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:${registryPort}\n`);
    const registry = spawn('docker-registry', ['serve', registryConfig], { stdio: ['ignore', 'ignore', 'ignore'] });
    pids.push(registry.pid!);
    await waitFor(async () => (await fetch(`http://127.0.0.1:${registryPort}/v2/`)).ok, { timeoutMs: 20000, what: 'docker-registry' });

    // A base image from the local busybox: nothing can be pulled from Docker Hub here.
    const rootfs = join(root, 'rootfs');
    mkdirSync(join(rootfs, 'bin'), { recursive: true });
    mkdirSync(join(rootfs, 'tmp'));
    mkdirSync(join(rootfs, 'www'));
    copyFileSync('/bin/busybox', join(rootfs, 'bin', 'busybox'));
    chmodSync(join(rootfs, 'bin', 'busybox'), 0o755);
    for (const applet of ['sh', 'httpd', 'cat', 'echo', 'sleep', 'wget', 'env', 'ls', 'test', 'printf', 'kill', 'true', 'false']) symlinkSync('busybox', join(rootfs, 'bin', applet));
    const baseImage = 'lifeline-test/busybox:base';
    const tar = spawnSync('sh', ['-c', `tar -C ${rootfs} -c . | docker import - ${baseImage}`], { env: { ...process.env, ...env }, encoding: 'utf8' });
    if (tar.status !== 0) throw new Error(`docker import failed: ${tar.stderr}`);
    return { env, dockerHost, registry: `127.0.0.1:${registryPort}`, root, docker, baseImage, stop };
  } catch (error) {
    let log = '';
    try {
      log = readFileSync(join(root, 'dockerd.log'), 'utf8');
    } catch {
      // none
    }
    await stop();
    throw new Error(`could not start the test Docker environment: ${(error as Error).message}${log ? `\n${log}` : ''}`);
  }
}
