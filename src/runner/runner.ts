import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { refuseIfInterrupted, trackChild } from './interrupt';
import { failure } from '../errors';
import { SecretMasker } from '../logger';

export interface ToolInvocation {
  tool: string;
  args: string[];
  /** Extra environment for the tool (e.g. PGPASSWORD): passed by environment, never on the command line. */
  env?: Record<string, string | undefined>;
  /** Where the tool's stdin comes from; default: nothing. */
  stdin?: Readable;
  cwd?: string;
  /** Called with each complete line the tool writes to stderr (progress output), unmasked: do not log it as is. */
  onStderrLine?: (line: string) => void;
  /**
   * Local tools: run the tool under coreutils' `stdbuf -o<bytes>`, so that its C stdio writes
   * stdout to the pipe in blocks of this size rather than 4 KB (pg_dump: 24 writes for a table
   * where it made 6,094). Each write wakes this process, which on a 2-core host preempts the tool.
   * Without stdbuf on PATH the tool runs as it is; other runners ignore it.
   */
  stdoutBlockBytes?: number;
}

export interface ToolResult {
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  /** The tail of stderr, secrets masked. */
  stderr: string;
}

export interface RunningTool {
  /** The tool's stdout, to be consumed by the caller (it is never buffered here). */
  stdout: Readable;
  done: Promise<ToolResult>;
  kill(signal?: NodeJS.Signals): void;
  pid?: number;
}

/** Runs database and container tools, locally or inside a Compose service, streaming their data. */
export interface Runner {
  /** For messages: where tools run ("local binaries", "compose service db"). */
  readonly where: string;
  start(invocation: ToolInvocation): RunningTool;
}

const STDERR_LIMIT = 64 * 1024;

/** Spawns one tool with its stdout streaming to the caller (never buffered) and its stderr tail masked. For the runners here and in compose.ts. */
export function spawnStreaming(command: string, args: string[], invocation: ToolInvocation, masker: SecretMasker, childEnv: NodeJS.ProcessEnv): RunningTool {
  refuseIfInterrupted(invocation.tool);
  let child: ChildProcess;
  try {
    child = spawn(command, args, {
      cwd: invocation.cwd,
      env: childEnv,
      stdio: [invocation.stdin ? 'pipe' : 'ignore', 'pipe', 'pipe'],
    });
  } catch (error) {
    throw failure('TOOL_SPAWN', `could not start ${invocation.tool}: ${(error as Error).message}`, { cause: error });
  }
  trackChild(child);
  let stderr = '';
  child.stderr!.setEncoding('utf8');
  let partialLine = '';
  child.stderr!.on('data', (chunk: string) => {
    stderr += chunk;
    if (stderr.length > STDERR_LIMIT) stderr = stderr.slice(-STDERR_LIMIT);
    if (invocation.onStderrLine) {
      const lines = (partialLine + chunk).split('\n');
      partialLine = lines.pop()!;
      // A runaway line without a newline is not kept whole.
      if (partialLine.length > STDERR_LIMIT) partialLine = partialLine.slice(-STDERR_LIMIT);
      for (const line of lines) invocation.onStderrLine(line);
    }
  });
  if (invocation.onStderrLine) child.stderr!.on('end', () => partialLine && invocation.onStderrLine!(partialLine));
  let inputFailed: Error | undefined;
  if (invocation.stdin) {
    const source = invocation.stdin;
    source.pipe(child.stdin!);
    // The tool may exit before reading all of stdin; that is reported through its exit code.
    child.stdin!.on('error', () => {});
    // pipe() neither ends nor fails the tool's stdin when the source fails (a decryption that fails
    // authentication, a file that changed): the tool would wait for the rest forever, or, if its
    // stdin were just closed, take what it got for the whole input (psql would run half a script).
    // It is stopped instead, and its result says why.
    source.on('error', (error: Error) => {
      inputFailed = error;
      source.unpipe(child.stdin!);
      child.kill('SIGTERM');
      child.stdin!.destroy();
    });
  }
  const done = new Promise<ToolResult>((resolve, reject) => {
    child.on('error', (error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOENT') {
        reject(
          failure('TOOL_MISSING', `${invocation.tool} was not found (${command})`, {
            fix: `install it (Debian: the package that provides ${invocation.tool}) or set its directory in the config (postgres.binDir / redis.binDir)`,
            cause: error,
          }),
        );
      } else {
        reject(failure('TOOL_SPAWN', `could not run ${invocation.tool}: ${error.message}`, { cause: error }));
      }
    });
    child.on('close', (exitCode, signal) => {
      const why = inputFailed ? `${stderr.trim() ? '\n' : ''}(stopped: its input failed: ${inputFailed.message})` : '';
      // A tool stopped because its input failed never reports success, whatever it exited with.
      resolve({ exitCode: inputFailed && exitCode === 0 ? 1 : exitCode, signal, stderr: masker.mask(stderr.trim() + why) });
    });
  });
  // Keep unhandled rejections off: callers await `done`.
  done.catch(() => {});
  return {
    stdout: child.stdout!,
    done,
    pid: child.pid,
    kill: (signal = 'SIGTERM') => {
      child.kill(signal);
    },
  };
}

export interface LocalRunnerOptions {
  /** Directories searched before PATH, in order (e.g. /usr/lib/postgresql/15/bin). */
  binDirs?: string[];
  /** Run the tool as this OS user (through runuser) when we are root: initdb refuses to run as root. */
  asUser?: string;
  masker?: SecretMasker;
  baseEnv?: NodeJS.ProcessEnv;
}

export class LocalRunner implements Runner {
  readonly where = 'local binaries';
  private readonly masker: SecretMasker;

  constructor(private readonly options: LocalRunnerOptions = {}) {
    this.masker = options.masker ?? new SecretMasker();
  }

  resolveTool(tool: string): string {
    for (const dir of this.options.binDirs ?? []) {
      const candidate = join(dir, tool);
      if (isExecutable(candidate)) return candidate;
    }
    return tool;
  }

  start(invocation: ToolInvocation): RunningTool {
    const env = childEnvironment(this.options.baseEnv ?? process.env, invocation.env);
    const { command, args } = this.withStdoutBlocks(this.resolveTool(invocation.tool), invocation);
    if (this.options.asUser && process.getuid?.() === 0) {
      // Without --login, runuser keeps the environment, so PGPASSWORD and friends reach the tool.
      return spawnStreaming('runuser', ['-u', this.options.asUser, '--', command, ...args], invocation, this.masker, env);
    }
    return spawnStreaming(command, args, invocation, this.masker, env);
  }

  /**
   * `stdbuf -o<N> <tool> ...` when asked and both are found; the tool itself otherwise. stdbuf
   * execs the tool in the same process: exit status and signals are the tool's own. A tool that
   * is not found runs as it is, so its absence is still reported as TOOL_MISSING.
   */
  private withStdoutBlocks(command: string, invocation: ToolInvocation): { command: string; args: string[] } {
    const bytes = invocation.stdoutBlockBytes;
    if (!bytes) return { command, args: invocation.args };
    const pathEnv = this.options.baseEnv?.PATH ?? process.env.PATH ?? '';
    const stdbuf = findExecutable('stdbuf', [], pathEnv);
    const tool = command.includes('/') ? command : findExecutable(command, [], pathEnv);
    if (!stdbuf || !tool) return { command, args: invocation.args };
    return { command: stdbuf, args: [`-o${Math.floor(bytes)}`, tool, ...invocation.args] };
  }
}

export interface ContainerRunnerOptions {
  /** The container's id (resolved once per command, e.g. from `docker compose ps -q SERVICE`). */
  container: string;
  /** For messages, e.g. "compose service db". */
  where: string;
  /** Extra `docker exec` options, e.g. ['--user', 'postgres']. */
  execOptions?: string[];
  masker?: SecretMasker;
  baseEnv?: NodeJS.ProcessEnv;
}

/**
 * Runs tools inside one container with `docker exec` on its id: about a tenth of a second per call
 * where a Compose v1 `exec` costs 2-10 s. The docker CLI talks to the engine DOCKER_HOST names,
 * as Compose does.
 */
export class ContainerRunner implements Runner {
  readonly where: string;
  private readonly masker: SecretMasker;

  constructor(private readonly options: ContainerRunnerOptions) {
    this.where = options.where;
    this.masker = options.masker ?? new SecretMasker();
  }

  get container(): string {
    return this.options.container;
  }

  start(invocation: ToolInvocation): RunningTool {
    const env = definedOnly(invocation.env);
    // `-e NAME` without a value copies it from the docker CLI's own environment: secrets stay off argv.
    const envArgs = Object.keys(env).flatMap((key) => ['-e', key]);
    const args = ['exec', ...(invocation.stdin ? ['-i'] : []), ...envArgs, ...(this.options.execOptions ?? []), this.options.container, invocation.tool, ...invocation.args];
    return withMissingToolDetection(
      spawnStreaming('docker', args, invocation, this.masker, childEnvironment(this.options.baseEnv ?? process.env, env)),
      invocation.tool,
      `${this.where} (container ${this.options.container.slice(0, 12)})`,
    );
  }
}

export interface ImageRunnerOptions {
  image: string;
  /** For messages, e.g. "a throwaway container of service redis's image". */
  where: string;
  /** `none` (the default: a check needs no network) or `host`. */
  network?: 'none' | 'host';
  masker?: SecretMasker;
  baseEnv?: NodeJS.ProcessEnv;
}

/** Runs each tool in a fresh container of an image (`docker run --rm`), for tools a stopped service's image holds. */
export class ImageRunner implements Runner {
  readonly where: string;
  private readonly masker: SecretMasker;

  constructor(private readonly options: ImageRunnerOptions) {
    this.where = options.where;
    this.masker = options.masker ?? new SecretMasker();
  }

  start(invocation: ToolInvocation): RunningTool {
    const env = definedOnly(invocation.env);
    const envArgs = Object.keys(env).flatMap((key) => ['-e', key]);
    const args = [
      'run',
      '--rm',
      ...(invocation.stdin ? ['-i'] : []),
      '--network',
      this.options.network ?? 'none',
      '--label',
      'lifeline.check=1',
      ...envArgs,
      '--entrypoint',
      invocation.tool,
      this.options.image,
      ...invocation.args,
    ];
    return withMissingToolDetection(spawnStreaming('docker', args, invocation, this.masker, childEnvironment(this.options.baseEnv ?? process.env, env)), invocation.tool, this.where);
  }
}

/** docker exec / run answer 126 or 127 with the runtime's "executable file not found" for a tool the image lacks: a TOOL_MISSING failure that names it. */
function withMissingToolDetection(running: RunningTool, tool: string, where: string): RunningTool {
  const done = running.done.then((result) => {
    if ((result.exitCode === 127 || result.exitCode === 126) && /executable file not found|no such file or directory|not found in \$PATH/i.test(result.stderr)) {
      throw failure('TOOL_MISSING', `${tool} was not found in ${where}`, {
        fix: `use an image for that service that has ${tool}, or remove the service setting (postgres.service / redis.service) to run it on this host`,
      });
    }
    return result;
  });
  done.catch(() => {});
  return { ...running, done };
}

/** Runs a tool to completion, collecting its (small) stdout as text. Not for payloads. */
export async function runText(runner: Runner, invocation: ToolInvocation, limitBytes = 16 * 1024 * 1024): Promise<ToolResult & { stdout: string }> {
  const running = runner.start(invocation);
  let stdout = '';
  running.stdout.setEncoding('utf8');
  running.stdout.on('data', (chunk: string) => {
    if (stdout.length < limitBytes) stdout += chunk;
  });
  const result = await running.done;
  return { ...result, stdout };
}

/** Like runText, but a non-zero exit becomes a failure carrying the tool's stderr. */
export async function runChecked(runner: Runner, invocation: ToolInvocation, what: string): Promise<string> {
  const result = await runText(runner, invocation);
  if (result.exitCode !== 0) {
    throw failure('TOOL_FAILED', `${what} failed (${invocation.tool} ${describeExit(result)}): ${lastLines(result.stderr)}`, { details: { tool: invocation.tool, exitCode: result.exitCode } });
  }
  return result.stdout;
}

export function describeExit(result: Pick<ToolResult, 'exitCode' | 'signal'>): string {
  return result.signal ? `killed by ${result.signal}` : `exit ${result.exitCode}`;
}

export function lastLines(text: string, count = 5): string {
  const lines = text.trim().split('\n').filter(Boolean);
  return lines.length ? lines.slice(-count).join('\n') : '(no output on stderr)';
}

/**
 * The environment a child process gets: the inherited one without any libpq variable (PGHOST,
 * PGHOSTADDR, PGSERVICE, PGOPTIONS, PGTARGETSESSIONATTRS, PGPASSWORD, ...: every `PG*` name
 * except pgBackRest's own `PGBACKREST_*` options and PGPASSFILE), plus exactly what the invocation sets. An operator's
 * shell or a CI runner can then never redirect pg_dump, pg_restore or psql to another server or
 * database than the connection Lifeline was given.
 */
export function childEnvironment(base: NodeJS.ProcessEnv, extra: Record<string, string | undefined> | undefined): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(base)) if (!isLibpqVariable(key)) env[key] = value;
  return { ...env, ...definedOnly(extra) };
}

function isLibpqVariable(name: string): boolean {
  // PGPASSFILE stays: it only answers for the host, port, database and user already named.
  return /^PG/i.test(name) && !/^PGBACKREST_/i.test(name) && name !== 'PGPASSFILE';
}

export function definedOnly(env: Record<string, string | undefined> | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [key, value] of Object.entries(env ?? {})) if (value !== undefined) out[key] = value;
  return out;
}

function isExecutable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** Finds a program on PATH (or the given dirs); undefined when absent. */
export function findExecutable(tool: string, dirs: string[] = [], pathEnv = process.env.PATH ?? ''): string | undefined {
  for (const dir of [...dirs, ...pathEnv.split(delimiter)]) {
    if (!dir) continue;
    const candidate = join(dir, tool);
    if (isExecutable(candidate)) return candidate;
  }
  return undefined;
}
