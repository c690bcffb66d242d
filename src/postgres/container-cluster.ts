import { randomBytes } from 'node:crypto';
import { usageError } from '../errors';
import { freePort } from '../runner/ports';
import type { PgConnection } from '../runner/postgres-env';
import { LocalRunner, runText, type ContainerRunner, type Runner } from '../runner/runner';
import { containerImage, secretStdin, startThrowawayContainer, waitForContainer } from '../runner/throwaway-container';

/** Where the start script looks for initdb when the image's PATH lacks it (Debian, source builds, Bitnami). */
const FIND_SERVER =
  'command -v initdb >/dev/null 2>&1 || for p in /usr/lib/postgresql/*/bin /usr/local/pgsql/bin /opt/bitnami/postgresql/bin; do [ -x "$p/initdb" ] && PATH="$p:$PATH"; done; command -v initdb >/dev/null 2>&1 || { echo "lifeline: initdb: not found in the image" >&2; exit 127; }';

/**
 * The start script: the password arrives as the first line of stdin into a 0600 file, initdb uses
 * it and it is removed; the server then runs in the foreground on 127.0.0.1:$1, with its data in the
 * container's own filesystem (gone with the container) and non-durable settings (a throwaway copy).
 */
const START_SCRIPT = [
  'set -e',
  'umask 077',
  FIND_SERVER,
  'd="${TMPDIR:-/tmp}/lifeline-drill-pg"',
  'mkdir -p "$d"',
  'IFS= read -r pw',
  'printf "%s\\n" "$pw" > "$d/pw"',
  'unset pw',
  'initdb -D "$d/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 --pwfile="$d/pw" -E UTF8 --no-locale --no-sync > "$d/initdb.log" 2>&1 || { rm -f "$d/pw"; cat "$d/initdb.log" >&2; exit 1; }',
  'rm -f "$d/pw"',
  'exec postgres -D "$d/data" -c listen_addresses=127.0.0.1 -c port="$1" -c unix_socket_directories="$d" -c max_connections=50 -c fsync=off -c synchronous_commit=off -c full_page_writes=off',
].join('\n');

export interface ContainerCluster {
  conn: PgConnection;
  /** Runs psql / pg_restore inside the throwaway container, against 127.0.0.1. */
  runner: ContainerRunner;
  name: string;
  image: string;
  stop(): Promise<void>;
}

/**
 * A throwaway PostgreSQL server from the image the db service runs (so its major version is the
 * production one and no server binaries are needed on this host), for an isolated drill restore.
 */
export async function startContainerCluster(options: { image: string; nameSuffix: string; labels: Record<string, string>; purpose: string; docker?: Runner }): Promise<ContainerCluster> {
  const password = randomBytes(18).toString('base64url');
  const port = await freePort();
  const container = startThrowawayContainer({
    image: options.image,
    nameSuffix: options.nameSuffix,
    labels: options.labels,
    script: START_SCRIPT,
    scriptArgs: [String(port)],
    stdin: secretStdin(`${password}\n`),
    // initdb refuses root; the official images (and Debian's) have this user.
    user: 'postgres',
    purpose: options.purpose,
    where: "the drill's throwaway PostgreSQL container",
    docker: options.docker,
  });
  const conn: PgConnection = { host: '127.0.0.1', port, user: 'postgres', password, database: 'postgres', params: {} };
  try {
    await waitForContainer(
      container,
      async () => {
        const r = await runText(container.runner, {
          tool: 'psql',
          args: ['-X', '-h', '127.0.0.1', '-p', String(port), '-U', 'postgres', '-d', 'postgres', '-Atc', 'SELECT 1'],
          env: { PGPASSWORD: password },
        });
        return r.exitCode === 0 && r.stdout.trim() === '1';
      },
      'PostgreSQL',
    );
  } catch (error) {
    await container.stop().catch(() => undefined);
    throw error;
  }
  return { conn, runner: container.runner, name: container.name, image: options.image, stop: container.stop };
}

/**
 * Before a drill writes anything: the db service's image, checked to hold initdb, postgres, psql
 * and pg_restore and a `postgres` user. Refuses (usage, exit 2) with the fix otherwise, so a drill
 * that cannot start its throwaway server never writes a failed report that would fail the gate.
 */
export async function drillServerImage(serviceRunner: ContainerRunner, service: string, docker: Runner = new LocalRunner()): Promise<string> {
  const image = await containerImage(serviceRunner.container, docker);
  const probe = await runText(docker, {
    tool: 'docker',
    args: [
      'run',
      '--rm',
      '--network',
      'none',
      '--user',
      'postgres',
      '--entrypoint',
      'sh',
      image,
      '-c',
      `${FIND_SERVER}; for t in postgres psql pg_restore; do command -v "$t" >/dev/null 2>&1 || { echo "lifeline: $t: not found in the image" >&2; exit 127; }; done`,
    ],
  }).catch((error: Error) => ({ exitCode: 1, signal: null, stderr: error.message, stdout: '' }));
  if (probe.exitCode !== 0) {
    const why = /unable to find user postgres|no matching entries in passwd/i.test(probe.stderr)
      ? 'the image has no postgres user (initdb refuses root)'
      : probe.stderr.trim().split('\n').slice(-2).join('; ') || `docker run exit ${probe.exitCode}`;
    throw usageError(
      'DRILL_IMAGE_UNUSABLE',
      `the drill cannot start a throwaway PostgreSQL from the image of service ${service} (${image.slice(7, 19)}): ${why}; nothing was restored and no drill report was written`,
      `run the drill against a separate drill database instead (drill.targetUrlEnv in lifeline.yml, or --target-env NAME), or use an image for ${service} that has the PostgreSQL server binaries (the official postgres images do)`,
    );
  }
  return image;
}
