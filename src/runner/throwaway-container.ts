import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { failure } from '../errors';
import { recordLeftover } from './leftovers';
import { ContainerRunner, describeExit, lastLines, LocalRunner, runText, type RunningTool, type Runner } from './runner';

/**
 * A throwaway server in a container of a Compose service's image (the drill's PostgreSQL or Redis
 * when postgres.service / redis.service is set): on the host network, bound to 127.0.0.1 on a free
 * port, labelled and recorded as a drill leftover before it exists (so a killed drill's container
 * is removed by the next drill or `lifeline doctor`), removed by name afterwards.
 *
 * Secrets and payloads reach it on the `docker run -i` client's stdin, which the container's start
 * script reads into private files (umask 077): never its command line or its configuration, which
 * `ps` and `docker inspect` show.
 */
export interface ThrowawayContainer {
  name: string;
  image: string;
  /** Runs tools inside it (`docker exec`). */
  runner: ContainerRunner;
  /** The `docker run` client: its exit means the server stopped. */
  client: RunningTool;
  /** Removes the container (`docker rm -f`) and its leftover record. */
  stop(): Promise<void>;
}

export interface ThrowawayContainerOptions {
  image: string;
  /** `lifeline-drill-<suffix>`: what `docker ps` and the leftover record show. */
  nameSuffix: string;
  labels: Record<string, string>;
  /** The start script (run by `sh -c`); $1.. are `scriptArgs`. */
  script: string;
  scriptArgs: string[];
  /** What stdin carries (closed at its end). */
  stdin: Readable;
  /** `docker run --user`. */
  user?: string;
  purpose: string;
  where: string;
  /** Docker CLI runner on this host (default: local, with this process's DOCKER_HOST). */
  docker?: Runner;
}

/** `lifeline-drill-<suffix>-<random>`, in the form the leftover records accept (at most 64 characters after the prefix). */
export function drillContainerName(suffix: string): string {
  const tail = `${suffix}-${randomBytes(3).toString('hex')}`
    .toLowerCase()
    .replace(/[^a-z0-9-]/g, '-')
    .slice(-64)
    .replace(/^-+/, '');
  return `lifeline-drill-${tail}`;
}

export function startThrowawayContainer(options: ThrowawayContainerOptions): ThrowawayContainer {
  const docker = options.docker ?? new LocalRunner();
  const name = drillContainerName(options.nameSuffix);
  const forget = recordLeftover({ kind: 'container', container: name, purpose: options.purpose });
  const args = [
    'run',
    '-i',
    '--rm',
    '--name',
    name,
    // Host network only: the server listens on 127.0.0.1 of this host; no Docker network is created.
    '--network',
    'host',
    ...Object.entries(options.labels).flatMap(([k, v]) => ['--label', `${k}=${v}`]),
    ...(options.user ? ['--user', options.user] : []),
    '--entrypoint',
    'sh',
    options.image,
    '-c',
    options.script,
    'lifeline-drill',
    ...options.scriptArgs,
  ];
  const client = docker.start({ tool: 'docker', args, stdin: options.stdin });
  client.stdout.resume();
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    const removed = await runText(docker, { tool: 'docker', args: ['rm', '-f', name] }).catch((error: Error) => ({ exitCode: 1, signal: null, stderr: error.message, stdout: '' }));
    client.kill('SIGTERM');
    await client.done.catch(() => undefined);
    if (removed.exitCode !== 0 && !/No such container/i.test(removed.stderr)) {
      // The record stays: the next drill (or lifeline doctor) removes it.
      throw failure('CONTAINER_REMOVE_FAILED', `docker rm -f ${name} ${describeExit(removed)}: ${lastLines(removed.stderr, 2)}`, { fix: `remove it with: docker rm -f ${name}` });
    }
    forget();
  };
  return { name, image: options.image, runner: new ContainerRunner({ container: name, where: options.where }), client, stop };
}

/**
 * Polls `probe` until it answers true; fails early with the container's last output when its
 * `docker run` client exits (the server could not start), or at the timeout.
 */
export async function waitForContainer(container: ThrowawayContainer, probe: () => Promise<boolean>, what: string, timeoutMs = 120_000): Promise<void> {
  let exited: { exitCode: number | null; signal: NodeJS.Signals | null; stderr: string } | undefined;
  container.client.done.then(
    (r) => (exited = r),
    (error: Error) => (exited = { exitCode: null, signal: null, stderr: error.message }),
  );
  const deadline = Date.now() + timeoutMs;
  for (let delay = 100; ; delay = Math.min(delay * 2, 1000)) {
    if (exited) {
      throw failure('THROWAWAY_START_FAILED', `${what} in a container of ${container.image} did not start (docker run ${describeExit(exited)}): ${lastLines(exited.stderr, 6)}`, {
        fix: `check that the image runs ${what} as its service does; try: docker run --rm --entrypoint sh ${container.image} -c 'id; command -v initdb redis-server'`,
      });
    }
    if (await probe().catch(() => false)) return;
    if (Date.now() > deadline) throw failure('THROWAWAY_START_FAILED', `${what} in container ${container.name} did not answer within ${Math.round(timeoutMs / 1000)} s`);
    await new Promise((r) => setTimeout(r, delay));
  }
}

/** A Readable of the given lines (a password) followed by nothing. */
export function secretStdin(text: string): Readable {
  return Readable.from([Buffer.from(text)]);
}

/** The image a running Compose service's container was created from (its id: the exact bytes production runs). */
export async function containerImage(container: string, docker: Runner = new LocalRunner()): Promise<string> {
  const inspected = await runText(docker, { tool: 'docker', args: ['inspect', '--format', '{{.Image}}', container] });
  const image = inspected.stdout.trim();
  if (inspected.exitCode !== 0 || !/^sha256:[0-9a-f]{64}$/.test(image)) {
    throw failure('IMAGE_UNKNOWN', `cannot read the image of container ${container.slice(0, 12)} (docker inspect ${describeExit(inspected)}): ${lastLines(inspected.stderr, 2)}`, {
      fix: 'check that Docker is reachable (DOCKER_HOST) and the service runs',
    });
  }
  return image;
}
