import { spawn } from 'node:child_process';
import { join } from 'node:path';

export const REPO = join(import.meta.dirname, '..', '..');

export interface CliRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * How `lifeline(...)` runs the CLI: from source through tsx (the default, so a change in src/ is
 * tested at once), or with LIFELINE_TEST_CLI=bundle the shipped `bin/lifeline.js` over dist/cli,
 * exactly what an installed package runs. `.ci/run` rebuilds dist/, requires it identical to the
 * commit, and then tests the bundle: what ships is what is tested, and each call starts in a
 * fraction of tsx's time.
 */
export const CLI_MODE: 'source' | 'bundle' = process.env.LIFELINE_TEST_CLI === 'bundle' ? 'bundle' : 'source';

export function cliArgv(): string[] {
  return CLI_MODE === 'bundle' ? [join(REPO, 'bin', 'lifeline.js')] : ['--import', 'tsx', join(REPO, 'src/cli/index.ts')];
}

/** Runs the CLI (see CLI_MODE), exactly as an operator would call `lifeline`. */
export function lifeline(args: string[], options: { env?: Record<string, string | undefined>; cwd?: string; input?: string } = {}): Promise<CliRun> {
  return runProcess(process.execPath, [...cliArgv(), ...args], options);
}

/** Runs a built action bundle the way GitHub's runner does: INPUT_* variables and a GITHUB_OUTPUT file. */
export function runBundle(bundle: string, inputs: Record<string, string>, options: { env?: Record<string, string | undefined>; cwd?: string } = {}): Promise<CliRun> {
  const env: Record<string, string | undefined> = { ...options.env };
  for (const [name, value] of Object.entries(inputs)) env[`INPUT_${name.replace(/ /g, '_').toUpperCase()}`] = value;
  return runProcess(process.execPath, [join(REPO, 'dist', bundle, 'index.js')], { ...options, env });
}

export function runProcess(command: string, args: string[], options: { env?: Record<string, string | undefined>; cwd?: string; input?: string } = {}): Promise<CliRun> {
  return new Promise((resolve, reject) => {
    const env: NodeJS.ProcessEnv = { ...process.env, ...options.env };
    for (const [k, v] of Object.entries(options.env ?? {})) if (v === undefined) delete env[k];
    const child = spawn(command, args, { cwd: options.cwd ?? REPO, env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
    child.stdin.end(options.input ?? '');
  });
}

/** Parses a GITHUB_OUTPUT file written by @actions/core (name<<delimiter blocks). */
export function parseGithubOutput(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const m = /^([^<=]+)<<(.+)$/.exec(lines[i]!);
    if (m) {
      const [, name, delim] = m;
      const value: string[] = [];
      while (++i < lines.length && lines[i] !== delim) value.push(lines[i]!);
      out[name!] = value.join('\n');
    } else if (lines[i]!.includes('=')) {
      const idx = lines[i]!.indexOf('=');
      out[lines[i]!.slice(0, idx)] = lines[i]!.slice(idx + 1);
    }
  }
  return out;
}
