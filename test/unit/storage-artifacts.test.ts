import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { githubArtifactStore } from '../../src/actions/artifact-store';
import { Catalog } from '../../src/catalog/store';
import { createFetchCommand, createSyncCommand } from '../../src/commands/sync';
import { Inputs, type CommandSpec, type RawValue } from '../../src/commands/spec';
import { createMemoryLogger } from '../../src/logger';
import { artifactNamePrefix, fetchNewestArtifact, uploadNewestAsArtifacts, type ArtifactRef, type ArtifactStore } from '../../src/storage/artifacts';
import { writeTestEntry } from '../helpers/s3';

const scratch: string[] = [];
afterAll(() => {
  for (const dir of scratch) rmSync(dir, { recursive: true, force: true });
});
function tempDir(name: string): string {
  const dir = mkdtempSync(join(tmpdir(), `lifeline-${name}-`));
  scratch.push(dir);
  return dir;
}

/**
 * GitHub's artifact service at its boundary: artifacts are directories of files, listed newest
 * first across "runs", exactly the contract the real adapter provides.
 */
class FakeArtifactService implements ArtifactStore {
  readonly root = tempDir('artifact-service');
  readonly stored: Array<ArtifactRef & { retentionDays?: number; files: string[] }> = [];
  private nextId = 1;

  async upload(name: string, files: string[], rootDirectory: string, options: { retentionDays?: number }) {
    const id = this.nextId++;
    mkdirSync(join(this.root, String(id)));
    for (const file of files) {
      expect(file.startsWith(rootDirectory)).toBe(true);
      copyFileSync(file, join(this.root, String(id), basename(file)));
    }
    this.stored.push({
      id,
      name,
      createdAt: new Date(Date.UTC(2026, 10, 21, 0, id)).toISOString(),
      workflowRunId: 1000 + id,
      retentionDays: options.retentionDays,
      files: files.map((f) => basename(f)),
    });
    return { id, size: 0 };
  }

  async findNewest(namePrefix: string) {
    return [...this.stored].reverse().find((a) => a.name.startsWith(namePrefix));
  }

  async download(artifact: ArtifactRef, destination: string) {
    for (const file of readdirSync(join(this.root, String(artifact.id)))) copyFileSync(join(this.root, String(artifact.id), file), join(destination, file));
  }

  pathOf(name: string, file: string): string {
    return join(this.root, String(this.stored.find((a) => a.name === name)!.id), file);
  }
}

async function seed(store: string) {
  const catalog = new Catalog(store);
  await writeTestEntry(catalog, 'production', 'backups', '20261120T010000000Z-aaaaaa', 'backup.json', { 'postgres.dump': 300_000 }, {}, '2026-11-20T01:00:00.000Z');
  await writeTestEntry(
    catalog,
    'production',
    'backups',
    '20261121T010000000Z-bbbbbb',
    'backup.json',
    { 'postgres.dump': 200_000, 'globals.sql': 'CREATE ROLE app;\n' },
    {},
    '2026-11-21T01:00:00.000Z',
  );
  await writeTestEntry(catalog, 'production', 'drills', '20261121T020000000Z-cccccc', 'report.json', { 'report.md': '# ok\n' }, {}, '2026-11-21T02:00:00.000Z');
  return catalog;
}

describe('workflow artifacts (fake artifact service)', () => {
  it('keeps the newest entry of each kind with the retention asked for, and a later run imports the newest backup verified', async () => {
    const store = tempDir('store');
    await seed(store);
    const service = new FakeArtifactService();
    const uploads = await uploadNewestAsArtifacts({ env: 'production', store, artifacts: service, retentionDays: 14, logger: createMemoryLogger() });
    expect(uploads.map((u) => u.name).sort()).toEqual(['lifeline-production-backups-20261121T010000000Z-bbbbbb', 'lifeline-production-drills-20261121T020000000Z-cccccc']);
    expect(service.stored.every((a) => a.retentionDays === 14)).toBe(true);
    expect(service.stored.find((a) => a.name.includes('backups'))!.files.sort()).toEqual(['SHA256SUMS', 'backup.json', 'globals.sql', 'postgres.dump']);

    const drillHost = tempDir('drill-host');
    const catalog = new Catalog(drillHost);
    const result = await fetchNewestArtifact({ env: 'production', kind: 'backups', catalog, artifacts: service, logger: createMemoryLogger() });
    expect(result.fetched).toBe(true);
    expect(result.entry.id).toBe('20261121T010000000Z-bbbbbb');
    const [listed] = await catalog.list('production', 'backups', 'backup.json');
    expect(readFileSync(join(listed!.dir, 'postgres.dump')).equals(readFileSync(join(store, 'production', 'backups', listed!.id, 'postgres.dump')))).toBe(true);
    const again = await fetchNewestArtifact({ env: 'production', kind: 'backups', catalog, artifacts: service, logger: createMemoryLogger() });
    expect(again.fetched).toBe(false);
  });

  it('refuses a tampered artifact: nothing enters the catalog', async () => {
    const store = tempDir('store');
    await seed(store);
    const service = new FakeArtifactService();
    await uploadNewestAsArtifacts({ env: 'production', store, kinds: ['backups'], artifacts: service, logger: createMemoryLogger() });
    const path = service.pathOf('lifeline-production-backups-20261121T010000000Z-bbbbbb', 'postgres.dump');
    const bytes = readFileSync(path);
    bytes[1000] = bytes[1000]! ^ 0xff;
    writeFileSync(path, bytes);

    const drillHost = tempDir('drill-host');
    const catalog = new Catalog(drillHost);
    await expect(fetchNewestArtifact({ env: 'production', kind: 'backups', catalog, artifacts: service, logger: createMemoryLogger() })).rejects.toMatchObject({
      code: 'REMOTE_CHECKSUM_MISMATCH',
      exitCode: 1,
    });
    expect(await catalog.list('production', 'backups', 'backup.json')).toEqual([]);
    expect(readdirSync(join(drillHost, 'production', 'backups'))).toEqual([]);
  });

  it('says there is nothing to fetch (exit 2) when no artifact matches', async () => {
    await expect(
      fetchNewestArtifact({ env: 'production', kind: 'backups', catalog: new Catalog(tempDir('empty')), artifacts: new FakeArtifactService(), logger: createMemoryLogger() }),
    ).rejects.toMatchObject({ code: 'ARTIFACT_NOT_FOUND', exitCode: 2 });
    expect(artifactNamePrefix('production', 'tenants/acme/exports')).toBe('lifeline-production-tenants-acme-exports-');
  });
});

function runCommand(spec: CommandSpec, values: Record<string, RawValue>, env: Record<string, string | undefined> = {}) {
  return spec.run({ inputs: new Inputs(spec, values), env, cwd: tempDir('cwd'), logger: createMemoryLogger(), interactive: false });
}

describe('sync and fetch commands with artifacts', () => {
  it('sync --to artifact and fetch --from artifact run through the same doors the action uses', async () => {
    const store = tempDir('store');
    await seed(store);
    const service = new FakeArtifactService();
    const doors = { artifactStore: async () => service };
    const sync = await runCommand(createSyncCommand(doors), { env: 'production', store, to: 'artifact', 'artifact-retention-days': '7' });
    expect(sync.exitCode).toBe(0);
    expect(sync.outputs?.artifacts?.split('\n').sort()).toEqual(['lifeline-production-backups-20261121T010000000Z-bbbbbb', 'lifeline-production-drills-20261121T020000000Z-cccccc']);
    expect(service.stored.every((a) => a.retentionDays === 7)).toBe(true);

    const other = tempDir('other');
    const fetched = await runCommand(createFetchCommand(doors), { env: 'production', store: other, from: 'artifact', kind: 'drills' });
    expect(fetched.outputs).toMatchObject({ id: '20261121T020000000Z-cccccc', fetched: 'true' });
  });

  it('rejects a bad retention and refuses artifacts outside GitHub Actions (exit 2)', async () => {
    const store = tempDir('store');
    await expect(runCommand(createSyncCommand({ artifactStore: async () => new FakeArtifactService() }), { store, to: 'artifact', 'artifact-retention-days': '400' })).rejects.toMatchObject({
      exitCode: 2,
    });
    await expect(runCommand(createSyncCommand(), { store, to: 'artifact' }, {})).rejects.toMatchObject({ code: 'ARTIFACTS_UNAVAILABLE', exitCode: 2 });
  });
});

describe('GitHub artifact adapter: finding the newest across runs', () => {
  let server: Server | undefined;
  afterAll(() => server?.close());

  it('pages through the repository listing, newest first, skipping expired and other names', async () => {
    const seen: string[] = [];
    const page1 = Array.from({ length: 100 }, (_, i) => ({ id: 500 - i, name: `other-${i}`, expired: false }));
    const page2 = [
      { id: 300, name: 'lifeline-production-backups-20261121T010000000Z-bbbbbb', expired: true, workflow_run: { id: 41 } },
      { id: 299, name: 'lifeline-production-backups-20261120T010000000Z-aaaaaa', expired: false, created_at: '2026-11-20T01:10:00Z', workflow_run: { id: 40 } },
    ];
    server = createServer((request, response) => {
      seen.push(`${request.url} ${request.headers.authorization}`);
      const page = new URL(request.url!, 'http://x').searchParams.get('page');
      response.setHeader('content-type', 'application/json');
      response.end(JSON.stringify({ artifacts: page === '1' ? page1 : page === '2' ? page2 : [] }));
    });
    await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as { port: number }).port;
    const store = githubArtifactStore({ GITHUB_REPOSITORY: 'shop/platform', GITHUB_API_URL: `http://127.0.0.1:${port}` }, 'token-123');
    const newest = await store.findNewest('lifeline-production-backups-');
    expect(newest).toEqual({ id: 299, name: 'lifeline-production-backups-20261120T010000000Z-aaaaaa', createdAt: '2026-11-20T01:10:00Z', workflowRunId: 40 });
    expect(seen).toEqual(['/repos/shop/platform/actions/artifacts?per_page=100&page=1 Bearer token-123', '/repos/shop/platform/actions/artifacts?per_page=100&page=2 Bearer token-123']);
  });

  it('asks for a token before calling GitHub', async () => {
    await expect(githubArtifactStore({ GITHUB_REPOSITORY: 'shop/platform' }, undefined).findNewest('x')).rejects.toMatchObject({ code: 'ARTIFACTS_UNAVAILABLE', exitCode: 2 });
  });
});
