import { readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { isAlias, isMap, isScalar, isSeq, LineCounter, parseDocument, type Document, type Node } from 'yaml';

type PathSegment = string | number;

interface SourceFile {
  path: string;
  doc: Document;
  lines: LineCounter;
}

/** A service another one extends: its node in the file that defines it. */
interface BaseService {
  file: SourceFile;
  name: string;
  node: Node;
}

/** An `extends` that could not be followed: the extending service's settings from it were not examined. */
export interface UnresolvedExtends {
  service: string;
  base: string;
  /** The file the base was looked for in, as written (undefined: the same file). */
  from?: string;
  /** The Compose file and line that name it. */
  file: string;
  line: number;
  reason: string;
}

/** Compose itself nests `extends` without a fixed limit; past this, a chain is treated as unresolvable. */
export const MAX_EXTENDS_DEPTH = 10;

function parseFile(path: string): SourceFile | undefined {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, merge: true });
  return doc.errors.length === 0 ? { path, doc, lines } : undefined;
}

function serviceNode(file: SourceFile, name: string): Node | undefined {
  const services = file.doc.get('services', true);
  if (!isMap(services)) return undefined;
  const pair = services.items.find((p) => (p.key as { value?: unknown } | null)?.value === name);
  if (!pair) return undefined;
  const value = pair.value as Node | null;
  const node = value && isAlias(value) ? (value.resolve(file.doc) as Node | undefined) : (value ?? undefined);
  return node && isMap(node) ? node : undefined;
}

/**
 * The Compose files as written, with line numbers: the merged model has none, so findings
 * about it are pointed back at the source file (the last one that sets the key wins, as in a merge).
 */
export class ComposeSources {
  /** Per Compose file, per service: the services it extends, nearest first. */
  private readonly bases = new Map<SourceFile, Map<string, BaseService[]>>();
  /** Files read only because a service extends a service in them. */
  readonly extendedFiles: { path: string; status: 'read' | 'missing' | 'not parsed'; by: string }[] = [];
  readonly unresolvedExtends: UnresolvedExtends[] = [];

  private constructor(private readonly files: SourceFile[]) {
    const cache = new Map<string, SourceFile | undefined>(files.map((f) => [resolve(f.path), f]));
    for (const file of files) {
      const services = file.doc.get('services', true);
      if (!isMap(services)) continue;
      const perService = new Map<string, BaseService[]>();
      for (const pair of services.items) {
        const name = String((pair.key as { value?: unknown } | null)?.value ?? '');
        const node = serviceNode(file, name);
        if (node) perService.set(name, this.resolveExtends(file, name, node, cache));
      }
      this.bases.set(file, perService);
    }
  }

  /**
   * Follows `extends` (`extends: base` or `{ service, file }`) as Compose does: `file` is relative
   * to the file that names it, chains nest, and the extended files' services are not part of the
   * project. A missing file or service, a cycle or a chain deeper than MAX_EXTENDS_DEPTH is
   * recorded as unresolved, so the gates' pass is not taken for a promise about what was not read.
   */
  private resolveExtends(file: SourceFile, service: string, node: Node, cache: Map<string, SourceFile | undefined>): BaseService[] {
    const chain: BaseService[] = [];
    const seen = new Set([`${resolve(file.path)}#${service}`]);
    let current: { file: SourceFile; node: Node } = { file, node };
    for (;;) {
      const ext = walk(current.file.doc, current.node, ['extends'], 0);
      if (ext?.depth !== 1 || !ext.node) return chain;
      const spec = ext.node.toJSON() as unknown;
      const base = typeof spec === 'string' ? spec : typeof spec === 'object' && spec !== null ? (spec as { service?: unknown }).service : undefined;
      const from = typeof spec === 'object' && spec !== null && typeof (spec as { file?: unknown }).file === 'string' ? (spec as { file: string }).file : undefined;
      const unresolved = (reason: string) => {
        this.unresolvedExtends.push({ service, base: String(base ?? '?'), from, file: current.file.path, line: current.file.lines.linePos(ext.offset).line, reason });
        return chain;
      };
      if (typeof base !== 'string' || base === '') return unresolved('it names no service');
      if (chain.length >= MAX_EXTENDS_DEPTH) return unresolved(`the chain is deeper than ${MAX_EXTENDS_DEPTH}`);
      const path = from === undefined ? current.file.path : isAbsolute(from) ? from : resolve(dirname(current.file.path), from);
      let target = cache.get(resolve(path));
      if (!cache.has(resolve(path))) {
        target = parseFile(path);
        cache.set(resolve(path), target);
        let status: 'read' | 'missing' | 'not parsed' = 'read';
        if (!target) {
          try {
            readFileSync(path);
            status = 'not parsed';
          } catch {
            status = 'missing';
          }
        }
        this.extendedFiles.push({ path, status, by: `${service} (extends ${base})` });
      }
      if (!target) return unresolved(`${from ?? path} cannot be read or parsed`);
      const key = `${resolve(target.path)}#${base}`;
      if (seen.has(key)) return unresolved('the chain extends itself (a cycle)');
      seen.add(key);
      const baseNode = serviceNode(target, base);
      if (!baseNode) return unresolved(`${from ?? 'the same file'} has no service ${base}`);
      chain.push({ file: target, name: base, node: baseNode });
      current = { file: target, node: baseNode };
    }
  }

  static load(paths: string[]): ComposeSources {
    const files: SourceFile[] = [];
    for (const path of paths) {
      const file = parseFile(path); // a missing file is reported by the Compose validation
      if (file) files.push(file);
    }
    return new ComposeSources(files);
  }

  /** A naive merge (later files override a service's keys, `extends` resolved) for when Compose itself cannot run. */
  mergedModel(): ComposeModel {
    const services: Record<string, ServiceModel> = {};
    for (const file of this.files) {
      const js = file.doc.toJS({ maxAliasCount: 1000 }) as { services?: Record<string, ServiceModel & { extends?: unknown }> } | null;
      for (const [name, service] of Object.entries(js?.services ?? {})) {
        let merged: ServiceModel = {};
        for (const base of [...(this.bases.get(file)?.get(name) ?? [])].reverse()) merged = mergeService(merged, base.node.toJSON() as ServiceModel);
        merged = mergeService(merged, service ?? {});
        delete (merged as { extends?: unknown }).extends;
        services[name] = { ...services[name], ...merged };
      }
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
    // A key the service does not set itself may come from a service it extends.
    if (path[0] === 'services' && typeof path[1] === 'string' && path.length > 2 && (best?.depth ?? 0) < path.length) {
      for (const file of [...this.files].reverse()) {
        for (const base of this.bases.get(file)?.get(path[1]) ?? []) {
          const found = walk(base.file.doc, base.node, path.slice(2), 0);
          if (found && found.depth > 0 && found.depth + 2 > (best?.depth ?? 0)) best = { file: base.file.path, line: base.file.lines.linePos(found.offset).line, depth: found.depth + 2 };
          if (best?.depth === path.length) return { file: best.file, line: best.line };
        }
      }
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
  *serviceNodes(path: PathSegment[]): Generator<{ file: string; service: string; node: Node; doc: Document; line: (offset: number) => number; baseDir?: string }> {
    for (const file of this.files) {
      const services = file.doc.get('services', true);
      if (!isMap(services)) continue;
      for (const pair of services.items) {
        const service = String((pair.key as { value?: unknown })?.value ?? '');
        // What a service extends comes first (farthest first): its own settings override them.
        for (const base of [...(this.bases.get(file)?.get(service) ?? [])].reverse()) {
          const found = walk(base.file.doc, base.node, path, 0);
          if (found?.depth !== path.length || !found.node) continue;
          // Relative paths in an extended file are relative to that file, as Compose resolves them.
          yield { file: base.file.path, service, node: found.node, doc: base.file.doc, line: (offset) => base.file.lines.linePos(offset).line, baseDir: dirname(resolve(base.file.path)) };
        }
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

/** Compose's `extends` merge, as far as the gates read it: `environment` merges key by key, the rest overrides. */
function mergeService(base: ServiceModel, over: ServiceModel): ServiceModel {
  const merged: ServiceModel = { ...base, ...over };
  if (base.environment && over.environment) merged.environment = { ...environmentMap(base.environment), ...environmentMap(over.environment) };
  return merged;
}

function environmentMap(environment: Record<string, unknown> | string[]): Record<string, unknown> {
  if (!Array.isArray(environment)) return environment;
  return Object.fromEntries(
    environment.map((item) => {
      const text = String(item);
      const eq = text.indexOf('=');
      return eq < 0 ? [text, null] : [text.slice(0, eq), text.slice(eq + 1)];
    }),
  );
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
