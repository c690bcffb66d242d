import { randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { PassThrough } from 'node:stream';
import { usageError } from '../errors';
import { freePort } from '../runner/ports';
import { LocalRunner, runText, type ContainerRunner, type Runner } from '../runner/runner';
import { containerImage, startThrowawayContainer, waitForContainer } from '../runner/throwaway-container';
import { redisCli } from './snapshot';

/**
 * The start script: the first line of stdin is the password (into a 0600 config file), the rest is
 * the RDB snapshot (into a 0600 dump.rdb in a private directory); then redis-server loads it on
 * 127.0.0.1:$1 with persistence off.
 */
const START_SCRIPT = [
  'set -e',
  'umask 077',
  'command -v redis-server >/dev/null 2>&1 || { echo "lifeline: redis-server: not found in the image" >&2; exit 127; }',
  'd="${TMPDIR:-/tmp}/lifeline-drill-redis"',
  'mkdir -p "$d"',
  'IFS= read -r pw',
  'printf "requirepass %s\\n" "$pw" > "$d/redis.conf"',
  'unset pw',
  'cat > "$d/dump.rdb"',
  'exec redis-server "$d/redis.conf" --port "$1" --bind 127.0.0.1 --dir "$d" --dbfilename dump.rdb --appendonly no --save "" --daemonize no',
].join('\n');

export interface ContainerRedis {
  /** redis-cli inside the container reaches it at 127.0.0.1:port with this password. */
  target: { host: string; port: number; password: string; tls: false };
  runner: ContainerRunner;
  name: string;
  stop(): Promise<void>;
}

/** A private redis-server from the Redis service's image, loaded with an RDB file from the catalog. */
export async function startContainerRedis(options: { image: string; rdbFile: string; nameSuffix: string; labels: Record<string, string>; purpose: string; docker?: Runner }): Promise<ContainerRedis> {
  const password = randomBytes(18).toString('base64url');
  const port = await freePort();
  const stdin = new PassThrough();
  stdin.write(`${password}\n`);
  createReadStream(options.rdbFile, { highWaterMark: 1024 * 1024 })
    .on('error', (error) => stdin.destroy(error))
    .pipe(stdin);
  const container = startThrowawayContainer({
    image: options.image,
    nameSuffix: options.nameSuffix,
    labels: options.labels,
    script: START_SCRIPT,
    scriptArgs: [String(port)],
    stdin,
    purpose: options.purpose,
    where: "the drill's throwaway Redis container",
    docker: options.docker,
  });
  const target = { host: '127.0.0.1', port, password, tls: false as const };
  try {
    // PING answers LOADING until the dataset is in memory.
    await waitForContainer(container, async () => (await runText(container.runner, redisCli(target, ['PING']))).stdout.trim() === 'PONG', 'redis-server');
  } catch (error) {
    await container.stop().catch(() => undefined);
    throw error;
  }
  return { target, runner: container.runner, name: container.name, stop: container.stop };
}

/** The Redis service's image, checked to hold redis-server and redis-cli, before a drill writes anything. */
export async function drillRedisImage(serviceRunner: ContainerRunner, service: string, options: { who?: string; consequence?: string; docker?: Runner } = {}): Promise<string> {
  const docker = options.docker ?? new LocalRunner();
  const image = await containerImage(serviceRunner.container, docker);
  const probe = await runText(docker, {
    tool: 'docker',
    args: [
      'run',
      '--rm',
      '--network',
      'none',
      '--entrypoint',
      'sh',
      image,
      '-c',
      'for t in redis-server redis-cli; do command -v "$t" >/dev/null 2>&1 || { echo "lifeline: $t: not found in the image" >&2; exit 127; }; done',
    ],
  }).catch((error: Error) => ({ exitCode: 1, signal: null, stderr: error.message, stdout: '' }));
  if (probe.exitCode !== 0) {
    throw usageError(
      'DRILL_IMAGE_UNUSABLE',
      `${options.who ?? 'the drill'} cannot start a throwaway Redis from the image of service ${service} (${image.slice(7, 19)}): ${probe.stderr.trim().split('\n').slice(-2).join('; ') || `docker run exit ${probe.exitCode}`}; ${options.consequence ?? 'nothing was restored and no drill report was written'}`,
      `use an image for ${service} that has redis-server and redis-cli (the official redis images do)`,
    );
  }
  return image;
}
