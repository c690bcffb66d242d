import { readFileSync } from 'node:fs';
import { globSync } from 'tinyglobby';
import { dirname, isAbsolute, join } from 'node:path';

/** One nginx directive with where it was written; blocks carry their children. */
export interface Directive {
  name: string;
  args: string[];
  file: string;
  line: number;
  children?: Directive[];
}

/**
 * A small nginx config parser: enough structure (directives, blocks, includes, lines) for the
 * TLS/redirect/HSTS gates. `nginx -t` remains the judge of validity.
 */
export function parseNginxConfig(path: string, seen = new Set<string>(), onFile?: OnFile): Directive[] {
  if (seen.has(path)) return [];
  seen.add(path);
  const text = readFileSync(path, 'utf8');
  onFile?.(path, 'read');
  const tokens = tokenize(text);
  let position = 0;
  const parseBlock = (): Directive[] => {
    const directives: Directive[] = [];
    let words: { text: string; line: number }[] = [];
    while (position < tokens.length) {
      const token = tokens[position++]!;
      if (token.text === ';' && !token.quoted) {
        if (words.length) {
          const directive = { name: words[0]!.text, args: words.slice(1).map((w) => w.text), file: path, line: words[0]!.line };
          if (directive.name === 'include') directives.push(...expandInclude(directive, path, seen, onFile));
          else directives.push(directive);
        }
        words = [];
      } else if (token.text === '{' && !token.quoted) {
        const head = words[0] ?? { text: '', line: token.line };
        directives.push({ name: head.text, args: words.slice(1).map((w) => w.text), file: path, line: head.line, children: parseBlock() });
        words = [];
      } else if (token.text === '}' && !token.quoted) {
        return directives;
      } else {
        words.push(token);
      }
    }
    return directives;
  };
  return parseBlock();
}

/** Told about every file parsed (and every include that named nothing readable), for the report. */
export type OnFile = (path: string, status: 'read' | 'missing' | 'unreadable' | 'no match') => void;

function expandInclude(directive: Directive, from: string, seen: Set<string>, onFile?: OnFile): Directive[] {
  const pattern = directive.args[0];
  if (!pattern) return [];
  const absolute = isAbsolute(pattern) ? pattern : join(dirname(from), pattern);
  let files: string[];
  try {
    files = /[*?[]/.test(absolute) ? globSync(absolute, { absolute: true, onlyFiles: true }).sort() : [absolute];
  } catch {
    onFile?.(absolute, 'unreadable');
    return [];
  }
  if (files.length === 0) onFile?.(absolute, 'no match');
  return files.flatMap((file) => {
    try {
      return parseNginxConfig(file, seen, onFile);
    } catch (error) {
      onFile?.(file, (error as NodeJS.ErrnoException).code === 'ENOENT' ? 'missing' : 'unreadable');
      return []; // nginx -t reports an unreadable include
    }
  });
}

function tokenize(text: string): { text: string; line: number; quoted: boolean }[] {
  const tokens: { text: string; line: number; quoted: boolean }[] = [];
  let line = 1;
  let i = 0;
  while (i < text.length) {
    const c = text[i]!;
    if (c === '\n') {
      line++;
      i++;
    } else if (/\s/.test(c)) {
      i++;
    } else if (c === '#') {
      while (i < text.length && text[i] !== '\n') i++;
    } else if (c === ';' || c === '{' || c === '}') {
      tokens.push({ text: c, line, quoted: false });
      i++;
    } else if (c === '"' || c === "'") {
      const start = line;
      let value = '';
      i++;
      while (i < text.length && text[i] !== c) {
        if (text[i] === '\\' && i + 1 < text.length) value += text[++i];
        else value += text[i];
        if (text[i] === '\n') line++;
        i++;
      }
      i++;
      tokens.push({ text: value, line: start, quoted: true });
    } else {
      let value = '';
      while (i < text.length && !/[\s;{}]/.test(text[i]!)) value += text[i++];
      tokens.push({ text: value, line, quoted: false });
    }
  }
  return tokens;
}

/** Every `server` block, wherever it sits (http context, includes). */
export function serverBlocks(directives: Directive[]): Directive[] {
  return directives.flatMap((d) => (d.name === 'server' && d.children ? [d] : d.children ? serverBlocks(d.children) : []));
}

export function find(directives: Directive[] | undefined, name: string): Directive[] {
  return (directives ?? []).filter((d) => d.name === name);
}
