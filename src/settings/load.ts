import { readFileSync, existsSync, statSync } from 'node:fs';
import { parseDocument, LineCounter, isMap, isSeq, isScalar, type Node as YamlNode } from 'yaml';
import { z } from 'zod';
import { usageError } from '../errors';
import { configSchema, type LifelineConfig } from './schema';

export interface LoadedConfig {
  path: string | undefined;
  config: LifelineConfig;
}

export const EMPTY_CONFIG: LifelineConfig = { version: 1, environments: {} };

/**
 * Reads and validates `lifeline.yml`. A missing file at the default path is fine (one-off use);
 * a missing file the operator named explicitly is an error.
 */
export function loadConfig(path: string, options: { explicit: boolean }): LoadedConfig {
  if (!existsSync(path)) {
    if (options.explicit) {
      throw usageError('CONFIG_NOT_FOUND', `configuration file ${path} does not exist`, 'pass --config with the path of your lifeline.yml, or omit it to use flags and environment variables only');
    }
    return { path: undefined, config: EMPTY_CONFIG };
  }
  return { path, config: parseConfig(readConfigText(path), path) };
}

/** lifeline.yml is a few kilobytes; anything far larger is not a configuration file. */
const MAX_CONFIG_BYTES = 1024 * 1024;

/**
 * Reads the configuration file as text, refusing what is not one: a directory, a device or FIFO
 * (which could block or never end), an unreadable file, a huge or binary file. Nothing of the
 * file's content is ever quoted: --config may point at any file on the host.
 */
function readConfigText(path: string): string {
  const fix = 'pass --config with the path of your lifeline.yml (a YAML file)';
  let info;
  try {
    info = statSync(path);
  } catch (error) {
    throw usageError('CONFIG_UNREADABLE', `configuration file ${path} cannot be read (${(error as NodeJS.ErrnoException).code ?? 'error'})`, fix);
  }
  if (info.isDirectory()) throw usageError('CONFIG_NOT_A_FILE', `configuration file ${path} is a directory`, `${fix}, e.g. --config ${path.replace(/\/+$/, '')}/lifeline.yml`);
  if (!info.isFile()) throw usageError('CONFIG_NOT_A_FILE', `configuration file ${path} is not a regular file`, fix);
  if (info.size > MAX_CONFIG_BYTES) throw usageError('CONFIG_TOO_LARGE', `configuration file ${path} is ${info.size} bytes, too large for a lifeline.yml (at most ${MAX_CONFIG_BYTES})`, fix);
  let buffer: Buffer;
  try {
    buffer = readFileSync(path);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw usageError(
      'CONFIG_UNREADABLE',
      `configuration file ${path} cannot be read (${code === 'EACCES' || code === 'EPERM' ? 'permission denied' : (code ?? 'error')})`,
      code === 'EACCES' || code === 'EPERM' ? `make it readable by the user running Lifeline (uid ${process.getuid?.() ?? '?'}), e.g. chmod 0640 ${path} and the right group, or ${fix}` : fix,
    );
  }
  if (buffer.includes(0)) throw usageError('CONFIG_NOT_YAML', `configuration file ${path} is binary (it holds NUL bytes), not YAML`, fix);
  return buffer.toString('utf8');
}

/** A lifeline.yml needs no aliases to speak of: a handful at most, never an expansion bomb. */
const MAX_ALIAS_COUNT = 50;

export function parseConfig(text: string, path = 'lifeline.yml'): LifelineConfig {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length > 0) {
    const first = doc.errors[0]!;
    const line = first.linePos?.[0]?.line;
    const column = first.linePos?.[0]?.col;
    // The parser's own message can quote the offending line: say where and what kind, not what it holds.
    throw usageError(
      'CONFIG_YAML',
      `${path}${line ? `:${line}` : ''}: not valid YAML (${describeYamlError(first.code)}${column ? ` at column ${column}` : ''})`,
      'fix the YAML syntax at that line (indentation, quoting, a missing colon); is --config pointing at your lifeline.yml?',
    );
  }
  let data: unknown;
  try {
    data = doc.toJS({ maxAliasCount: MAX_ALIAS_COUNT }) ?? {};
  } catch (error) {
    if (/alias/i.test((error as Error).message)) {
      throw usageError(
        'CONFIG_YAML',
        `${path}: YAML aliases expand too far (more than ${MAX_ALIAS_COUNT} alias references, the shape of a "billion laughs" document)`,
        'write the values out instead of nesting aliases (*name)',
      );
    }
    throw usageError('CONFIG_YAML', `${path}: not valid YAML (${(error as Error).name})`, 'fix the YAML syntax; `lifeline config check` validates the file');
  }
  if (data === null || typeof data !== 'object' || Array.isArray(data)) {
    throw usageError(
      'CONFIG_INVALID',
      `${path} is not a Lifeline configuration: its top level is ${Array.isArray(data) ? 'a list' : `a ${typeof data}`}, not a mapping of keys`,
      'start from examples/lifeline.yml (version: 1, environments: ...); is --config pointing at your lifeline.yml?',
    );
  }
  const keys = Object.keys(data);
  if (keys.length > 0 && !keys.some((k) => k === 'version' || k === 'environments' || k === 'store')) {
    // Some other file (an env file, a Compose file): its keys are not ours to print.
    throw usageError(
      'CONFIG_INVALID',
      `${path} is not a Lifeline configuration: none of version, environments or store at its top level (${keys.length} other key${keys.length === 1 ? '' : 's'})`,
      'start from examples/lifeline.yml (version: 1, environments: ...); is --config pointing at your lifeline.yml?',
    );
  }
  const result = configSchema.safeParse(data);
  if (result.success) return result.data;
  const problems = result.error.issues.map((issue) => describeIssue(issue, data, path, (keyPath) => lineOf(doc.contents, keyPath, lineCounter)));
  throw usageError(
    'CONFIG_INVALID',
    `${path} is not a valid Lifeline configuration:\n${problems.map((p) => `  - ${p}`).join('\n')}`,
    'correct the keys named above; `lifeline config check` validates the file without running anything',
    { problems },
  );
}

function describeYamlError(code: string): string {
  const known: Record<string, string> = {
    BAD_INDENT: 'bad indentation',
    MISSING_CHAR: 'a missing character',
    MULTILINE_IMPLICIT_KEY: 'a key that spans lines',
    BLOCK_AS_IMPLICIT_KEY: 'a block used as a key',
    DUPLICATE_KEY: 'a duplicate key',
    TAB_AS_INDENT: 'a tab used for indentation',
    UNEXPECTED_TOKEN: 'an unexpected token',
    BAD_SCALAR_START: 'a value that starts with a reserved character',
    BAD_ALIAS: 'a bad alias',
  };
  return known[code] ?? code.toLowerCase().replace(/_/g, ' ');
}

type Issue = z.core.$ZodIssue;

function describeIssue(issue: Issue, data: unknown, file: string, lineFor: (path: PropertyKey[]) => number | undefined): string {
  const path = issue.path;
  const where = (p: PropertyKey[]) => {
    const line = lineFor(p);
    return `${formatPath(p)}${line ? ` (${file}:${line})` : ''}`;
  };
  if (issue.code === 'unrecognized_keys') {
    const known = knownKeysAt(path);
    return issue.keys
      .map((key) => {
        const suggestion = nearest(key, known);
        const hint = suggestion ? `did you mean "${suggestion}"?` : `valid keys here: ${known.join(', ')}`;
        return `${where([...path, key])}: unknown key "${key}"; ${hint}`;
      })
      .join('\n  - ');
  }
  if ((issue.code === 'invalid_type' || issue.code === 'invalid_value') && valueAt(data, path) === undefined) {
    return `${where(path)}: required; add it${issue.code === 'invalid_type' ? ` (${issue.expected})` : ''}`;
  }
  if (issue.code === 'invalid_value' && 'values' in issue) {
    return `${where(path)}: must be one of ${issue.values.map((v) => JSON.stringify(v)).join(', ')}`;
  }
  return `${where(path)}: ${issue.message}`;
}

export function formatPath(path: readonly PropertyKey[]): string {
  if (path.length === 0) return '(top level)';
  return path.map((p, i) => (typeof p === 'number' ? `[${p}]` : `${i === 0 ? '' : '.'}${String(p)}`)).join('');
}

function valueAt(data: unknown, path: readonly PropertyKey[]): unknown {
  let cur: unknown = data;
  for (const key of path) {
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = (cur as Record<PropertyKey, unknown>)[key as string];
  }
  return cur;
}

/** Walks the schema alongside a key path to list the keys valid at that point. */
function knownKeysAt(path: readonly PropertyKey[]): string[] {
  let schema: z.core.$ZodType | undefined = configSchema;
  for (const key of path) {
    schema = schema && childSchema(unwrap(schema), key);
  }
  const target = schema && unwrap(schema);
  if (target && target instanceof z.ZodObject) return Object.keys(target.shape);
  return [];
}

function unwrap(schema: z.core.$ZodType): z.core.$ZodType {
  let cur = schema;
  while (cur instanceof z.ZodOptional || cur instanceof z.ZodDefault || cur instanceof z.ZodNullable) {
    cur = cur.unwrap() as z.core.$ZodType;
  }
  return cur;
}

function childSchema(schema: z.core.$ZodType, key: PropertyKey): z.core.$ZodType | undefined {
  if (schema instanceof z.ZodObject) return schema.shape[key as string] as z.core.$ZodType | undefined;
  if (schema instanceof z.ZodRecord) return schema.valueType as z.core.$ZodType;
  if (schema instanceof z.ZodArray) return schema.element as z.core.$ZodType;
  return undefined;
}

/** The closest candidate by edit distance, if it is close enough to be a plausible typo. */
export function nearest(word: string, candidates: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const candidate of candidates) {
    const d = editDistance(word.toLowerCase(), candidate.toLowerCase());
    if (d < bestDistance) {
      best = candidate;
      bestDistance = d;
    }
  }
  const limit = Math.max(2, Math.floor(word.length / 3));
  return bestDistance <= limit ? best : undefined;
}

function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = row[j]!;
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = tmp;
    }
  }
  return row[b.length]!;
}

function lineOf(root: YamlNode | null | undefined, path: readonly PropertyKey[], lc: LineCounter): number | undefined {
  let node: unknown = root;
  let line: number | undefined;
  for (const key of path) {
    if (isMap(node)) {
      const pair = node.items.find((item) => isScalar(item.key) && String(item.key.value) === String(key));
      if (!pair) return line;
      const keyNode = pair.key as YamlNode;
      if (keyNode.range) line = lc.linePos(keyNode.range[0]).line;
      node = pair.value;
    } else if (isSeq(node) && typeof key === 'number') {
      const item = node.items[key] as YamlNode | undefined;
      if (!item) return line;
      if (item.range) line = lc.linePos(item.range[0]).line;
      node = item;
    } else {
      return line;
    }
  }
  return line;
}
