import type { Catalog } from '../catalog/store';
import { verifiedRunningApiImage } from '../deploy/manifest-verifier';
import { SecretMasker, type Logger } from '../logger';
import { formatPgUrl, type PgConnection } from '../runner/postgres-env';
import { randomBytes } from 'node:crypto';
import { recordLeftover } from '../runner/leftovers';
import { engineOnThisHost, freshHttpStatus, proveHealthOwner, UNTIED_HEALTH, type ContainerIdentity, type HealthProof } from '../runner/listeners';
import { describeExit, lastLines, LocalRunner, runText, type Runner } from '../runner/runner';
import { tarStream } from '../catalog/tar';
import { formatDuration } from '../settings/duration';
import type { AppCheckSettings, EnvironmentSettings } from '../settings/resolve';
import type { CheckOutcome } from './checks';
import { failure } from '../errors';

export const APP_CHECK_NAME = 'application starts on the restored data';

const POLL_MS = 250;
const HTTP_TIMEOUT_MS = 2000;
const LOG_TAIL_LINES = 20;

export interface AppCheckOptions {
  settings: EnvironmentSettings;
  catalog: Catalog;
  logger: Logger;
  /** The restored database, as the drill's own checks reach it. */
  conn: PgConnection;
  /** Where the docker CLI runs; default: locally, with this process's environment (DOCKER_HOST and DOCKER_CONFIG included). */
  runner?: Runner;
  /** The drill's id: names and labels the container (`lifeline.drill=<id>`). */
  drillId?: string;
}

/** The image to start and where it came from: the configured one, else the api image of the running release. */
export async function appCheckImage(settings: EnvironmentSettings, catalog: Catalog): Promise<{ image: string; source: string } | undefined> {
  const configured = settings.drill.appCheck?.image;
  if (configured) return { image: configured, source: 'drill.appCheck.image' };
  // From the running release's verified manifest: the catalog's deployment.json could have been edited.
  return verifiedRunningApiImage(catalog, settings);
}

/**
 * Starts the application image against the restored database and waits for its health URL to
 * answer 2xx: the data is only restored when the application can run on it. The container uses
 * the host network (the restored database listens on 127.0.0.1) and is removed by name afterwards,
 * whatever happened (and by the next drill when this one is killed first). The database URL
 * reaches the container as a file its start-up wrapper reads and deletes, never its command line
 * or configuration (`docker inspect`), and its password is masked in everything this reports.
 */
export async function checkApplicationStarts(options: AppCheckOptions): Promise<CheckOutcome> {
  const { settings, logger, conn } = options;
  const config = settings.drill.appCheck!;
  const masker = new SecretMasker();
  masker.add(conn.password);
  if (conn.password) logger.secret(conn.password);
  const fail = (detail: string): CheckOutcome => ({ name: APP_CHECK_NAME, passed: false, detail: masker.mask(detail) });

  if (conn.host.startsWith('/')) {
    return fail(`the restored database listens on a Unix socket only (${conn.host}), which the application container cannot reach; drill into a throwaway cluster or a --target URL on 127.0.0.1`);
  }
  const chosen = await appCheckImage(settings, options.catalog);
  if (!chosen) {
    return fail(
      `no image to start: drill.appCheck.image is not set and no release deployed by Lifeline is recorded for environment ${settings.name}; set drill.appCheck.image in lifeline.yml (e.g. registry.example.com/shop/api:v42)`,
    );
  }
  // Something already answering the URL (the live api on the same host, say) would pass the check for the wrong application.
  const before = await httpStatus(config.healthUrl);
  if (before.answered) {
    return fail(
      `${config.healthUrl} already answers (${before.detail}) before the drill's container started, so its answer would not prove anything; run the drill's application on a free port (through drill.appCheck.env or command) and point drill.appCheck.healthUrl at it`,
    );
  }

  const runner = options.runner ?? new LocalRunner({ masker });
  const imageConfig = await imageStartConfig(runner, chosen.image);
  if ('error' in imageConfig) return fail(`cannot read how ${chosen.image} starts: ${tail(masker.mask(imageConfig.error), 3)}`);
  const argv = [...(imageConfig.entrypoint ?? []), ...(config.command ?? imageConfig.cmd ?? [])];
  if (argv.length === 0) return fail(`${chosen.image} has neither an entrypoint nor a command, and drill.appCheck.command is not set: there is nothing to start`);

  const name = `lifeline-drill-${options.drillId ?? 'app'}-${randomBytes(4).toString('hex')}`.toLowerCase().replace(/[^a-z0-9-]/g, '-');
  // Recorded before the container exists: a drill killed while it runs leaves it to the next drill to remove.
  const forget = recordLeftover({ kind: 'container', container: name, purpose: `application check of the drill of ${settings.name}` });
  logger.info(
    `starting ${chosen.image} (${chosen.source}) on the host network as ${name}, with ${config.databaseUrlEnv}=${masker.mask(formatPgUrl({ ...conn, password: conn.password ? '***' : undefined }))} in a file it reads at start-up`,
  );
  try {
    const created = await runText(runner, { tool: 'docker', args: createArgs(settings.name, options.drillId, name, config, chosen.image, argv), env: config.env });
    if (created.exitCode !== 0) return fail(`docker create ${chosen.image} failed (${describeExit(created)}): ${tail(masker.mask(created.stderr), 5)}`);
    try {
      await copyDatabaseUrl(runner, name, config.databaseUrlEnv, formatPgUrl(conn), imageConfig.user);
      const started = await runText(runner, { tool: 'docker', args: ['start', name] });
      if (started.exitCode !== 0) {
        const noShell = /\/bin\/sh.*(no such file|not found)/i.test(started.stderr)
          ? `; the image has no /bin/sh, which the drill needs to hand the application its ${config.databaseUrlEnv} without putting it in the container's configuration`
          : '';
        return fail(`docker start ${name} (${chosen.image}) failed (${describeExit(started)}): ${tail(masker.mask(started.stderr), 5)}${noShell}`);
      }
      return await waitForApplication(runner, name, config, chosen.image, masker, fail, { logger, requireOwned: settings.compose.requireOwnedHealth });
    } finally {
      await removeContainer(runner, name, logger);
    }
  } finally {
    forget();
  }
}

/** Where the database URL waits inside the container until the start-up wrapper reads it (and deletes it). */
const URL_DIR = 'lifeline-drill';
const URL_FILE = `/${URL_DIR}/env`;
/**
 * The container's start: export what the file holds, delete the file, run the image's own
 * entrypoint and command. The URL never enters the container's configuration, which
 * `docker inspect` shows to anyone who may talk to the engine.
 */
const START_WRAPPER = `set -a && . ${URL_FILE} && set +a && { rm -f ${URL_FILE} 2>/dev/null || :; } && exec "$@"`;

function createArgs(environment: string, drillId: string | undefined, name: string, config: AppCheckSettings, image: string, argv: string[]): string[] {
  return [
    'create',
    '--name',
    name,
    // Host network only: the restored database is on 127.0.0.1, and no Docker network is ever created.
    '--network',
    'host',
    '--label',
    `lifeline.drill.environment=${environment}`,
    '--label',
    `lifeline.drill=${drillId ?? 'unknown'}`,
    // Values come from the docker CLI's environment, by name: nothing but names on its command line.
    ...Object.keys(config.env).flatMap((key) => ['-e', key]),
    '--entrypoint',
    '/bin/sh',
    image,
    '-c',
    START_WRAPPER,
    'lifeline-drill',
    ...argv,
  ];
}

/** The image's entrypoint, command and user, as `docker run` would use them (pulled first when absent). */
async function imageStartConfig(runner: Runner, image: string): Promise<{ entrypoint: string[] | null; cmd: string[] | null; user: string } | { error: string }> {
  const inspect = () => runText(runner, { tool: 'docker', args: ['image', 'inspect', '--format', '{{json .Config}}', image] });
  let result = await inspect();
  if (result.exitCode !== 0) {
    const pulled = await runText(runner, { tool: 'docker', args: ['pull', '--quiet', image] });
    if (pulled.exitCode !== 0) return { error: `docker pull ${describeExit(pulled)}: ${pulled.stderr}` };
    result = await inspect();
    if (result.exitCode !== 0) return { error: `docker image inspect ${describeExit(result)}: ${result.stderr}` };
  }
  const parsed = JSON.parse(result.stdout) as { Entrypoint?: string[] | null; Cmd?: string[] | null; User?: string };
  return { entrypoint: parsed.Entrypoint ?? null, cmd: parsed.Cmd ?? null, user: parsed.User ?? '' };
}

/**
 * Puts `NAME='url'` into the created (not yet started) container as a file only the image's user
 * can read (0400; a user named rather than numbered cannot be resolved here, so the file is then
 * readable inside the container, 0444). It is streamed from memory and never touches this host's disk.
 */
async function copyDatabaseUrl(runner: Runner, container: string, envName: string, url: string, imageUser: string): Promise<void> {
  const [userPart = '', groupPart] = imageUser.split(':');
  const numeric = /^\d*$/.test(userPart) && (groupPart === undefined || /^\d+$/.test(groupPart));
  const uid = numeric ? Number(userPart || '0') : 0;
  const gid = numeric ? Number(groupPart ?? userPart ?? '0') || 0 : 0;
  const quoted = `'${url.replace(/'/g, `'\\''`)}'`;
  const members = [
    { name: URL_DIR, directory: true as const, mode: 0o700, uid, gid },
    { name: `${URL_DIR}/env`, text: `${envName}=${quoted}\n`, mode: numeric ? 0o400 : 0o444, uid, gid },
  ];
  if (!numeric) members[0]!.mode = 0o755;
  const running = runner.start({ tool: 'docker', args: ['cp', '-', `${container}:/`], stdin: tarStream(members) });
  running.stdout.resume();
  const result = await running.done;
  if (result.exitCode !== 0) throw failure('TOOL_FAILED', `docker cp of the database URL into ${container} failed (${describeExit(result)}): ${lastLines(result.stderr, 3)}`);
}

async function waitForApplication(
  runner: Runner,
  id: string,
  config: AppCheckSettings,
  image: string,
  masker: SecretMasker,
  fail: (detail: string) => CheckOutcome,
  ownership: { logger: Logger; requireOwned: boolean },
): Promise<CheckOutcome> {
  const started = Date.now();
  const deadline = started + config.timeoutSeconds * 1000;
  let last = 'no answer yet';
  for (;;) {
    const answer = await httpStatus(config.healthUrl);
    const elapsed = formatDuration((Date.now() - started) / 1000);
    if (answer.ok) {
      // The 2xx counts only when the drill's container holds the URL's listening socket: a stray
      // process that took the port after the check before the start would pass it otherwise.
      const proof = await proveAnswer(runner, id, config.healthUrl);
      const answered = `${config.healthUrl} answered ${answer.detail} after ${elapsed} (${image})`;
      if (proof.status === 'owned') return { name: APP_CHECK_NAME, passed: true, detail: `${answered}, ${proof.detail}` };
      if (proof.status === 'other') {
        const pids = proof.strangers.map((p) => p.pid).join(' ');
        const stop = pids ? `Stop what holds port ${proof.port} (kill ${pids}; ss -ltnp 'sport = :${proof.port}' lists it) and make` : 'Make';
        return fail(
          `${answered}, but not from the drill's container ${id}: ${proof.detail}; that answer proves nothing about the application. ${stop} the application listen on the port of drill.appCheck.healthUrl; its last log lines:\n${await logsTail(runner, id, masker)}`,
        );
      }
      const untied = `${UNTIED_HEALTH} (${config.healthUrl}: ${proof.reason})`;
      if (ownership.requireOwned) return fail(`${answered}, but ${untied}; compose.requireOwnedHealth is true`);
      ownership.logger.warn(`the drill's application check: ${untied}; its 2xx was accepted (set compose.requireOwnedHealth: true to refuse such answers)`);
      return { name: APP_CHECK_NAME, passed: true, detail: `${answered}; WARNING: ${untied}` };
    }
    last = answer.detail;
    const state = await containerState(runner, id);
    if (state && !state.running) {
      return fail(
        `container ${id.slice(0, 12)} of ${image} ${state.status} (exit code ${state.exitCode}) after ${elapsed} before ${config.healthUrl} answered 2xx; its last log lines:\n${await logsTail(runner, id, masker)}`,
      );
    }
    if (Date.now() >= deadline) {
      return fail(
        `${config.healthUrl} did not answer 2xx within ${formatDuration(config.timeoutSeconds)} (last: ${last}) from ${image}; the container's last log lines:\n${await logsTail(runner, id, masker)}`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

/** Ties the health URL's listener to the container (by its id, init pid and addresses from `docker inspect`). */
async function proveAnswer(runner: Runner, name: string, url: string): Promise<HealthProof> {
  const result = await runText(runner, { tool: 'docker', args: ['inspect', '--type', 'container', '--format', '{{json .}}', name] }).catch(() => undefined);
  if (!result || result.exitCode !== 0) return { status: 'unknown', reason: `docker inspect ${name} failed` };
  try {
    const c = JSON.parse(result.stdout) as { Id: string; State?: { Pid?: number }; NetworkSettings?: { Networks?: Record<string, { IPAddress?: string } | null> | null } };
    const identity: ContainerIdentity = { id: c.Id, pid: c.State?.Pid ?? 0, addresses: Object.values(c.NetworkSettings?.Networks ?? {}).flatMap((n) => (n?.IPAddress ? [n.IPAddress] : [])) };
    return await proveHealthOwner(url, [identity], { engineOnThisHost: engineOnThisHost(process.env) });
  } catch (error) {
    return { status: 'unknown', reason: `looking it up failed: ${(error as Error).message}` };
  }
}

async function containerState(runner: Runner, id: string): Promise<{ running: boolean; status: string; exitCode: number } | undefined> {
  const result = await runText(runner, { tool: 'docker', args: ['inspect', '--type', 'container', '--format', '{{.State.Running}} {{.State.Status}} {{.State.ExitCode}}', id] }).catch(() => undefined);
  if (!result || result.exitCode !== 0) return undefined;
  const [running, status, exitCode] = result.stdout.trim().split(' ');
  return { running: running === 'true', status: status ?? 'unknown', exitCode: Number(exitCode) };
}

/** The container's last log lines (stdout, then stderr: the two streams come back apart), masked; never throws. */
async function logsTail(runner: Runner, id: string, masker: SecretMasker): Promise<string> {
  const result = await runText(runner, { tool: 'docker', args: ['logs', '--tail', String(LOG_TAIL_LINES), id] }).catch((error: Error) => ({ exitCode: 1, stdout: '', stderr: error.message }));
  if (result.exitCode !== 0) return `(could not read its logs: ${tail(masker.mask(result.stderr), 2)})`;
  const text = [result.stdout, result.stderr]
    .map((s) => s.trim())
    .filter(Boolean)
    .join('\n');
  return text ? tail(masker.mask(text), LOG_TAIL_LINES) : '(it logged nothing)';
}

async function removeContainer(runner: Runner, id: string, logger: Logger): Promise<void> {
  const result = await runText(runner, { tool: 'docker', args: ['rm', '-f', id] }).catch((error: Error) => ({ exitCode: 1, stderr: error.message, signal: null }));
  if (result.exitCode !== 0) logger.warn(`could not remove the drill's application container ${id.slice(0, 12)}: ${tail(result.stderr, 2)}; remove it with docker rm -f ${id}`);
}

/** `answered`: any HTTP response at all; `ok`: a 2xx one. Each over a connection of its own (see freshHttpStatus). */
function httpStatus(url: string): Promise<{ ok: boolean; answered: boolean; detail: string }> {
  return freshHttpStatus(url, HTTP_TIMEOUT_MS);
}

function tail(text: string, count: number): string {
  const lines = text.trim().split('\n').filter(Boolean);
  return lines.length ? lines.slice(-count).join('\n') : '(no output)';
}
