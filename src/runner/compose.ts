import { failure, usageError } from '../errors';
import { SecretMasker } from '../logger';
import type { ComposeSettings } from '../settings/resolve';
import { childEnvironment, definedOnly, describeExit, findExecutable, lastLines, LocalRunner, runChecked, runText, spawnStreaming, type Runner, type RunningTool, type ToolInvocation } from './runner';

// The one Compose driver (issue #23): every Compose command line Lifeline runs (v2 `docker compose`
// or v1 `docker-compose`, the project's files and name, then ps/up/stop/start/pull/logs/config/exec)
// and every lookup of a project's containers by Compose's labels is built here. Nothing outside
// src/runner/ spells a Compose argv (test/unit/import-walls.test.ts holds that wall).

export type ComposeCommandSetting = ComposeSettings['command'];

/** `['docker', 'compose']` (v2 plugin) or `['docker-compose']` (v1). */
export type ComposeCommand = readonly string[];

export const COMPOSE_V2: ComposeCommand = ['docker', 'compose'];
export const COMPOSE_V1: ComposeCommand = ['docker-compose'];

/**
 * Picks the Compose CLI: the configured one, or with `auto` the v2 plugin if `docker compose
 * version` answers, else v1. Both talk to whatever engine DOCKER_HOST names (ssh:// included).
 */
export async function detectComposeCommand(runner: Runner, setting: ComposeCommandSetting, pathEnv = ''): Promise<ComposeCommand> {
  if (setting === 'docker compose') return COMPOSE_V2;
  if (setting === 'docker-compose') return COMPOSE_V1;
  const v2 = await runText(runner, { tool: 'docker', args: ['compose', 'version'] }).catch(() => undefined);
  if (v2?.exitCode === 0) return COMPOSE_V2;
  // v1 is a Python program that takes seconds to start: finding it on PATH is enough.
  if (findExecutable('docker-compose', [], pathEnv)) return COMPOSE_V1;
  throw usageError(
    'COMPOSE_MISSING',
    'neither `docker compose` (Compose v2) nor `docker-compose` (v1) works on this machine',
    'install the Docker Compose plugin (or docker-compose), set compose.command in lifeline.yml, or remove postgres.service / redis.service to run the client tools locally',
  );
}

/** `auto` prefers Compose v2 (`docker compose`), then v1 (`docker-compose`), on this host's PATH. */
export async function composeCommand(configured: ComposeCommandSetting): Promise<string[]> {
  return [...(await detectComposeCommand(new LocalRunner(), configured, process.env.PATH ?? ''))];
}

export interface ComposeCli {
  command: string[];
  /** Known for v2 (a quick Go call); v1 is not asked, since every Python start-up of v1 costs seconds on a busy runner. */
  version?: string;
}

/**
 * Preflight's pick, which also reads v2's version: v2 (`docker compose`) first, then v1
 * (`docker-compose`) when it is on PATH, unless the config names one; undefined when none is there.
 */
export async function probeComposeCli(runner: Runner, configured: ComposeCommandSetting, pathEnv: string | undefined, cwd?: string): Promise<ComposeCli | undefined> {
  if (configured !== 'docker-compose') {
    try {
      const v2 = await runText(runner, { tool: 'docker', args: ['compose', 'version', '--short'], cwd });
      const version = v2.stdout.trim();
      if (v2.exitCode === 0 && /^v?\d+\.\d+/.test(version)) return { command: [...COMPOSE_V2], version: version.replace(/^v/, '') };
    } catch {
      // no docker CLI: v1 may still be there
    }
    if (configured === 'docker compose') return undefined;
  }
  return findExecutable('docker-compose', [], pathEnv) ? { command: [...COMPOSE_V1] } : undefined;
}

/** The project name as Compose records it in its labels (both versions lowercase it and drop other characters). */
export function normalizeProjectName(name: string): string {
  return name.toLowerCase().replace(/[^-_a-z0-9]/g, '');
}

export interface ComposeProject {
  command: ComposeCommand;
  /** The operator's Compose files, in order. */
  files: string[];
  projectName?: string;
}

/** The full argv for one Compose call; the override file, when given, comes last so it wins. */
export function composeInvocation(project: ComposeProject, args: string[], overrideFile?: string): { tool: string; args: string[] } {
  const [tool, ...prefix] = project.command;
  const files = overrideFile ? [...project.files, overrideFile] : project.files;
  return {
    tool: tool!,
    args: [...prefix, ...files.flatMap((file) => ['-f', file]), ...(project.projectName ? ['-p', project.projectName] : []), ...args],
  };
}

/** One Compose command line as an operator would type it, for a message's fix. */
export function composeHint(project: ComposeProject, args: string): string {
  const invocation = composeInvocation(project, []);
  return [invocation.tool, ...invocation.args, args].join(' ');
}

/**
 * The Compose command line of the configured CLI, files and project, as a runbook prints it (`auto`
 * is written as v2); the files as the caller shows them.
 */
export function composeCommandText(setting: ComposeCommandSetting, shownFiles: string[], projectName: string | undefined): string {
  const cli = setting === 'docker-compose' ? COMPOSE_V1 : COMPOSE_V2;
  return [cli.join(' '), ...shownFiles.map((f) => `-f ${f}`), ...(projectName ? [`-p ${projectName}`] : [])].join(' ');
}

/** `--filter label=...` for Compose's labels on the engine's containers. */
function labelFilters(labels: string[]): string[] {
  return labels.flatMap((label) => ['--filter', `label=${label}`]);
}

function projectLabel(projectName: string): string {
  return `com.docker.compose.project=${normalizeProjectName(projectName)}`;
}

function idLines(out: string): string[] {
  return out
    .split('\n')
    .map((line) => line.trim())
    .filter(Boolean);
}

export interface ContainerState {
  id: string;
  /** The Compose service the container belongs to (its `com.docker.compose.service` label). */
  service: string;
  /** The image reference the container was created from (e.g. `registry/app@sha256:...`). */
  imageRef: string;
  /** The local image id (`sha256:...`). */
  imageId: string;
  running: boolean;
  exitCode: number;
  status: string;
  /** `starting`, `healthy`, `unhealthy`, or undefined when the container has no healthcheck. */
  health?: string;
  /** When the engine last started it (ms since the epoch; 0 when never started). */
  startedAtMs: number;
  /** How often the engine restarted it (restart policy). */
  restartCount: number;
  /** The pid of its init on the engine's host (`State.Pid`; 0 when not running). */
  pid: number;
  /** Its addresses on its Docker networks (none with the host network). */
  addresses: string[];
}

/** The Compose and Docker calls a deploy or a live restore needs, through the runner (the only place that spawns). */
export class ComposeDriver {
  constructor(
    private readonly runner: Runner,
    readonly project: ComposeProject,
  ) {}

  async pull(services: string[], overrideFile?: string): Promise<void> {
    await runChecked(this.runner, composeInvocation(this.project, ['pull', ...services], overrideFile), `pulling ${services.join(', ')}`);
  }

  /**
   * Recreates only the named services (`--no-deps`): the database and Redis are never touched.
   * Always new containers (`--force-recreate`), so what answers a health check afterwards can be
   * told apart from what ran before.
   */
  async up(services: string[], overrideFile?: string): Promise<void> {
    await runChecked(this.runner, composeInvocation(this.project, ['up', '-d', '--no-deps', '--force-recreate', ...services], overrideFile), `starting ${services.join(', ')}`);
  }

  /** `compose stop SERVICE`; a non-zero exit is a TOOL_FAILED failure carrying Compose's stderr. */
  async stop(service: string): Promise<void> {
    await runChecked(this.runner, composeInvocation(this.project, ['stop', service]), `stopping ${service}`);
  }

  /** `compose start SERVICE` (the same container, not a new one). */
  async start(service: string): Promise<void> {
    await runChecked(this.runner, composeInvocation(this.project, ['start', service]), `starting ${service}`);
  }

  /**
   * The ids of a service's containers, stopped ones included: `ps -a` with v2, which otherwise
   * lists running containers only; v1 lists stopped ones anyway (its -a adds one-off `run` containers).
   */
  async serviceContainerIds(service: string): Promise<string[]> {
    const v2 = this.project.command.length > 1;
    return idLines(await runChecked(this.runner, composeInvocation(this.project, ['ps', ...(v2 ? ['-a'] : []), '-q', service]), `finding the container of service ${service}`));
  }

  /** The local image id (`sha256:...`) of each reference the engine has; references it lacks are absent. */
  async imageIds(references: string[]): Promise<Map<string, string>> {
    const ids = new Map<string, string>();
    for (const reference of references) {
      const result = await runText(this.runner, { tool: 'docker', args: ['image', 'inspect', '--format', '{{.Id}}', reference] }).catch(() => undefined);
      const id = result?.exitCode === 0 ? result.stdout.trim() : '';
      if (id) ids.set(reference, id);
    }
    return ids;
  }

  /** True when every image is already in the engine: a digest names exactly one image, so pulling it again changes nothing. */
  async imagesPresent(images: string[]): Promise<boolean> {
    const result = await runText(this.runner, { tool: 'docker', args: ['image', 'inspect', '--format', '{{.Id}}', ...images] }).catch(() => undefined);
    return result?.exitCode === 0;
  }

  /**
   * Every container of the project, with its state. With a known project name the engine is asked
   * directly by Compose's labels: Compose v1 takes seconds to start, which a health wait should not pay.
   */
  async projectContainers(overrideFile?: string): Promise<ContainerState[]> {
    const out = this.project.projectName
      ? await runChecked(
          this.runner,
          { tool: 'docker', args: ['ps', '-aq', '--no-trunc', ...labelFilters([projectLabel(this.project.projectName), 'com.docker.compose.oneoff=False'])] },
          'listing the containers of the project',
        )
      : await runChecked(this.runner, composeInvocation(this.project, ['ps', '-q'], overrideFile), 'listing the containers of the project');
    const ids = idLines(out);
    return ids.length ? this.inspect(ids) : [];
  }

  /** The state of the given containers; throws if one of them no longer exists. */
  async inspect(containerIds: string[]): Promise<ContainerState[]> {
    const out = await runChecked(this.runner, { tool: 'docker', args: ['inspect', '--type', 'container', ...containerIds] }, 'inspecting containers');
    let parsed: {
      Id: string;
      Image: string;
      RestartCount?: number;
      Config: { Image: string; Labels?: Record<string, string> };
      State: { Running: boolean; ExitCode: number; Status: string; StartedAt?: string; Pid?: number; Health?: { Status: string } };
      NetworkSettings?: { Networks?: Record<string, { IPAddress?: string; GlobalIPv6Address?: string } | null> | null };
    }[];
    try {
      parsed = JSON.parse(out);
    } catch (error) {
      throw failure('DOCKER_OUTPUT', 'could not read the output of docker inspect', { cause: error });
    }
    return parsed.map((c) => ({
      id: c.Id,
      service: c.Config.Labels?.['com.docker.compose.service'] ?? '',
      imageRef: c.Config.Image,
      imageId: c.Image,
      running: c.State.Running,
      exitCode: c.State.ExitCode,
      status: c.State.Status,
      health: c.State.Health?.Status,
      startedAtMs: startedAtMs(c.State.StartedAt),
      restartCount: c.RestartCount ?? 0,
      pid: c.State.Pid ?? 0,
      addresses: Object.values(c.NetworkSettings?.Networks ?? {})
        .flatMap((n) => [n?.IPAddress, n?.GlobalIPv6Address])
        .filter((a): a is string => Boolean(a)),
    }));
  }

  /**
   * Follows the engine's container events for the project (health changes, starts, deaths) and
   * calls `onEvent` for each, so a health wait can look again at once instead of at its next poll.
   * Best effort: if `docker events` cannot run, nothing is called and polling alone decides. The
   * stream ends by itself after `untilSeconds`, so even a killed Lifeline leaves no follower behind.
   */
  watchEvents(onEvent: () => void, untilSeconds: number): { stop(): void } {
    const filters = ['--filter', 'type=container', ...['health_status', 'start', 'die', 'destroy'].flatMap((e) => ['--filter', `event=${e}`])];
    if (this.project.projectName) filters.push(...labelFilters([projectLabel(this.project.projectName)]));
    // Unix times: events from now on only, and a stream that ends by itself.
    const now = Math.floor(Date.now() / 1000);
    let running: ReturnType<Runner['start']> | undefined;
    try {
      running = this.runner.start({ tool: 'docker', args: ['events', ...filters, '--since', String(now), '--until', String(now + Math.ceil(untilSeconds) + 5), '--format', '{{.ID}}'] });
    } catch {
      return { stop() {} };
    }
    running.stdout.on('data', () => onEvent());
    running.stdout.on('error', () => {});
    running.done.catch(() => {});
    return { stop: () => running?.kill('SIGTERM') };
  }

  /** The last lines a service logged, for the failure message; never throws. */
  async logsTail(service: string, lines: number, overrideFile?: string): Promise<string> {
    const result = await runText(this.runner, composeInvocation(this.project, ['logs', '--no-color', '--tail', String(lines), service], overrideFile)).catch((error: Error) => ({
      exitCode: 1,
      stdout: '',
      stderr: error.message,
    }));
    if (result.exitCode !== 0) return `(could not read its logs: ${lastLines(result.stderr, 2)})`;
    return result.stdout.trim() || '(it logged nothing)';
  }
}

/** Docker writes `0001-01-01T00:00:00Z` for a container never started. */
function startedAtMs(value: string | undefined): number {
  const ms = value ? Date.parse(value) : NaN;
  return Number.isFinite(ms) && ms > 0 ? ms : 0;
}

/**
 * `compose config` on the given files (what `config -q` runs, keeping the merged model on stdout),
 * for preflight's validation; the tool's result is returned as is.
 */
export async function composeConfig(runner: Runner, command: readonly string[], files: string[], cwd?: string): Promise<Awaited<ReturnType<typeof runText>>> {
  return runText(runner, { ...composeInvocation({ command, files }, ['config']), cwd });
}

/** The one running container of a Compose service; a missing or scaled service is a failure with the fix. */
export async function serviceContainerId(compose: ComposeSettings, service: string): Promise<string> {
  if (compose.projectName) {
    // With a known project name the engine is asked directly by Compose's labels (running
    // containers only): Compose v1 takes 2-5 s to start, paid by every command in this layout.
    // Anything but exactly one container goes on to Compose itself, for its diagnostics.
    const labels = [projectLabel(compose.projectName), `com.docker.compose.service=${service}`, 'com.docker.compose.oneoff=False'];
    const byLabel = await runText(new LocalRunner(), { tool: 'docker', args: ['ps', '-q', '--no-trunc', ...labelFilters(labels)] }).catch(() => undefined);
    const found = byLabel?.exitCode === 0 ? idLines(byLabel.stdout) : [];
    if (found.length === 1) return found[0]!;
  }
  const project: ComposeProject = { command: await composeCommand(compose.command), files: compose.files, projectName: compose.projectName };
  const hint = (args: string) => composeHint(project, args);
  const ps = await runText(new LocalRunner(), composeInvocation(project, ['ps', '-q', service]));
  if (ps.exitCode !== 0) {
    throw failure('COMPOSE_PS_FAILED', `cannot find the container of Compose service ${service} (${hint(`ps -q ${service}`)} ${describeExit(ps)}): ${lastLines(ps.stderr, 3)}`, {
      fix: 'check compose.files and compose.projectName in lifeline.yml (they must name the running stack), and that Docker is reachable (DOCKER_HOST)',
    });
  }
  const ids = idLines(ps.stdout);
  if (ids.length === 0) {
    throw failure('SERVICE_NOT_RUNNING', `Compose service ${service} has no container in ${compose.projectName ? `project ${compose.projectName}` : 'the stack'}`, {
      fix: `start it (${hint(`up -d ${service}`)}), or check the service name (postgres.service / redis.service) and compose.projectName in lifeline.yml`,
    });
  }
  if (ids.length > 1) {
    throw failure('SERVICE_SCALED', `Compose service ${service} has ${ids.length} containers; Lifeline runs its tools in exactly one`, { fix: `scale ${service} to one container` });
  }
  return ids[0]!;
}

export interface ComposeRunnerOptions {
  /** `['docker', 'compose']` (v2) or `['docker-compose']` (v1). */
  composeCommand: string[];
  files: string[];
  projectName?: string;
  service: string;
  masker?: SecretMasker;
  baseEnv?: NodeJS.ProcessEnv;
}

/**
 * Runs tools inside a running Compose service with `exec -T`, so `DOCKER_HOST=ssh://...` works too.
 * Lifeline itself runs tools by `docker exec` on the service's container id (runner/factory.ts);
 * this stays for callers that must go through Compose.
 */
export class ComposeRunner implements Runner {
  readonly where: string;
  private readonly masker: SecretMasker;

  constructor(private readonly options: ComposeRunnerOptions) {
    this.where = `compose service ${options.service}`;
    this.masker = options.masker ?? new SecretMasker();
  }

  start(invocation: ToolInvocation): RunningTool {
    const env = definedOnly(invocation.env);
    // `-e NAME` without a value copies it from the compose CLI's own environment: secrets stay off argv.
    const envArgs = Object.keys(env).flatMap((key) => ['-e', key]);
    const { tool, args } = composeInvocation({ command: this.options.composeCommand, files: this.options.files, projectName: this.options.projectName }, [
      'exec',
      '-T',
      ...envArgs,
      this.options.service,
      invocation.tool,
      ...invocation.args,
    ]);
    return spawnStreaming(tool, args, invocation, this.masker, childEnvironment(this.options.baseEnv ?? process.env, env));
  }
}
