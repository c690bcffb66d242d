import { readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { sourceFiles } from '../helpers/source-files';

// The walls of ../shared/ARCHITECTURE.md (issue #23), read from the import graph of src/**/*.ts:
// every crossing named below fails with the file and the import, so a wall stays held.

const ROOT = resolve(__dirname, '../..');
const SRC = join(ROOT, 'src');

interface Edge {
  /** The importing file, relative to the repository (src/commands/sync.ts). */
  from: string;
  /** The import as written ('../actions/artifact-store', 'node:child_process'). */
  spec: string;
  /** A relative import resolved to a repository path without extension (src/actions/artifact-store); else the bare spec. */
  to: string;
  /** The names it imports, when it names them (`import { a, b }`). */
  names: string[];
  line: number;
}

/** Static imports, re-exports (`export ... from`) and dynamic `import('...')`, type-only ones included. */
export function importsOf(file: string, text: string): Edge[] {
  const from = relative(ROOT, file);
  const edges: Edge[] = [];
  const patterns = [/\b(?:import|export)\s+(?:type\s+)?([^'";]*?)\s*from\s*['"]([^'"]+)['"]/g, /\bimport\s*\(\s*['"]([^'"]+)['"]\s*\)/g, /^\s*import\s+['"]([^'"]+)['"]/gm];
  for (const [index, pattern] of patterns.entries()) {
    for (const match of text.matchAll(pattern)) {
      const spec = index === 0 ? match[2] : match[1];
      const clause = index === 0 ? match[1] : '';
      const names = [...clause.matchAll(/([A-Za-z_$][\w$]*)(?:\s+as\s+[\w$]+)?/g)].map((m) => m[1]).filter((n) => n !== 'type' && n !== 'as');
      const to = spec.startsWith('.') ? relative(ROOT, resolve(dirname(file), spec)).replace(/\.(js|ts)$/, '') : spec;
      edges.push({ from, spec, to, names, line: text.slice(0, match.index).split('\n').length });
    }
  }
  return edges;
}

const files = sourceFiles(SRC);
const edges = files.flatMap((file) => importsOf(file, readFileSync(file, 'utf8')));

const inRoom = (path: string, room: string) => path === `src/${room}` || path.startsWith(`src/${room}/`);
const show = (e: Edge) => `${e.from}:${e.line} imports '${e.spec}'`;

interface Wall {
  name: string;
  crosses(edge: Edge): boolean;
}

const ENGINE_ROOMS = ['postgres', 'redis'];
const ABOVE_ENGINES = ['backup', 'commands', 'actions', 'cli', 'drill', 'deploy', 'tenant', 'storage', 'preflight', 'manifest', 'metrics', 'notify'];
const FS_WRITES = ['createWriteStream', 'writeFile', 'writeFileSync', 'appendFile', 'appendFileSync', 'rename', 'renameSync', 'copyFile', 'copyFileSync'];

const WALLS: Wall[] = [
  { name: 'commands/ does not import actions/ (the artifact store comes through the command context)', crosses: (e) => inRoom(e.from, 'commands') && inRoom(e.to, 'actions') },
  { name: 'preflight/ does not import commands/ (not even types)', crosses: (e) => inRoom(e.from, 'preflight') && inRoom(e.to, 'commands') },
  {
    // preflight/ has its own wall above. Inputs are parsed into typed objects at the door; a domain that imported commands/ could read them by name again.
    name: 'only the doors (commands/, actions/, cli/) import commands/: domains get typed settings, never the input reader',
    crosses: (e) => !['commands', 'actions', 'cli', 'preflight'].some((r) => inRoom(e.from, r)) && inRoom(e.to, 'commands'),
  },
  { name: 'postgres/ and redis/ do not import each other', crosses: (e) => (inRoom(e.from, 'postgres') && inRoom(e.to, 'redis')) || (inRoom(e.from, 'redis') && inRoom(e.to, 'postgres')) },
  {
    name: 'engine code (postgres/, redis/) knows nothing of entries or of the rooms above it',
    crosses: (e) => ENGINE_ROOMS.some((r) => inRoom(e.from, r)) && ABOVE_ENGINES.some((r) => inRoom(e.to, r)),
  },
  { name: 'only runner/ spawns processes (node:child_process)', crosses: (e) => !inRoom(e.from, 'runner') && /^(node:)?child_process$/.test(e.to) },
  {
    name: 'engine code that writes into a staged entry writes through the catalog (no fs writes beside a catalog import)',
    crosses: (e) =>
      ENGINE_ROOMS.some((r) => inRoom(e.from, r)) &&
      /^(node:)?fs(\/promises)?$/.test(e.to) &&
      e.names.some((n) => FS_WRITES.includes(n)) &&
      edges.some((o) => o.from === e.from && inRoom(o.to, 'catalog')),
  },
  {
    name: 'settings/ does not import postgres/ (or any domain room)',
    crosses: (e) => inRoom(e.from, 'settings') && [...ENGINE_ROOMS, ...ABOVE_ENGINES, 'runner', 'catalog'].some((r) => inRoom(e.to, r)),
  },
  { name: "backup/ does not import drill/ (retention is handed the gate's judgement)", crosses: (e) => inRoom(e.from, 'backup') && inRoom(e.to, 'drill') },
  {
    name: 'backup/ drives a live Redis through the engine (redis/): it builds no redis-cli command line of its own',
    crosses: (e) => inRoom(e.from, 'backup') && inRoom(e.to, 'redis') && e.names.includes('redisCli'),
  },
  {
    name: 'the drill verdict is pure: src/drill/verdict.ts imports only the report and RPO types and duration formatting',
    crosses: (e) => e.from === 'src/drill/verdict.ts' && !['src/drill/report', 'src/drill/rpo', 'src/settings/duration'].includes(e.to),
  },
  { name: 'no product code imports test or bench support, and src/sample/ and src/tar.ts are gone', crosses: (e) => /^(test|bench)\//.test(e.to) || e.to === 'src/tar' || inRoom(e.to, 'sample') },
];

/** backup/ orchestrates; docker cp, docker top and the other container steps are engine code (redis/, postgres/) or runner/. */
export function dockerArgvIn(from: string, text: string): string[] {
  if (!inRoom(from, 'backup')) return [];
  return [...text.matchAll(/\btool:\s*['"]docker['"]/g)].map((m) => `${from}:${text.slice(0, m.index).split('\n').length} spells a docker command line`);
}

describe('import walls (issue #23, ARCHITECTURE.md)', () => {
  it('reads the import graph of src/', () => {
    // A broken reader would hold every wall: make sure it sees the imports it must see.
    expect(files.length).toBeGreaterThan(100);
    expect(edges.some((e) => e.from === 'src/backup/create.ts' && e.to === 'src/redis/snapshot' && e.names.includes('snapshotRedis'))).toBe(true);
    expect(edges.some((e) => e.from === 'src/runner/runner.ts' && /child_process$/.test(e.to))).toBe(true);
    expect(edges.some((e) => e.from === 'src/cli/main.ts' && e.spec === '../actions/artifact-store')).toBe(true);
  });

  for (const wall of WALLS) {
    it(wall.name, () => {
      expect(edges.filter((e) => wall.crosses(e)).map(show)).toEqual([]);
    });
  }

  it('backup/ spells no docker command line (container steps are engine code)', () => {
    expect(files.flatMap((file) => dockerArgvIn(relative(ROOT, file), readFileSync(file, 'utf8')))).toEqual([]);
    // The check sees the spelling the Redis container steps used before they moved to src/redis/.
    expect(dockerArgvIn('src/backup/redis-live-restore.ts', "const top = await runText(runner, { tool: 'docker', args: ['top', container] });")).toHaveLength(1);
    expect(dockerArgvIn('src/redis/container-files.ts', "const top = await runText(runner, { tool: 'docker', args: ['top', container] });")).toEqual([]);
  });

  it('each wall catches the crossing it names (checked on imports written for the test)', () => {
    const probe = (from: string, text: string) => importsOf(join(ROOT, from), text);
    const crossings = (from: string, text: string) => WALLS.filter((w) => probe(from, text).some((e) => w.crosses(e))).map((w) => w.name);
    expect(crossings('src/commands/sync.ts', "const m = await import('../actions/artifact-store');")).toHaveLength(1);
    expect(crossings('src/preflight/report.ts', "import type { Annotation } from '../commands/spec';")).toHaveLength(1);
    expect(crossings('src/redis/snapshot.ts', "import {\n  REDIS_SNAPSHOT_FILE,\n} from '../postgres/metadata';")).toHaveLength(1);
    expect(crossings('src/redis/snapshot.ts', "import { REDIS_SNAPSHOT_FILE } from '../backup/metadata';")).toHaveLength(1);
    expect(crossings('src/postgres/cluster.ts', "import { spawn } from 'node:child_process';")).toHaveLength(1);
    expect(crossings('src/settings/resolve.ts', "import { parseCompression } from '../postgres/compression';")).toHaveLength(1);
    expect(crossings('src/backup/retention.ts', "import { believedPassingDrills } from '../drill/gate';")).toHaveLength(1);
    expect(crossings('src/drill/app-check.ts', "import { tarStream } from '../tar';")).toHaveLength(1);
    expect(crossings('src/backup/redis-live-restore.ts', "import { redisCli, redisKeyspace } from '../redis/snapshot';")).toHaveLength(1);
    expect(crossings('src/backup/redis-live-restore.ts', "import { redisKeyspace } from '../redis/snapshot';")).toEqual([]);
    expect(crossings('src/drill/verdict.ts', "import { queryOnce } from '../runner/psql';")).toHaveLength(1);
    expect(crossings('src/drill/verdict.ts', "import { readFileSync } from 'node:fs';")).toHaveLength(1);
    expect(crossings('src/drill/verdict.ts', "import type { DrillCheck } from './report';")).toEqual([]);
    expect(crossings('src/postgres/x.ts', "export { loadSampleDataset } from '../../test/helpers/sample-dataset';")).toHaveLength(1);
    // The staged-entry write wall needs the file's own catalog import, as snapshot.ts has.
    const snapshot = relative(ROOT, join(SRC, 'redis/snapshot.ts'));
    const write = probe(snapshot, "import { createReadStream, createWriteStream } from 'node:fs';")[0];
    expect(WALLS.some((w) => w.crosses(write))).toBe(true);
    expect(crossings('src/backup/restore.ts', "import { declaredInputs, type CommandContext } from '../commands/spec';")).toHaveLength(1);
    expect(crossings('src/drill/drill.ts', "import type { DrillInputs } from '../commands/drill';")).toHaveLength(1);
    expect(crossings('src/cli/main.ts', "import { allInputs, Inputs } from '../commands/spec';")).toEqual([]);
    expect(crossings('src/backup/create.ts', "import { snapshotRedis } from '../redis/snapshot';")).toEqual([]);
  });
});

// Compose in one place (issue #23): the walls above read imports; these read the code itself
// (comments left out), since a Compose command line is spelled in strings, not imported. A
// backquoted name inside a message (`docker compose config -q`) is prose and does not count.

/** The code of a file without its comments (a `//` only after whitespace or at a line's start, so URLs in strings stay). */
function codeOf(text: string): string {
  return text.replace(/\/\*[\s\S]*?\*\//g, '').replace(/(^|\s)\/\/.*$/gm, '$1');
}

interface TextWall {
  name: string;
  /** The offending snippets of a file's code (empty when the wall holds). */
  crossings(from: string, code: string): string[];
}

const TEXT_WALLS: TextWall[] = [
  {
    // settings/ may name the configured value (compose.command: docker-compose); nothing else outside runner/ spells the CLI, its argv or its labels.
    name: "only runner/compose.ts spells a Compose command line ('docker-compose', ['compose', ...], Compose's labels)",
    crossings: (from, code) =>
      inRoom(from, 'runner') || inRoom(from, 'settings') ? [] : [...code.matchAll(/(['"])(?:docker-compose|docker compose|compose)\1|com\.docker\.compose\.[a-z]+/g)].map((m) => `${from}: ${m[0]}`),
  },
  {
    // composeInvocation builds an argv from any words: outside the driver, callers use its methods (up, stop, start, serviceContainerIds...).
    name: 'no file outside runner/ builds its own Compose call with composeInvocation',
    crossings: (from, code) => (inRoom(from, 'runner') ? [] : [...code.matchAll(/\bcomposeInvocation\b/g)].map((m) => `${from}: ${m[0]}`)),
  },
  {
    name: 'only runner/ builds a runner in a container (ContainerRunner, ImageRunner, ComposeRunner: runner/factory.ts)',
    crossings: (from, code) => (inRoom(from, 'runner') ? [] : [...code.matchAll(/\bnew\s+(?:ContainerRunner|ImageRunner|ComposeRunner)\b/g)].map((m) => `${from}: ${m[0]}`)),
  },
];

describe('Compose walls (issue #23: one Compose driver, one runner factory)', () => {
  for (const wall of TEXT_WALLS) {
    it(wall.name, () => {
      expect(files.flatMap((file) => wall.crossings(relative(ROOT, file), codeOf(readFileSync(file, 'utf8'))))).toEqual([]);
    });
  }

  it('each Compose wall catches the crossing it names (checked on code written for the test)', () => {
    const crossings = (from: string, text: string) => TEXT_WALLS.filter((w) => w.crossings(from, codeOf(text)).length > 0).map((w) => w.name);
    expect(crossings('src/deploy/deploy.ts', "await runText(runner, { tool: 'docker', args: ['compose', '-f', file, 'up', '-d'] });")).toHaveLength(1);
    expect(crossings('src/backup/redis-live-restore.ts', 'const cli = settings.compose.command === "docker-compose" ? ["docker-compose"] : ["docker", "compose"];')).toHaveLength(1);
    expect(crossings('src/postgres/connection.ts', 'const labels = [`com.docker.compose.project=${name}`];')).toHaveLength(1);
    expect(crossings('src/drill/runbook.ts', "const cli = 'docker compose';")).toHaveLength(1);
    expect(crossings('src/backup/redis-live-restore.ts', "import { ComposeDriver, composeInvocation } from '../runner/compose';")).toHaveLength(1);
    expect(crossings('src/commands/backup.ts', 'return new ContainerRunner({ container, where });')).toHaveLength(1);
    expect(crossings('src/preflight/run.ts', "const r = new ImageRunner({ image, where: 'x' });")).toHaveLength(1);
    // The driver itself, the settings' enum, comments and messages that only mention Compose do not cross.
    expect(crossings('src/runner/compose.ts', "export const COMPOSE_V1 = ['docker-compose'];")).toEqual([]);
    expect(crossings('src/settings/schema.ts', "command: z.enum(['auto', 'docker compose', 'docker-compose'])")).toEqual([]);
    expect(
      crossings(
        'src/preflight/docker.ts',
        "// v1 `docker-compose` is slow\nconst fix = 'install the Docker Compose plugin (docker-compose-plugin) or docker-compose; `docker-compose` (v1) also works';",
      ),
    ).toEqual([]);
    expect(crossings('src/backup/redis-live-restore.ts', 'const inContainer = serviceContainerRunner(container, service);')).toEqual([]);
  });
});
