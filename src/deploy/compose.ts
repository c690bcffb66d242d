import { failure } from '../errors';
import { runChecked, runText, lastLines, type Runner } from '../runner/runner';

export { COMPOSE_V1, COMPOSE_V2, detectComposeCommand, normalizeProjectName, type ComposeCommand, type ComposeCommandSetting } from '../runner/compose';
import { normalizeProjectName, type ComposeCommand } from '../runner/compose';

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

/** The Compose and Docker calls a deploy needs, through the runner (the only place that spawns). */
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
          {
            tool: 'docker',
            args: ['ps', '-aq', '--no-trunc', '--filter', `label=com.docker.compose.project=${normalizeProjectName(this.project.projectName)}`, '--filter', 'label=com.docker.compose.oneoff=False'],
          },
          'listing the containers of the project',
        )
      : await runChecked(this.runner, composeInvocation(this.project, ['ps', '-q'], overrideFile), 'listing the containers of the project');
    const ids = out
      .split('\n')
      .map((line) => line.trim())
      .filter(Boolean);
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
    if (this.project.projectName) filters.push('--filter', `label=com.docker.compose.project=${normalizeProjectName(this.project.projectName)}`);
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
