import { runObserved } from '../commands/observe';
import { parseArgs } from 'node:util';
import { ExitCode, toLifelineError, usageError } from '../errors';
import { createStderrLogger, SecretMasker } from '../logger';
import { allInputs, Inputs, type CommandSpec, type RawValue } from '../commands/spec';
import { nearest } from '../settings/load';
import { setCatalogWarningSink } from '../catalog/confine';
import { describeFilesystemError } from '../catalog/fs-errors';
import { urlSecrets } from '../settings/secrets';
import { progressIntervalFrom, TerminalLine, type ProgressOutput } from '../report/progress';

export interface CliIO {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  env: Record<string, string | undefined>;
  cwd: string;
  interactive: boolean;
}

const defaultIO = (): CliIO => ({
  stdout: (t) => process.stdout.write(t),
  stderr: (t) => process.stderr.write(t),
  env: process.env,
  cwd: process.cwd(),
  interactive: Boolean(process.stderr.isTTY),
});

/** Finds the longest command path that the arguments start with (`manifest create` before `manifest`). */
function matchCommand(commands: readonly CommandSpec[], argv: readonly string[]): { command?: CommandSpec; rest: string[] } {
  let best: CommandSpec | undefined;
  let bestWords = 0;
  for (const command of commands) {
    const words = command.name.split(' ');
    if (words.length <= argv.length && words.every((w, i) => argv[i] === w) && words.length > bestWords) {
      best = command;
      bestWords = words.length;
    }
  }
  return { command: best, rest: argv.slice(bestWords) };
}

export function usage(commands: readonly CommandSpec[]): string {
  const width = Math.max(...commands.map((c) => c.name.length));
  const lines = commands.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}${c.implemented ? '' : ' (not implemented yet)'}`);
  return [
    'Usage: lifeline <command> [flags]',
    '',
    'Backup, restore and rollback release gates for a Docker Compose platform.',
    '',
    'Commands:',
    ...lines,
    '',
    'Global flags: --config PATH  --env NAME  --store DIR  --database-url URL  --redis-url URL  --json  --quiet',
    'Exit codes: 0 done, 1 the operation failed, 2 bad usage or configuration, 3 refused by a safety check (nothing changed).',
    "Run 'lifeline <command> --help' for a command's flags.",
    '',
  ].join('\n');
}

export function commandHelp(command: CommandSpec): string {
  const inputs = allInputs(command).filter((i) => !i.actionOnly);
  const flag = (i: (typeof inputs)[number]) => `--${i.name}${i.type === 'boolean' ? '' : i.type === 'list' ? ' VALUE ...' : ' VALUE'}`;
  const width = Math.max(...inputs.map((i) => flag(i).length));
  return [
    `Usage: lifeline ${command.name}${command.positional ? ` [${command.positional.toUpperCase()}]` : ''} [flags]`,
    '',
    command.summary + (command.implemented ? '' : ' (not implemented yet)'),
    '',
    'Flags:',
    ...inputs.map(
      (i) =>
        `  ${flag(i).padEnd(width)}  ${i.description}${i.required ? ' (required)' : ''}${i.choices ? ` [${i.choices.join('|')}]` : ''}${i.default !== undefined && i.type !== 'boolean' ? ` (default ${i.default})` : ''}`,
    ),
    '',
  ].join('\n');
}

/** Parses flags named exactly like the action inputs into the same raw input record. */
export function parseFlags(command: CommandSpec, args: string[]): Record<string, RawValue> {
  const inputs = allInputs(command).filter((i) => !i.actionOnly);
  const options: Record<string, { type: 'string' | 'boolean'; multiple?: boolean }> = { help: { type: 'boolean' } };
  for (const input of inputs) options[input.name] = { type: input.type === 'boolean' ? 'boolean' : 'string', multiple: input.type === 'list' };
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({ args, options, strict: true, allowPositionals: true, allowNegative: true, tokens: true });
  } catch (error) {
    const message = (error as Error).message;
    const unknown = /Unknown option '--?([^']+)'/.exec(message)?.[1];
    if (unknown) {
      const suggestion = nearest(
        unknown,
        inputs.map((i) => i.name),
      );
      throw usageError(
        'UNKNOWN_FLAG',
        `lifeline ${command.name}: unknown flag --${unknown}`,
        suggestion ? `did you mean --${suggestion}? See lifeline ${command.name} --help` : `see lifeline ${command.name} --help`,
      );
    }
    throw usageError('BAD_FLAGS', `lifeline ${command.name}: ${message}`, `see lifeline ${command.name} --help`);
  }
  // A flag given twice (`--env staging ... --env production`, `--verify --no-verify`) would silently
  // keep the last one: an operator in a hurry gets a refusal instead (the values are not repeated:
  // they may be URLs with passwords).
  const seen = new Map<string, number>();
  for (const token of parsed.tokens ?? []) {
    if (token.kind !== 'option' || options[token.name]?.multiple) continue;
    const name = token.name.startsWith('no-') && !(token.name in options) ? token.name.slice(3) : token.name;
    seen.set(name, (seen.get(name) ?? 0) + 1);
  }
  const repeated = [...seen].filter(([, n]) => n > 1).map(([name]) => `--${name}`);
  if (repeated.length) {
    throw usageError(
      'BAD_FLAGS',
      `lifeline ${command.name}: ${repeated.join(', ')} ${repeated.length === 1 ? 'is' : 'are'} given more than once`,
      `give each flag once; see lifeline ${command.name} --help`,
    );
  }
  const values: Record<string, RawValue> = {};
  for (const [key, value] of Object.entries(parsed.values)) {
    // A flag whose own name starts with no- (--no-owner): allowNegative reads it as owner=false.
    if (value === false && !(key in options) && options[`no-${key}`]?.type === 'boolean') {
      values[`no-${key}`] = true;
      continue;
    }
    values[key] = value as RawValue;
  }
  if (parsed.positionals.length > 0) {
    if (!command.positional || parsed.positionals.length > 1) {
      throw usageError('BAD_ARGUMENT', `lifeline ${command.name}: unexpected argument "${parsed.positionals[0]}"`, `see lifeline ${command.name} --help`);
    }
    if (values[command.positional] !== undefined) {
      throw usageError('BAD_ARGUMENT', `lifeline ${command.name}: give ${command.positional} either as an argument or as --${command.positional}, not both`);
    }
    values[command.positional] = parsed.positionals[0];
  }
  for (const input of inputs) {
    if (input.required && (values[input.name] === undefined || values[input.name] === '')) {
      throw usageError('MISSING_INPUT', `lifeline ${command.name}: missing --${input.name}`, `${input.description} See lifeline ${command.name} --help`);
    }
  }
  return values;
}

/**
 * A password on Lifeline's own command line is readable by every local user (ps, /proc/<pid>/cmdline)
 * for as long as the command runs: say so once, and overwrite the process title, which on Linux
 * rewrites what /proc/<pid>/cmdline shows (it cannot undo what was already read).
 */
function warnPasswordInArgv(command: CommandSpec, logger: { warn(message: string): void }): void {
  const envForms = allInputs(command)
    .filter((i) => allInputs(command).some((j) => j.name === `${i.name}-env`))
    .map((i) => `--${i.name}-env NAME`);
  const hint = [...envForms, 'DATABASE_URL / REDIS_URL instead of --database-url / --redis-url'].join(', ');
  logger.warn(`a password was given on the command line, where other local users can read it (ps); use ${hint}`);
  try {
    process.title = `lifeline ${command.name}`;
  } catch {
    // Some platforms refuse; the warning stands.
  }
}

/** Runs the CLI; returns the exit code (never calls process.exit, so tests can call it). */
export async function runCli(commands: readonly CommandSpec[], argv: string[], io: CliIO = defaultIO()): Promise<number> {
  const json = argv.includes('--json');
  const masker = new SecretMasker();
  const writeError = (code: string, message: string, fix?: string, exit: number = ExitCode.usage) => {
    if (json) io.stdout(`${JSON.stringify({ error: { code, message: masker.mask(message), fix: fix && masker.mask(fix), exitCode: exit } })}\n`);
    else io.stderr(`error: ${masker.mask(message)}${fix ? `\n  fix: ${masker.mask(fix)}` : ''}\n`);
    return exit;
  };
  // `lifeline help restore` is `lifeline restore --help`.
  if (argv[0] === 'help' && argv.length > 1) return runCli(commands, [...argv.slice(1), '--help'], io);
  if (argv.length === 0 || argv[0] === '--help' || argv[0] === '-h' || argv[0] === 'help') {
    io.stdout(usage(commands));
    return argv.length === 0 ? ExitCode.usage : ExitCode.ok;
  }
  if (argv[0] === '--version') {
    io.stdout(`${process.env.LIFELINE_VERSION ?? '0.1.0'}\n`);
    return ExitCode.ok;
  }
  const { command, rest } = matchCommand(commands, argv);
  if (!command) {
    const groups = commands.filter((c) => c.name.startsWith(`${argv[0]} `));
    if (groups.length > 0) {
      return writeError(
        'UNKNOWN_COMMAND',
        `lifeline ${argv[0]} needs a subcommand${argv[1] && !argv[1].startsWith('-') ? `; "${argv[1]}" is not one` : ''}`,
        `use one of: ${groups.map((c) => c.name).join(', ')}`,
      );
    }
    const suggestion = nearest(
      argv[0]!,
      commands.map((c) => c.name.split(' ')[0]!),
    );
    return writeError(
      'UNKNOWN_COMMAND',
      `unknown command "${argv[0]}"`,
      suggestion ? `did you mean "lifeline ${suggestion}"? Run lifeline --help for the list` : 'run lifeline --help for the list of commands',
    );
  }
  if (rest.includes('--help') || rest.includes('-h')) {
    io.stdout(commandHelp(command));
    return ExitCode.ok;
  }
  // Progress: one live line on a terminal (the logger clears and redraws it around each line), plain lines otherwise.
  const statusLine = io.interactive
    ? new TerminalLine(
        (t) => io.stderr(t),
        () => process.stderr.columns,
        (t) => masker.mask(t),
      )
    : undefined;
  const logger = createStderrLogger({ verbose: Boolean(io.env.LIFELINE_DEBUG), masker, write: (t) => io.stderr(t), statusLine });
  setCatalogWarningSink((message) => logger.warn(message));
  try {
    // Before anything can print: every secret a URL anywhere on the command line carries.
    const argvSecrets = rest.flatMap((arg) => urlSecrets(arg.replace(/^--[a-z-]+=/, '')));
    for (const secret of argvSecrets) masker.add(secret);
    for (const name of ['DATABASE_URL', 'REDIS_URL']) for (const secret of urlSecrets(io.env[name])) masker.add(secret);
    const values = parseFlags(command, rest);
    if (argvSecrets.length > 0) warnPasswordInArgv(command, logger);
    const progress: ProgressOutput = { quiet: values.quiet === true, terminal: statusLine, intervalMs: progressIntervalFrom(io.env) };
    const result = await runObserved(command, {
      inputs: new Inputs(command, values),
      env: io.env,
      cwd: io.cwd,
      logger,
      interactive: io.interactive && !json,
      progress,
      // The artifact client exists only inside a GitHub Actions job; loaded lazily so the CLI bundle stays small.
      artifactStore: async (token) => (await import('../actions/artifact-store')).githubArtifactStore(io.env, token),
    }).finally(() => statusLine?.clear());
    if (json) io.stdout(`${masker.mask(JSON.stringify(result.json))}\n`);
    else if (result.text) io.stdout(`${masker.mask(result.text)}${result.text.endsWith('\n') ? '' : '\n'}`);
    if (result.exitCode) {
      if (result.failureMessage) io.stderr(`error: ${masker.mask(result.failureMessage)}\n`);
      return result.exitCode;
    }
    return ExitCode.ok;
  } catch (thrown) {
    const error = toLifelineError(describeFilesystemError(thrown) ?? thrown);
    if (io.env.LIFELINE_DEBUG && error.cause) io.stderr(`${masker.mask(String((error.cause as Error).stack ?? error.cause))}\n`);
    return writeError(error.code, error.message, error.fix, error.exitCode);
  }
}
