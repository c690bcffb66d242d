import { basename } from 'node:path';
import { scalarsOf, type ComposeSources } from './compose-source';
import { displayPath, gate, pass, warn, type CheckContext, type Finding } from './findings';

/** Options that take a password as their value (`--requirepass X`, `--password=X`, `--db-token X`). */
const SECRET_OPTION = /^(requirepass|masterauth|pass|password|passwd|secret|token|api[-_]?key|access[-_]?key|secret[-_]?key|[a-z0-9_-]*[-_](password|passwd|secret|token))$/i;
/** `NAME=VALUE` arguments that set a password (`-c password=X`, `PGPASSWORD=X psql`). */
const SECRET_ASSIGNMENT = /(password|passwd|secret|token|requirepass|masterauth)$|(^|[-_.])(pass|auth)$/i;
/** A URL whose user-info holds a password: `postgres://user:password@host`. */
const URL_PASSWORD = /[a-z][a-z0-9+.-]*:\/\/[^\s:@/]*:([^\s@/]+)@/i;
/**
 * Values made only of references: `${VAR}`, `$VAR`, and Compose's escaped `$$VAR` / `$${VAR}`
 * for the container's shell. `${VAR:-fallback}` is not: its fallback is a literal in the file.
 */
export const ONLY_REFERENCES = /^(\$?\$\{[A-Za-z_][A-Za-z0-9_]*\}|\$?\$[A-Za-z_][A-Za-z0-9_]*)+$/;

export interface CommandSecret {
  /** How it was passed, without the value: `--requirepass`, `password=`, `a URL with a password`. */
  how: string;
  /** `literal` is written in the file; `reference` comes from a variable but still lands on the command line. */
  kind: 'literal' | 'reference';
  /** The word holding the value. */
  index: number;
}

/** Splits a shell-form command into words: whitespace outside quotes separates, quotes are dropped. */
export function shellWords(text: string): string[] {
  const words: string[] = [];
  let word = '';
  let quote: string | undefined;
  let inWord = false;
  for (const c of text) {
    if (quote) {
      if (c === quote) quote = undefined;
      else word += c;
    } else if (c === '"' || c === "'") {
      quote = c;
      inWord = true;
    } else if (/\s/.test(c)) {
      if (inWord) words.push(word);
      word = '';
      inWord = false;
    } else {
      word += c;
      inWord = true;
    }
  }
  if (inWord) words.push(word);
  return words;
}

function classify(value: string): CommandSecret['kind'] | undefined {
  const v = value.trim();
  if (v === '') return undefined;
  return ONLY_REFERENCES.test(v) ? 'reference' : 'literal';
}

/**
 * Passwords passed as arguments, from the words of a command (each list item split again, since
 * `["sh", "-c", "redis-server --requirepass x"]` hides a whole command line in one item).
 */
export function commandSecrets(words: readonly string[]): CommandSecret[] {
  const found: CommandSecret[] = [];
  const add = (how: string, value: string | undefined, index: number) => {
    const kind = value === undefined ? undefined : classify(value);
    if (kind) found.push({ how, kind, index });
  };
  let redisCli = false;
  for (let i = 0; i < words.length; i++) {
    const word = words[i]!;
    if (basename(word) === 'redis-cli') redisCli = true;
    const url = URL_PASSWORD.exec(word);
    if (url) {
      add('a URL with a password', url[1], i);
      continue;
    }
    const eq = word.indexOf('=');
    if (eq > 0) {
      const name = word.slice(0, eq).replace(/^-+/, '');
      if (SECRET_OPTION.test(name) || SECRET_ASSIGNMENT.test(name)) add(`${word.slice(0, eq)}=`, word.slice(eq + 1), i);
      continue;
    }
    if (!word.startsWith('-') || word.startsWith('--no-')) continue;
    const name = word.replace(/^-+/, '');
    const takesSecret = SECRET_OPTION.test(name) || (redisCli && word === '-a');
    const next = words[i + 1];
    if (takesSecret && next !== undefined && !next.startsWith('-')) {
      add(word, next, i + 1);
      i++;
    }
  }
  return found;
}

const FIX = 'pass it out of band: a config file or Docker secret mounted read-only (requirepass in redis.conf, POSTGRES_PASSWORD_FILE, a .pgpass), or an environment variable the program reads itself';

const WHERE = [
  { path: ['command'], label: 'command' },
  { path: ['entrypoint'], label: 'entrypoint' },
  { path: ['healthcheck', 'test'], label: 'healthcheck test' },
] as const;

/**
 * `compose.command-secret`: a password in a service's command, entrypoint or healthcheck, as
 * written in the Compose files (before interpolation). A literal is committed with the file and
 * blocks in production; a `${VAR}` still ends up in `ps` and `docker inspect` on the host, so it
 * warns.
 */
export function checkCommandSecrets(sources: ComposeSources, ctx: CheckContext): Finding[] {
  const blocking = gate(ctx.production);
  const findings: Finding[] = [];
  const seen = new Set<string>();
  for (const { path, label } of WHERE) {
    for (const { file, service, node, doc, line } of sources.serviceNodes([...path])) {
      // One argument list per node: a list form splits an option and its value over two items.
      const words = [...scalarsOf(doc, node)].flatMap((scalar) => shellWords(scalar.value).map((word) => ({ word, offset: scalar.offset })));
      for (const secret of commandSecrets(words.map((w) => w.word))) {
        const at = { file: displayPath(ctx, file), line: line(words[secret.index]!.offset) };
        // An anchor merged into several services is one line to fix: report it once.
        const key = `${at.file}:${at.line}:${secret.how}`;
        if (seen.has(key)) continue;
        seen.add(key);
        findings.push(
          secret.kind === 'literal'
            ? blocking({
                check: 'compose.command-secret',
                ...at,
                message: `service ${service} writes a password into its ${label} (${secret.how}): it is committed with the Compose file and shown by ps and docker inspect`,
                fix: FIX,
              })
            : warn({
                check: 'compose.command-secret',
                ...at,
                message: `service ${service} passes a password from a variable on its ${label} (${secret.how}): ps and docker inspect on the host show it`,
                fix: FIX,
              }),
        );
      }
    }
  }
  return findings.length ? findings : [pass({ check: 'compose.command-secret', message: 'no command, entrypoint or healthcheck passes a password as an argument' })];
}
