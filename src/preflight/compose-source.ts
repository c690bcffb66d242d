import { readFileSync } from 'node:fs';
import { isAlias, isMap, isScalar, isSeq, LineCounter, parseDocument, type Document, type Node } from 'yaml';

type PathSegment = string | number;

interface SourceFile {
  path: string;
  doc: Document;
  lines: LineCounter;
}

/**
 * The Compose files as written, with line numbers: the merged model has none, so findings
 * about it are pointed back at the source file (the last one that sets the key wins, as in a merge).
 */
export class ComposeSources {
  private constructor(private readonly files: SourceFile[]) {}

  static load(paths: string[]): ComposeSources {
    const files: SourceFile[] = [];
    for (const path of paths) {
      let text: string;
      try {
        text = readFileSync(path, 'utf8');
      } catch {
        continue; // a missing file is reported by the Compose validation
      }
      const lines = new LineCounter();
      const doc = parseDocument(text, { lineCounter: lines, merge: true });
      if (doc.errors.length === 0) files.push({ path, doc, lines });
    }
    return new ComposeSources(files);
  }

  /** A naive merge (later files override a service's keys) for when Compose itself cannot run. */
  mergedModel(): ComposeModel {
    const services: Record<string, ServiceModel> = {};
    for (const file of this.files) {
      const js = file.doc.toJS({ maxAliasCount: 1000 }) as { services?: Record<string, ServiceModel> } | null;
      for (const [name, service] of Object.entries(js?.services ?? {})) services[name] = { ...services[name], ...(service ?? {}) };
    }
    return { services };
  }

  /** Where a key is set: the file and line of the deepest part of `path` found, searching the last file first. */
  locate(path: PathSegment[]): { file?: string; line?: number } {
    let best: { file: string; line: number; depth: number } | undefined;
    for (const file of [...this.files].reverse()) {
      const found = walk(file.doc, file.doc.contents as Node | null, path, 0);
      if (found && (!best || found.depth > best.depth)) best = { file: file.path, line: file.lines.linePos(found.offset).line, depth: found.depth };
      if (best?.depth === path.length) break;
    }
    return best ? { file: best.file, line: best.line } : { file: this.files[0]?.path };
  }

  /**
   * The line of the list item under `path` that `matches` (e.g. the `ports` entry publishing 5432):
   * indexes differ between the merged model and the files it came from, so items are matched by value.
   */
  locateItem(path: PathSegment[], matches: (item: unknown) => boolean): { file?: string; line?: number } {
    for (const file of [...this.files].reverse()) {
      const found = walk(file.doc, file.doc.contents as Node | null, path, 0);
      if (found?.depth !== path.length || !isSeq(found.node)) continue;
      for (const item of found.node.items as Node[]) {
        const value = isAlias(item) ? (item.resolve(file.doc) as Node | undefined)?.toJSON() : item.toJSON();
        if (matches(value)) return { file: file.path, line: file.lines.linePos(item.range?.[0] ?? 0).line };
      }
    }
    return this.locate(path);
  }

  /** The Compose files that parsed, and those that did not (named so the report can say so). */
  get paths(): string[] {
    return this.files.map((f) => f.path);
  }

  /**
   * For each service of each file, the node at `path` under it (e.g. `['command']`,
   * `['healthcheck', 'test']`), following `<<: *anchor` merges; `line` maps an offset in that file.
   */
  *serviceNodes(path: PathSegment[]): Generator<{ file: string; service: string; node: Node; doc: Document; line: (offset: number) => number }> {
    for (const file of this.files) {
      const services = file.doc.get('services', true);
      if (!isMap(services)) continue;
      for (const pair of services.items) {
        const service = String((pair.key as { value?: unknown })?.value ?? '');
        const found = walk(file.doc, pair.value as Node | null, path, 0);
        if (found?.depth !== path.length || !found.node) continue;
        yield { file: file.path, service, node: found.node, doc: file.doc, line: (offset) => file.lines.linePos(offset).line };
      }
    }
  }

  /** Each service's `environment` entries as written (before interpolation), with their lines. */
  *environmentEntries(): Generator<{ file: string; line: number; service: string; name: string; value: string | undefined }> {
    // Through serviceNodes, so an `environment` merged from an anchor (`<<: *app`) is seen too.
    for (const { file, service, node: environment, line } of this.serviceNodes(['environment'])) {
      if (isMap(environment)) {
        for (const entry of environment.items) {
          const name = String((entry.key as { value?: unknown }).value ?? '');
          const value = isScalar(entry.value) && entry.value.value !== null ? String(entry.value.value) : undefined;
          const node = (entry.value as Node | null) ?? (entry.key as Node);
          yield { file, line: line(node.range?.[0] ?? 0), service, name, value };
        }
      } else if (isSeq(environment)) {
        for (const item of environment.items) {
          if (!isScalar(item)) continue;
          const text = String(item.value);
          const eq = text.indexOf('=');
          yield { file, line: line(item.range?.[0] ?? 0), service, name: eq < 0 ? text : text.slice(0, eq), value: eq < 0 ? undefined : text.slice(eq + 1) };
        }
      }
    }
  }
}

/** Every scalar under a node (sequence items, map values), with its offset, aliases resolved. */
export function* scalarsOf(doc: Document, node: Node | null | undefined): Generator<{ value: string; offset: number }> {
  if (!node) return;
  if (isAlias(node)) {
    yield* scalarsOf(doc, node.resolve(doc) as Node | undefined);
  } else if (isScalar(node)) {
    if (node.value !== null && node.value !== undefined) yield { value: String(node.value), offset: node.range?.[0] ?? 0 };
  } else if (isSeq(node)) {
    for (const item of node.items) yield* scalarsOf(doc, item as Node);
  } else if (isMap(node)) {
    for (const pair of node.items) yield* scalarsOf(doc, pair.value as Node);
  }
}

interface WalkResult {
  depth: number;
  offset: number;
  node?: Node;
}

function walk(doc: Document, node: Node | null | undefined, path: PathSegment[], depth: number): WalkResult | undefined {
  if (!node) return undefined;
  if (isAlias(node)) return walk(doc, node.resolve(doc) as Node | undefined, path, depth);
  const here: WalkResult = { depth, offset: node.range?.[0] ?? 0, node };
  if (depth === path.length) return here;
  const segment = path[depth]!;
  if (isMap(node)) {
    for (const pair of node.items) {
      const key = pair.key as { value?: unknown; range?: [number, number, number] } | null;
      if (key && key.value === segment) {
        const deeper = walk(doc, pair.value as Node | null, path, depth + 1);
        const value = pair.value as Node | null;
        const keyHit: WalkResult = { depth: depth + 1, offset: key.range?.[0] ?? 0, node: value && isAlias(value) ? (value.resolve(doc) as Node) : (value ?? undefined) };
        return deeper && deeper.depth > depth + 1 ? deeper : keyHit;
      }
    }
    // `<<: *anchor` merges: the key may come from the anchored map.
    for (const pair of node.items) {
      const key = pair.key as { source?: string } | null;
      if (key?.source === '<<') {
        const targets = isSeq(pair.value) ? pair.value.items : [pair.value];
        for (const target of targets) {
          const found = walk(doc, target as Node, path, depth);
          if (found && found.depth > depth) return found;
        }
      }
    }
    return here;
  }
  if (isSeq(node) && typeof segment === 'number') {
    const item = node.items[segment] as Node | undefined;
    return item ? (walk(doc, item, path, depth + 1) ?? here) : here;
  }
  return here;
}

/** The parts of a Compose service the gates read; both the short and long syntaxes occur. */
export interface ServiceModel {
  image?: string;
  privileged?: boolean;
  network_mode?: string;
  volumes?: (string | { type?: string; source?: string; target?: string })[];
  ports?: (string | number | { published?: string | number; target?: number; host_ip?: string; mode?: string })[];
  healthcheck?: { test?: unknown; disable?: boolean };
  restart?: string;
  deploy?: { restart_policy?: { condition?: string } };
  environment?: Record<string, unknown> | string[];
}

export interface ComposeModel {
  services: Record<string, ServiceModel>;
}
