import { readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { isAlias, isMap, isScalar, isSeq, type Node } from 'yaml';
import type { ComposeModel, ComposeSources } from './compose-source';
import { checkEnvEntries, DEBUG_KEY, parseEnvFile, TRUTHY } from './env-values';
import { displayPath, fail, gate, pass, type CheckContext, type Finding } from './findings';

/**
 * `compose.debug`: a service whose `environment` (map or `KEY=VALUE` list) turns a debug flag on,
 * judged on the merged model (interpolated when Compose ran, so `DEBUG: ${DEBUG}` counts with the
 * value CI exports) and reported at the line that sets it. Keys that only an env_file sets are
 * left to the env_file check, which reports them at their line in that file.
 */
export function checkComposeDebug(model: ComposeModel, sources: ComposeSources, ctx: CheckContext): Finding[] {
  const blocking = gate(ctx.production);
  const written = [...sources.environmentEntries()];
  const findings: Finding[] = [];
  for (const [service, s] of Object.entries(model.services)) {
    for (const [key, value] of environmentPairs(s.environment)) {
      if (!DEBUG_KEY.test(key) || value === undefined || !TRUTHY.test(value.trim().replace(/^["']|["']$/g, ''))) continue;
      const where = written.filter((e) => e.service === service && e.name === key).pop();
      if (!where) continue;
      findings.push(
        blocking({
          check: 'compose.debug',
          file: displayPath(ctx, where.file),
          line: where.line,
          message: `service ${service} sets ${key} on${ctx.production ? ' in production' : ''}: stack traces and internals reach users`,
          fix: `set ${key} to false (or remove it) in the Compose file`,
        }),
      );
    }
  }
  return findings.length ? findings : [pass({ check: 'compose.debug', message: 'no service turns a debug flag on in its environment' })];
}

function environmentPairs(environment: Record<string, unknown> | string[] | undefined): [string, string | undefined][] {
  if (!environment) return [];
  if (Array.isArray(environment)) {
    return environment.map((item) => {
      const text = String(item);
      const eq = text.indexOf('=');
      return eq < 0 ? [text, undefined] : [text.slice(0, eq), text.slice(eq + 1)];
    });
  }
  return Object.entries(environment).map(([key, value]) => [key, value === null || value === undefined ? undefined : String(value)]);
}

interface EnvFileUse {
  path: string;
  required: boolean;
  services: string[];
  /** Where the first service names it. */
  file: string;
  line: number;
}

/** Every `env_file:` entry (a path, a list, or `{ path, required }` items), resolved from the project directory (or, in a file another service extends, from that file's directory). */
function envFileUses(sources: ComposeSources, projectDir: string): EnvFileUse[] {
  const uses = new Map<string, EnvFileUse>();
  for (const { file, service, node, doc, line, baseDir } of sources.serviceNodes(['env_file'])) {
    const items: Node[] = isSeq(node) ? (node.items as Node[]) : [node];
    for (const raw of items) {
      const item = isAlias(raw) ? ((raw.resolve(doc) as Node | undefined) ?? raw) : raw;
      let written: unknown;
      let required = true;
      if (isScalar(item)) {
        written = item.value;
      } else if (isMap(item)) {
        written = (item.get('path', true) as { value?: unknown } | undefined)?.value;
        required = item.get('required') !== false;
      }
      if (typeof written !== 'string' || written === '') continue;
      const path = isAbsolute(written) ? written : resolve(baseDir ?? projectDir, written);
      const use = uses.get(path);
      if (use) {
        if (!use.services.includes(service)) use.services.push(service);
        use.required ||= required;
      } else {
        uses.set(path, { path, required, services: [service], file, line: line(item?.range?.[0] ?? 0) });
      }
    }
  }
  return [...uses.values()];
}

/**
 * `compose.env-file`: reads every file a service names in `env_file:` (paths are relative to the
 * first Compose file's directory, as Compose resolves them) and runs the environment value checks
 * on it (debug flags, placeholders, short secrets, URLs, CORS). A missing required file fails:
 * `up` would fail on it. The configured environment file is checked once, by the env checks.
 */
export function checkEnvFiles(sources: ComposeSources, ctx: CheckContext, options: { projectDir: string; envFile?: string }): Finding[] {
  const findings: Finding[] = [];
  const configured = options.envFile ? resolve(options.envFile) : undefined;
  const uses = envFileUses(sources, options.projectDir);
  for (const use of uses) {
    const shown = displayPath(ctx, use.path);
    const role = `env_file of ${use.services.join(', ')}`;
    const declared = { file: displayPath(ctx, use.file), line: use.line };
    let text: string;
    try {
      text = readFileSync(use.path, 'utf8');
    } catch (error) {
      const missing = (error as NodeJS.ErrnoException).code === 'ENOENT';
      ctx.files?.add(use.path, role, 'compose.env-file', missing ? 'missing' : 'unreadable');
      if (missing && !use.required) {
        findings.push(pass({ check: 'compose.env-file', ...declared, message: `env_file ${shown} of ${use.services.join(', ')} is absent and marked required: false` }));
      } else {
        findings.push(
          fail({
            check: 'compose.env-file',
            ...declared,
            message: `env_file ${shown} of ${use.services.join(', ')} ${missing ? 'does not exist' : 'cannot be read'}: Compose refuses to start the service`,
            fix: `create ${shown} on the deploy host (paths are relative to ${resolve(options.projectDir) === resolve(ctx.cwd) ? 'the working directory' : displayPath(ctx, options.projectDir)}, the first Compose file's directory), fix the path, or mark it required: false`,
          }),
        );
      }
      continue;
    }
    ctx.files?.add(use.path, role, 'compose.env-file');
    const entries = parseEnvFile(text);
    findings.push(pass({ check: 'compose.env-file', ...declared, message: `env_file ${shown} of ${use.services.join(', ')}: ${entries.length} keys read` }));
    if (configured !== undefined && configured === use.path) continue; // the env checks cover it, with its required keys
    findings.push(...checkEnvEntries(ctx, shown, entries));
  }
  return uses.length ? findings : [pass({ check: 'compose.env-file', message: 'no service names an env_file' })];
}

export const projectDirOf = (composeFiles: readonly string[]): string => dirname(resolve(composeFiles[0] ?? '.'));
