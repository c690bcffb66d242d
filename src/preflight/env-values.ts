import { existsSync, readFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { displayPath, fail, notChecked, pass, warn, gate, type CheckContext, type Finding } from './findings';

export interface EnvEntry {
  key: string;
  value: string;
  line: number;
}

/** Parses a dotenv file (KEY=VALUE, optional `export`, quotes, comments) keeping each key's line. */
export function parseEnvFile(text: string): EnvEntry[] {
  const entries: EnvEntry[] = [];
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const match = /^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_.-]*)\s*=\s*(.*)$/.exec(lines[i]!);
    if (!match) continue;
    const line = i + 1;
    let value = match[2]!;
    const quote = value[0];
    if ((quote === '"' || quote === "'") && value.lastIndexOf(quote) > 0) {
      value = value.slice(1, value.lastIndexOf(quote));
    } else if (quote === '"' || quote === "'") {
      // A quoted value spanning lines: read to the closing quote.
      const parts = [value.slice(1)];
      while (++i < lines.length && !lines[i]!.includes(quote)) parts.push(lines[i]!);
      parts.push((lines[i] ?? '').slice(0, (lines[i] ?? '').indexOf(quote)));
      value = parts.join('\n');
    } else {
      value = value.replace(/\s+#.*$/, '').trim();
    }
    entries.push({ key: match[1]!, value, line });
  }
  return entries;
}

export interface EnvCheckOptions {
  envFile?: string;
  /** Keys that must be present; when empty, the keys of a committed `.env.example` beside the file. */
  requiredKeys: string[];
}

const PLACEHOLDER = /^(changeme|change[-_ ]?me|change[-_ ]?this|todo|tbd|fixme|xxx+|placeholder|replace[-_ ]?me|secret|password|example|dummy|<[^>]*>|your[-_].*)$/i;
const PLACEHOLDER_INSIDE = /changeme|change_me|\bTODO\b|\bFIXME\b|xxxx/i;
const SECRET_KEY = /SECRET|KEY/i;
const MIN_SECRET_LENGTH = 32;

/** Checks the environment file's values; messages name keys only, never values. */
export function checkEnvValues(ctx: CheckContext, options: EnvCheckOptions): Finding[] {
  if (!options.envFile) return [notChecked('env.file', 'no environment file configured', 'pass --env-file .env.production or set preflight.envFile in lifeline.yml')];
  const file = displayPath(ctx, options.envFile);
  let text: string;
  try {
    text = readFileSync(options.envFile, 'utf8');
  } catch (error) {
    ctx.files?.add(options.envFile, 'environment file', 'env.file', (error as NodeJS.ErrnoException).code === 'ENOENT' ? 'missing' : 'unreadable');
    return [
      fail({ check: 'env.file', file, message: `the environment file ${file} cannot be read`, fix: 'create it on the deploy host (it is not committed), or fix --env-file / preflight.envFile' }),
    ];
  }
  const entries = parseEnvFile(text);
  const byKey = new Map(entries.map((e) => [e.key, e]));
  ctx.files?.add(options.envFile, 'environment file', 'env.*');
  const findings: Finding[] = [pass({ check: 'env.file', file, message: `${entries.length} keys read` })];

  let required = options.requiredKeys;
  let requiredFrom = 'the required keys';
  const example = join(dirname(options.envFile), '.env.example');
  if (required.length === 0 && existsSync(example) && basename(options.envFile) !== '.env.example') {
    required = parseEnvFile(readFileSync(example, 'utf8')).map((e) => e.key);
    requiredFrom = displayPath(ctx, example);
    ctx.files?.add(example, 'required keys (.env.example)', 'env.required');
  }
  const missing = required.filter((key) => !byKey.has(key));
  for (const key of missing) findings.push(fail({ check: 'env.required', file, message: `${key} is missing (required by ${requiredFrom})`, fix: `add ${key}=... to ${file}` }));
  if (required.length === 0)
    findings.push(
      notChecked('env.required', 'no required keys configured and no .env.example beside the file', 'list them with --required-env KEY or preflight.requiredEnv, or commit a .env.example'),
    );
  else if (missing.length === 0) findings.push(pass({ check: 'env.required', file, message: `all ${required.length} required keys are present (from ${requiredFrom})` }));

  findings.push(...checkEnvEntries(ctx, file, entries, new Set(required)));
  return findings;
}

/** A key that turns a framework's debug mode on: DEBUG, APP_DEBUG, FLASK_DEBUG, DJANGO_DEBUG ... */
export const DEBUG_KEY = /(^|_)DEBUG$/i;
/** Every truthy spelling frameworks accept, any case. */
export const TRUTHY = /^(1|true|yes|on)$/i;

/**
 * The value checks on one environment file's entries (placeholders, short secrets, debug flags,
 * bad URLs, open CORS), each at its line; `file` is already a display path.
 */
export function checkEnvEntries(ctx: CheckContext, file: string, entries: readonly EnvEntry[], requiredSet: ReadonlySet<string> = new Set()): Finding[] {
  const blocking = gate(ctx.production);
  const values: Finding[] = [];
  for (const { key, value, line } of entries) {
    const at = { file, line };
    if (value.trim() === '') {
      const make = requiredSet.has(key) ? fail : warn;
      values.push(make({ check: 'env.placeholder', ...at, message: `${key} is empty`, fix: `set a real value for ${key}${requiredSet.has(key) ? '' : ' or remove the line'}` }));
      continue;
    }
    if (PLACEHOLDER.test(value.trim()) || PLACEHOLDER_INSIDE.test(value)) {
      values.push(fail({ check: 'env.placeholder', ...at, message: `${key} still holds a placeholder value`, fix: `set the real value of ${key}` }));
      continue;
    }
    if (SECRET_KEY.test(key) && !/_(ID|FILE|PATH|NAME)$/i.test(key) && value.length < MIN_SECRET_LENGTH) {
      values.push(
        blocking({
          check: 'env.secret-length',
          ...at,
          message: `${key} is ${value.length} characters; secrets need at least ${MIN_SECRET_LENGTH}`,
          fix: `generate one: openssl rand -hex 32, and set ${key} to it`,
        }),
      );
    }
    if (DEBUG_KEY.test(key) && TRUTHY.test(value.trim())) {
      values.push(blocking({ check: 'env.debug', ...at, message: `${key} is on${ctx.production ? ' in production' : ''}: stack traces and internals reach users`, fix: `set ${key}=false` }));
    }
    if (/(^|_)DATABASE_URL$/i.test(key) && !urlParses(value, ['postgres:', 'postgresql:', 'postgresql+asyncpg:', 'postgresql+psycopg:', 'postgresql+psycopg2:'])) {
      values.push(
        fail({
          check: 'env.url',
          ...at,
          message: `${key} is not a PostgreSQL URL`,
          fix: `write ${key} as postgresql://user:password@host:5432/dbname (percent-encode special characters in the password)`,
        }),
      );
    }
    if (/(^|_)REDIS_URL$/i.test(key) && !urlParses(value, ['redis:', 'rediss:'])) {
      values.push(fail({ check: 'env.url', ...at, message: `${key} is not a Redis URL`, fix: `write ${key} as redis://:password@host:6379/0` }));
    }
    if (/CORS/i.test(key) && value.split(/[\s,;]+/).some((origin) => origin.replace(/^["'[]+|["'\]]+$/g, '') === '*')) {
      values.push(
        blocking({ check: 'env.cors', ...at, message: `${key} allows any origin (*)${ctx.production ? ' in production' : ''}`, fix: `list the allowed origins: ${key}=https://app.example.com` }),
      );
    }
  }
  if (!values.some((f) => f.status !== 'pass')) values.push(pass({ check: 'env.values', file, message: 'no placeholders, short secrets, debug flags, bad URLs or open CORS origins' }));
  return values;
}

/** Whether a URL parses with one of the schemes; the value itself never leaves this function. */
function urlParses(value: string, schemes: string[]): boolean {
  try {
    const url = new URL(value.trim());
    return schemes.includes(url.protocol) && url.hostname !== '';
  } catch {
    return false;
  }
}
