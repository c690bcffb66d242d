import type { Runner } from '../runner/runner';
import { lastLines, runText } from '../runner/runner';
import { composeConfig, probeComposeCli, type ComposeCli, type ComposeCommandSetting } from '../runner/compose';
import { displayPath, fail, notChecked, pass, warn, type CheckContext, type Finding } from './findings';

export const DEFAULT_MIN_DOCKER_VERSION = '20.10.0';

export interface DockerCheckOptions {
  /** True when Compose files are configured: a missing engine or Compose then fails instead of warning. */
  needed: boolean;
  minVersion: string;
}

/** The engine answers and is recent enough (`docker version` asks the server, not only the CLI). */
export async function checkDockerEngine(runner: Runner, ctx: CheckContext, options: DockerCheckOptions): Promise<Finding[]> {
  const missing = options.needed ? fail : warn;
  let result;
  try {
    result = await runText(runner, { tool: 'docker', args: ['version', '--format', '{{.Server.Version}}'], cwd: ctx.cwd });
  } catch {
    return [missing({ check: 'docker.engine', message: 'the docker CLI is not installed', fix: 'install Docker Engine (https://docs.docker.com/engine/install/)' })];
  }
  const version = result.stdout.trim();
  if (result.exitCode !== 0 || !version) {
    return [
      missing({
        check: 'docker.engine',
        message: `the Docker engine does not answer: ${firstLine(result.stderr)}`,
        fix: 'start dockerd, or point DOCKER_HOST at the engine you deploy to',
      }),
    ];
  }
  if (compareVersions(version, options.minVersion) < 0) {
    return [
      fail({
        check: 'docker.engine',
        message: `Docker engine ${version} is older than the minimum ${options.minVersion}`,
        fix: `upgrade the engine to ${options.minVersion} or later (or lower preflight.minDockerVersion)`,
      }),
    ];
  }
  return [pass({ check: 'docker.engine', message: `Docker engine ${version} answers (minimum ${options.minVersion})` })];
}

export type { ComposeCli } from '../runner/compose';

/** Picks Compose: v2 (`docker compose`) first, then v1 (`docker-compose`) when it is on PATH, unless the config names one. */
export async function detectCompose(runner: Runner, ctx: CheckContext, configured: ComposeCommandSetting, pathEnv: string | undefined): Promise<ComposeCli | undefined> {
  return probeComposeCli(runner, configured, pathEnv, ctx.cwd);
}

export interface ComposeConfigResult {
  findings: Finding[];
  /** The merged model as `compose config` prints it (interpolated: may hold secrets, never log it). */
  merged?: string;
}

/**
 * Validates the merged Compose files with the real Compose (`config`, which is what `config -q`
 * runs, keeping the output so the gates see the merged model without a second start-up).
 */
export async function checkComposeConfig(runner: Runner, ctx: CheckContext, cli: ComposeCli | undefined, files: string[], configured: string): Promise<ComposeConfigResult> {
  if (files.length === 0) {
    return { findings: [notChecked('compose.config', 'no Compose files configured', 'pass --compose-file FILE or set compose.files in lifeline.yml')] };
  }
  if (!cli) {
    return {
      findings: [
        fail({
          check: 'compose.cli',
          message: configured === 'auto' ? 'neither `docker compose` (v2) nor `docker-compose` (v1) is installed' : `${configured} is not installed`,
          fix: 'install the Docker Compose plugin (docker-compose-plugin) or docker-compose',
        }),
      ],
    };
  }
  let result;
  try {
    result = await composeConfig(runner, cli.command, files, ctx.cwd);
  } catch {
    return { findings: [fail({ check: 'compose.cli', message: `${cli.command.join(' ')} does not run`, fix: 'install the Docker Compose plugin (docker-compose-plugin) or docker-compose' })] };
  }
  const findings: Finding[] = [pass({ check: 'compose.cli', message: cli.version ? `${cli.command.join(' ')} ${cli.version}` : `${cli.command.join(' ')} (Compose v1)` })];
  for (const variable of unsetVariables(result.stderr)) {
    findings.push(
      warn({
        check: 'compose.variables',
        file: displayPath(ctx, files[0]!),
        message: `${variable} is not set: Compose substitutes an empty string`,
        fix: `set ${variable} in the environment or the project's .env file`,
      }),
    );
  }
  if (result.exitCode !== 0) {
    const located = locateComposeError(result.stderr, files);
    findings.push(
      fail({
        check: 'compose.config',
        file: displayPath(ctx, located?.file ?? files[0]!),
        line: located?.line,
        message: `the merged Compose files do not validate: ${shortenPaths(ctx, lastLines(stripWarnings(result.stderr), 3), files)}`,
        fix: 'fix the file at the reported place; `docker compose config -q` shows the same error',
      }),
    );
    return { findings };
  }
  findings.push(pass({ check: 'compose.config', file: displayPath(ctx, files[0]!), message: `${files.length} Compose file${files.length === 1 ? '' : 's'} merge and validate` }));
  return { findings, merged: result.stdout };
}

function unsetVariables(stderr: string): string[] {
  const names = new Set<string>();
  for (const match of stderr.matchAll(/The "?([A-Za-z_][A-Za-z0-9_]*)"? variable is not set/g)) names.add(match[1]!);
  return [...names];
}

function shortenPaths(ctx: CheckContext, text: string, files: string[]): string {
  return files.reduce((out, file) => out.split(file).join(displayPath(ctx, file)), text);
}

function stripWarnings(stderr: string): string {
  return stderr
    .split('\n')
    .filter((line) => !/variable is not set/.test(line))
    .join('\n');
}

/** Compose reports YAML errors as `in "./file.yml", line 5, column 3` (v1) or `file.yml: line 5` (v2). */
function locateComposeError(stderr: string, files: string[]): { file?: string; line?: number } | undefined {
  // PyYAML names the context first and the offending place last.
  const match = [...stderr.matchAll(/"([^"]+)", line (\d+)/g)].pop() ?? /([^\s:]+\.ya?ml)[^\n]*?line (\d+)/.exec(stderr);
  if (match) {
    const named = match[1]!.replace(/^\.\//, '');
    const file = files.find((f) => f.endsWith(named) || named.endsWith(f.split('/').pop()!));
    return { file, line: Number(match[2]) };
  }
  const named = files.find((f) => stderr.includes(f) || stderr.includes(f.split('/').pop()!));
  return named ? { file: named } : undefined;
}

/** Compares dotted versions numerically; suffixes such as `-ce` or `+dfsg` are ignored. */
export function compareVersions(a: string, b: string): number {
  const parts = (v: string) =>
    v
      .split(/[^0-9.]/)[0]!
      .split('.')
      .map((n) => Number(n) || 0);
  const pa = parts(a);
  const pb = parts(b);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

function firstLine(text: string): string {
  return text.trim().split('\n')[0] || '(no output)';
}
