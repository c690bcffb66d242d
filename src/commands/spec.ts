import { failure, usageError } from '../errors';
import type { ArtifactStore } from '../storage/artifacts';
import type { Annotation } from '../report/annotation';
import type { ProgressOutput } from '../report/progress';
import type { Logger } from '../logger';
import { resolveEnvironment, type EnvironmentSettings } from '../settings/resolve';
import { urlSecrets } from '../settings/secrets';

export type InputType = 'string' | 'boolean' | 'list';

/** One input: the same name is the action input and the CLI flag (`--name`). */
export interface InputSpec {
  name: string;
  type: InputType;
  description: string;
  required?: boolean;
  /** Default as written in action.yml. */
  default?: string;
  choices?: readonly string[];
  /** Only a CLI flag (e.g. `--json`), not an action input. */
  cliOnly?: boolean;
  /** Only an action input (e.g. `github-token`), not a CLI flag. */
  actionOnly?: boolean;
}

export interface OutputSpec {
  name: string;
  description: string;
}

export type { Annotation } from '../report/annotation';

export interface CommandResult {
  /** The value `--json` prints. */
  json: unknown;
  /** Readable text for the terminal. */
  text?: string;
  /** Action outputs (names must be declared in the spec). */
  outputs?: Record<string, string>;
  /** Markdown for the job summary. */
  summary?: string;
  annotations?: Annotation[];
  /** Non-zero when the command ran but its verdict is a failure (a failed gate, a failed check). */
  exitCode?: 0 | 1 | 3;
  /** The one-line reason when exitCode is non-zero. */
  failureMessage?: string;
}

export interface CommandContext {
  inputs: Inputs;
  /** The process environment (read only here, at the door). */
  env: Record<string, string | undefined>;
  cwd: string;
  logger: Logger;
  /** stderr is a terminal: progress bars are welcome. */
  interactive: boolean;
  /**
   * Opens GitHub's artifact service with a token (the door supplies it: commands never import
   * the actions glue). Absent where no artifact client can exist.
   */
  artifactStore?: (token: string | undefined) => Promise<ArtifactStore>;
  /** Where progress goes (src/report/progress.ts): the CLI's terminal line, --quiet; absent (actions), plain lines every few seconds. */
  progress?: ProgressOutput;
}

export interface CommandSpec {
  /** The CLI path: `backup`, `manifest create`, `tenant export`. */
  name: string;
  summary: string;
  /** A positional argument that fills this input (e.g. `lifeline verify latest`). */
  positional?: string;
  inputs: InputSpec[];
  outputs: OutputSpec[];
  /** False while the command is not built yet: it then fails, never fakes success. */
  implemented: boolean;
  /** Includes the global inputs (config, env, store, database-url, redis-url). */
  usesGlobals?: boolean;
  run(ctx: CommandContext): Promise<CommandResult>;
}

export const GLOBAL_INPUTS = [
  { name: 'config', type: 'string', description: 'Path of lifeline.yml (default: ./lifeline.yml; optional for one-off use).' },
  { name: 'env', type: 'string', description: 'Environment name from lifeline.yml (default: "default").' },
  { name: 'store', type: 'string', description: "The catalog's root directory (default: the config's store, LIFELINE_STORE, or ./.lifeline)." },
  { name: 'database-url', type: 'string', description: 'PostgreSQL URL (overrides DATABASE_URL and the config). Masked in logs.' },
  { name: 'redis-url', type: 'string', description: 'Redis URL (overrides REDIS_URL and the config). Masked in logs.' },
  { name: 'json', type: 'boolean', description: 'Print exactly one JSON value on stdout.', default: 'false', cliOnly: true },
  { name: 'quiet', type: 'boolean', description: 'No progress lines (warnings and errors still print).', default: 'false', cliOnly: true },
] as const satisfies readonly InputSpec[];

/** The input names a list of specs declares, as literal types (declare the list `as const satisfies readonly InputSpec[]`). */
export type DeclaredName<S extends readonly InputSpec[]> = S[number]['name'];

export type GlobalInputName = DeclaredName<typeof GLOBAL_INPUTS>;

/**
 * The reader a command's parse function gets: only the names its spec declares (and the globals)
 * typecheck, so a misspelt input fails `tsc` instead of reading an undeclared name at run time.
 */
export interface DeclaredInputs<N extends string> {
  // Function properties, not methods: they compare contravariantly, so a reader of fewer names cannot stand in for one of more.
  string: (name: N) => string | undefined;
  requiredString: (name: N, fix?: string) => string;
  boolean: (name: N) => boolean;
  list: (name: N) => string[];
}

/** The same inputs with a sentence in front of each description (a drill's signer inputs), keeping their literal names. */
export function describedAs<const S extends readonly InputSpec[]>(inputs: S, prefix: string): S {
  return inputs.map((input) => ({ ...input, description: `${prefix} ${input.description}` })) as unknown as S;
}

/** `ctx.inputs`, narrowed to the names in `declared` (the same list the spec's `inputs` holds). */
export function declaredInputs<const S extends readonly InputSpec[]>(ctx: CommandContext, _declared: S): DeclaredInputs<DeclaredName<S> | GlobalInputName> {
  return ctx.inputs;
}

export function allInputs(spec: CommandSpec): InputSpec[] {
  return spec.usesGlobals === false ? spec.inputs : [...GLOBAL_INPUTS, ...spec.inputs];
}

export type RawValue = string | boolean | string[] | undefined;

/**
 * Typed access to a command's inputs. Reading an input the spec does not declare is our bug
 * (it would be an action input missing from action.yml), so it throws.
 */
export class Inputs {
  private readonly specs: Map<string, InputSpec>;
  readonly read = new Set<string>();

  constructor(
    spec: CommandSpec,
    private readonly values: Record<string, RawValue>,
  ) {
    this.specs = new Map(allInputs(spec).map((i) => [i.name, i]));
  }

  private get(name: string, type: InputType): RawValue {
    const spec = this.specs.get(name);
    if (!spec) throw failure('INTERNAL_UNDECLARED_INPUT', `internal error: input "${name}" is read but not declared`);
    if (spec.type !== type) throw failure('INTERNAL_INPUT_TYPE', `internal error: input "${name}" is a ${spec.type}, read as ${type}`);
    this.read.add(name);
    const value = this.values[name];
    if (value === undefined || value === '') return spec.default !== undefined && type !== 'list' ? (type === 'boolean' ? spec.default === 'true' : spec.default) : undefined;
    return value;
  }

  string(name: string): string | undefined {
    const value = this.get(name, 'string') as string | undefined;
    const spec = this.specs.get(name)!;
    if (value !== undefined && spec.choices && !spec.choices.includes(value)) {
      throw usageError('BAD_INPUT', `--${name} must be one of ${spec.choices.join(', ')} (got "${value}")`, `pass --${name} ${spec.choices[0]}`);
    }
    return value;
  }

  requiredString(name: string, fix?: string): string {
    const value = this.string(name);
    if (value === undefined || value.trim() === '') {
      throw usageError('MISSING_INPUT', `missing --${name}`, fix ?? `pass --${name} (action input "${name}")`);
    }
    return value;
  }

  boolean(name: string): boolean {
    const value = this.get(name, 'boolean');
    if (typeof value === 'string') return parseBoolean(name, value);
    return value === true;
  }

  list(name: string): string[] {
    const value = this.get(name, 'list');
    if (value === undefined) return [];
    const items = Array.isArray(value) ? value : String(value).split('\n');
    return items.map((s) => String(s).trim()).filter(Boolean);
  }

  /** The global inputs, for settings resolution. */
  globals() {
    return {
      config: this.string('config'),
      env: this.string('env'),
      store: this.string('store'),
      databaseUrl: this.string('database-url'),
      redisUrl: this.string('redis-url'),
    };
  }
}

export function parseBoolean(name: string, value: string): boolean {
  const v = value.trim().toLowerCase();
  if (['true', 'yes', '1', 'on'].includes(v)) return true;
  if (['false', 'no', '0', 'off', ''].includes(v)) return false;
  throw usageError('BAD_INPUT', `input "${name}" must be true or false (got "${value}")`, `set ${name}: true or ${name}: false`);
}

/** Parallel pg_restore jobs (`--jobs`, default 2): a whole number from 1 to 64. */
export function parseJobs(value: string | undefined): number {
  if (value === undefined) return 2;
  // Digits only: Number() would also take 1e1, 0x2, +2 and padded text.
  const jobs = /^[1-9][0-9]?$/.test(value) ? Number(value) : 0;
  if (jobs < 1 || jobs > 64) throw usageError('BAD_INPUT', `--jobs must be a whole number from 1 to 64 (got "${value}")`, 'pass --jobs 2');
  return jobs;
}

/** Resolves the environment settings from the global inputs (flags > env vars > lifeline.yml). */
export function environmentFor(ctx: CommandContext): EnvironmentSettings {
  const settings = resolveEnvironment(ctx.inputs.globals(), { env: ctx.env, cwd: ctx.cwd });
  for (const secret of settings.secrets) ctx.logger.secret(secret);
  return settings;
}

/**
 * A URL that may carry a password, from `--NAME URL` or from `--NAME-env VAR` (the URL read from
 * that environment variable, so it never appears in the process list). Its secrets are registered
 * with the logger either way.
 */
export function urlInput<N extends string>(
  ctx: CommandContext,
  inputs: DeclaredInputs<NoInfer<N> | `${NoInfer<N>}-env`>,
  name: N,
  options: { required?: boolean; example: string },
): string | undefined {
  const direct = inputs.string(name);
  const envName = inputs.string(`${name}-env`);
  if (direct && envName) {
    throw usageError('BAD_INPUT', `give --${name} or --${name}-env, not both`, `keep --${name}-env ${envName}: it keeps the password out of the process list`);
  }
  let url = direct;
  if (envName) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(envName)) {
      throw usageError(
        'BAD_INPUT',
        `--${name}-env must name an environment variable (got ${JSON.stringify(envName)})`,
        `pass the variable's name, e.g. --${name}-env TARGET_URL, after export TARGET_URL='${options.example}'`,
      );
    }
    url = ctx.env[envName];
    if (!url)
      throw usageError(
        'MISSING_INPUT',
        `--${name}-env ${envName}: the environment variable ${envName} is unset or empty`,
        `export ${envName}='${options.example}' first (in Actions: env: ${envName}: \${{ secrets.... }})`,
      );
  }
  for (const secret of urlSecrets(url)) ctx.logger.secret(secret);
  if (!url && options.required) {
    throw usageError('MISSING_INPUT', `missing --${name}-env (or --${name})`, `export TARGET_URL='${options.example}' and pass --${name}-env TARGET_URL`);
  }
  return url;
}
