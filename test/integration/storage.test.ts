import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sha256File } from '../../src/catalog/files';
import { Catalog } from '../../src/catalog/store';
import { createMemoryLogger } from '../../src/logger';
import type { StorageSettings } from '../../src/settings/resolve';
import { s3StoreFor, type S3ObjectStore } from '../../src/storage/object-store';
import { compareRemote, fetchEntry, syncEnvironment } from '../../src/storage/sync';
import { lifeline, parseGithubOutput, runBundle } from '../helpers/cli';
import { startFaultProxy, startS3Server, writeTestEntry, type TestS3Server } from '../helpers/s3';

const MiB = 1024 * 1024;
const ENV = 'production';

let s3: TestS3Server;
const scratch: string[] = [];

beforeAll(async () => {
  s3 = await startS3Server();
});

afterAll(async () => {
  await s3?.close();
  for (const dir of scratch) rmSync(dir, { recursive: true, force: true });
});

function tempDir(name: string): string {
  const dir = mkdtempSync(join(tmpdir(), `lifeline-${name}-`));
  scratch.push(dir);
  return dir;
}

/** Each test gets its own prefix in the one bucket, so tests cannot see each other's objects. */
function storageSettings(prefix = `t-${randomBytes(4).toString('hex')}`): StorageSettings {
  const settings: StorageSettings = {
    provider: 's3',
    endpoint: s3.endpoint,
    region: 'us-east-1',
    bucket: s3.bucket,
    prefix: `${prefix}/`,
    credentialEnv: { accessKeyId: 'TEST_S3_KEY', secretAccessKey: 'TEST_S3_SECRET' },
    reviewed: { provider: 's3rver', by: 'test', date: '2026-11-21' },
  };
  Object.defineProperty(settings, 'credentials', { value: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey }, enumerable: false });
  return settings;
}

function bucketStore(storage: StorageSettings, store: string, concurrency?: number): S3ObjectStore {
  return s3StoreFor(storage, { journalDir: join(store, '.sync', ENV, 'uploads'), partSize: 5 * MiB, concurrency });
}

/** One entry of every kind, the backup big enough for a 3-part multipart upload. */
async function seedCatalog(store: string): Promise<Catalog> {
  const catalog = new Catalog(store);
  await writeTestEntry(
    catalog,
    ENV,
    'backups',
    '20261120T010000000Z-aaaaaa',
    'backup.json',
    { 'postgres.dump': 12 * MiB, 'globals.sql': 'CREATE ROLE app;\n' },
    { verified: { at: '2026-11-20T01:05:00Z', ok: true, checks: [] } },
    '2026-11-20T01:00:00.000Z',
  );
  await writeTestEntry(catalog, ENV, 'releases', 'v1.4.2', 'release.json', { 'manifest.json': '{"subject":[]}\n', 'manifest.sigstore.json': '{}\n' }, {}, '2026-11-20T02:00:00.000Z');
  await writeTestEntry(catalog, ENV, 'drills', '20261120T030000000Z-bbbbbb', 'report.json', { 'report.md': '# drill\npassed\n' }, {}, '2026-11-20T03:00:00.000Z');
  await writeTestEntry(catalog, ENV, 'tenants/acme/exports', '20261120T040000000Z-cccccc', 'export.json', { 'orders.ndjson': '{"id":1}\n' }, {}, '2026-11-20T04:00:00.000Z');
  return catalog;
}

async function remoteKeys(store: S3ObjectStore, prefix: string): Promise<string[]> {
  const keys: string[] = [];
  for await (const object of store.list(prefix)) keys.push(object.key);
  return keys.sort();
}

const sha = async (path: string) => (await sha256File(path)).sha256;

describe('sync to an S3-compatible bucket', () => {
  it('uploads every kind with its sha256 recorded, metadata last, and skips what is already there', async () => {
    const store = tempDir('store');
    await seedCatalog(store);
    const storage = storageSettings();
    const remote = bucketStore(storage, store);
    const logger = createMemoryLogger();

    const report = await syncEnvironment({ env: ENV, store, remote, prefix: storage.prefix, logger });
    expect(report.failed).toBe(0);
    expect(report.entries.map((e) => `${e.kind}/${e.id}:${e.status}`).sort()).toEqual([
      'backups/20261120T010000000Z-aaaaaa:uploaded',
      'drills/20261120T030000000Z-bbbbbb:uploaded',
      'releases/v1.4.2:uploaded',
      'tenants/acme/exports/20261120T040000000Z-cccccc:uploaded',
    ]);
    const backupPrefix = `${storage.prefix}${ENV}/backups/20261120T010000000Z-aaaaaa/`;
    expect(await remoteKeys(remote, backupPrefix)).toEqual(['SHA256SUMS', 'backup.json', 'globals.sql', 'postgres.dump'].map((f) => backupPrefix + f));
    const dumpPath = join(store, ENV, 'backups', '20261120T010000000Z-aaaaaa', 'postgres.dump');
    const head = await remote.head(`${backupPrefix}postgres.dump`);
    expect(head).toMatchObject({ size: 12 * MiB, metadata: { sha256: await sha(dumpPath) } });
    // The multipart path really ran: three parts of 5 MiB at most, each its own PUT.
    expect(s3.requests.filter((r) => r.method === 'PUT' && r.url.includes(backupPrefix + 'postgres.dump') && r.url.includes('partNumber=')).length).toBe(3);
    // The metadata file is the last object of each entry to arrive.
    const puts = s3.requests.filter((r) => r.method === 'PUT' || r.method === 'POST').map((r) => r.url);
    const lastForBackup = puts.filter((u) => u.includes('20261120T010000000Z-aaaaaa')).at(-1);
    expect(lastForBackup).toContain('backup.json');

    const before = s3.requests.length;
    const again = await syncEnvironment({ env: ENV, store, remote, prefix: storage.prefix, logger });
    expect(again.entries.every((e) => e.status === 'present')).toBe(true);
    expect(s3.requests.slice(before).filter((r) => r.method !== 'GET' && r.method !== 'HEAD')).toEqual([]);
  });

  it('resumes an interrupted multipart upload, sending only the parts that are missing, and shows nothing complete meanwhile', async () => {
    const store = tempDir('store');
    const catalog = new Catalog(store);
    await writeTestEntry(catalog, ENV, 'backups', '20261121T010000000Z-dddddd', 'backup.json', { 'postgres.dump': 17 * MiB }, {}, '2026-11-21T01:00:00.000Z');
    const storage = storageSettings();
    // One part in flight, and the connection cut on every attempt at part 3 (the SDK retries a
    // cut connection): the first run leaves exactly parts 1 and 2 on the server.
    const proxy = await startFaultProxy(s3.endpoint, ({ url }) => (url.includes('partNumber=3') ? 'cut' : 'pass'));
    try {
      const viaProxy = { ...storage, endpoint: proxy.endpoint };
      Object.defineProperty(viaProxy, 'credentials', { value: storage.credentials, enumerable: false });
      const interrupted = await syncEnvironment({ env: ENV, store, remote: bucketStore(viaProxy, store, 1), prefix: storage.prefix, logger: createMemoryLogger() });
      expect(interrupted.failed).toBe(1);
      expect(interrupted.entries[0]!.reason).toMatch(/cannot reach the object store/);
      expect(proxy.seen.filter((r) => r.decision === 'cut').length).toBe(5);
    } finally {
      await proxy.close();
    }

    const remote = bucketStore(storage, store);
    const entryPrefix = `${storage.prefix}${ENV}/backups/20261121T010000000Z-dddddd/`;
    expect(await remote.head(`${entryPrefix}postgres.dump`)).toBeUndefined();
    expect(await remoteKeys(remote, entryPrefix)).toEqual([]);
    const midway = await compareRemote({ env: ENV, store, remote, prefix: storage.prefix });
    expect(midway.missingRemotely.map((e) => e.id)).toEqual(['20261121T010000000Z-dddddd']);
    expect(midway.inSync).toEqual([]);

    const before = s3.requests.length;
    const resumed = await syncEnvironment({ env: ENV, store, remote, prefix: storage.prefix, logger: createMemoryLogger() });
    expect(resumed.entries[0]).toMatchObject({ status: 'uploaded', resumedParts: 2 });
    const partPuts = s3.requests
      .slice(before)
      .filter((r) => r.method === 'PUT' && r.url.includes('partNumber='))
      .map((r) => Number(/partNumber=(\d+)/.exec(r.url)![1]));
    expect(partPuts.sort()).toEqual([3, 4]);

    const fetchedStore = tempDir('fetched');
    const fetched = await fetchEntry({ env: ENV, kind: 'backups', id: '20261121T010000000Z-dddddd', catalog: new Catalog(fetchedStore), remote, prefix: storage.prefix, logger: createMemoryLogger() });
    expect(fetched.fetched).toBe(true);
    expect(await sha(join(fetched.entry.dir, 'postgres.dump'))).toBe(await sha(join(store, ENV, 'backups', '20261121T010000000Z-dddddd', 'postgres.dump')));
    expect(existsSync(join(store, '.sync', ENV, 'uploads')) ? readdirSync(join(store, '.sync', ENV, 'uploads')) : []).toEqual([]);
  });

  it('lists and fetches the newest backup from the bucket into an empty catalog, ready for a restore', async () => {
    const store = tempDir('store');
    const catalog = await seedCatalog(store);
    await writeTestEntry(catalog, ENV, 'backups', '20261119T010000000Z-eeeeee', 'backup.json', { 'postgres.dump': 1000 }, {}, '2026-11-19T01:00:00.000Z');
    const storage = storageSettings();
    const remote = bucketStore(storage, store);
    await syncEnvironment({ env: ENV, store, remote, prefix: storage.prefix, logger: createMemoryLogger() });

    const elsewhere = tempDir('other-host');
    const other = new Catalog(elsewhere);
    const listed = await compareRemote({ env: ENV, store: elsewhere, remote, prefix: storage.prefix });
    expect(listed.missingLocally.map((e) => `${e.kind}/${e.id}`).sort()).toEqual([
      'backups/20261119T010000000Z-eeeeee',
      'backups/20261120T010000000Z-aaaaaa',
      'drills/20261120T030000000Z-bbbbbb',
      'releases/v1.4.2',
      'tenants/acme/exports/20261120T040000000Z-cccccc',
    ]);

    const result = await fetchEntry({ env: ENV, kind: 'backups', id: 'latest', catalog: other, remote, prefix: storage.prefix, logger: createMemoryLogger() });
    expect(result.entry.id).toBe('20261120T010000000Z-aaaaaa');
    const [newest] = await other.list(ENV, 'backups', 'backup.json');
    expect(newest?.id).toBe('20261120T010000000Z-aaaaaa');
    for (const file of ['postgres.dump', 'globals.sql', 'SHA256SUMS', 'backup.json']) {
      expect(readFileSync(join(newest!.dir, file)).equals(readFileSync(join(store, ENV, 'backups', newest!.id, file))), file).toBe(true);
    }
    const tenant = await fetchEntry({ env: ENV, kind: 'tenants/acme/exports', id: 'latest', catalog: other, remote, prefix: storage.prefix, logger: createMemoryLogger() });
    expect(tenant.entry.metadata.id).toBe('20261120T040000000Z-cccccc');

    const afterFetch = await compareRemote({ env: ENV, store: elsewhere, remote, prefix: storage.prefix });
    expect(afterFetch.inSync.map((e) => e.id).sort()).toEqual(['20261120T010000000Z-aaaaaa', '20261120T040000000Z-cccccc']);
    expect(afterFetch.mismatched).toEqual([]);
  });

  it('detects an object corrupted on the server: fetch refuses it and leaves nothing behind, deep compare names the file', async () => {
    const store = tempDir('store');
    await seedCatalog(store);
    const storage = storageSettings();
    const remote = bucketStore(storage, store);
    await syncEnvironment({ env: ENV, store, remote, prefix: storage.prefix, logger: createMemoryLogger() });
    const key = `${storage.prefix}${ENV}/backups/20261120T010000000Z-aaaaaa/postgres.dump`;
    const onDisk = await open(s3.objectPath(key), 'r+');
    await onDisk.write(Buffer.from('XXXX'), 0, 4, 6 * MiB);
    await onDisk.close();

    const elsewhere = tempDir('other-host');
    const other = new Catalog(elsewhere);
    await expect(fetchEntry({ env: ENV, kind: 'backups', id: '20261120T010000000Z-aaaaaa', catalog: other, remote, prefix: storage.prefix, logger: createMemoryLogger() })).rejects.toMatchObject({
      code: 'REMOTE_CHECKSUM_MISMATCH',
      exitCode: 1,
    });
    expect(await other.list(ENV, 'backups', 'backup.json')).toEqual([]);
    expect(readdirSync(join(elsewhere, ENV, 'backups'))).toEqual([]);

    const shallow = await compareRemote({ env: ENV, store, remote, prefix: storage.prefix });
    expect(shallow.mismatched).toEqual([]);
    const deep = await compareRemote({ env: ENV, store, remote, prefix: storage.prefix, deep: true });
    expect(deep.mismatched).toEqual([expect.objectContaining({ kind: 'backups', id: '20261120T010000000Z-aaaaaa', file: 'postgres.dump' })]);
    expect(deep.inSync).toHaveLength(3);
  });

  it('refuses to ship a local entry that fails its own SHA256SUMS or its verification, and sends none of it', async () => {
    const store = tempDir('store');
    const catalog = await seedCatalog(store);
    await writeTestEntry(catalog, ENV, 'backups', '20261121T020000000Z-ffffff', 'backup.json', { 'postgres.dump': 2000 }, { verified: { at: '2026-11-21T02:01:00Z', ok: false, checks: [] } });
    writeFileSync(join(store, ENV, 'drills', '20261120T030000000Z-bbbbbb', 'report.md'), '# drill\nfailed\n');
    const storage = storageSettings();
    const remote = bucketStore(storage, store);
    const logger = createMemoryLogger();
    const report = await syncEnvironment({ env: ENV, store, remote, prefix: storage.prefix, logger });
    expect(report.failed).toBe(2);
    expect(report.uploaded).toBe(3);
    expect(report.entries.find((e) => e.kind === 'drills')?.reason).toMatch(/SHA256SUMS check failed for report\.md/);
    expect(report.entries.find((e) => e.id === '20261121T020000000Z-ffffff')?.reason).toMatch(/verification failed/);
    expect(await remoteKeys(remote, `${storage.prefix}${ENV}/drills/`)).toEqual([]);
    expect(await remoteKeys(remote, `${storage.prefix}${ENV}/backups/20261121T020000000Z-ffffff/`)).toEqual([]);
  });
});

describe('object store errors', () => {
  it('names a missing bucket with the fix (exit 1), before any upload', async () => {
    const store = tempDir('store');
    await seedCatalog(store);
    const storage = { ...storageSettings(), bucket: 'no-such-bucket' };
    Object.defineProperty(storage, 'credentials', { value: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey }, enumerable: false });
    const remote = bucketStore(storage, store);
    await expect(syncEnvironment({ env: ENV, store, remote, prefix: storage.prefix, logger: createMemoryLogger() })).rejects.toMatchObject({
      code: 'NoSuchBucket',
      exitCode: 1,
      fix: expect.stringContaining('storage.bucket'),
    });
  });
});

describe('lifeline sync and fetch (CLI)', () => {
  function writeConfig(dir: string, prefix: string, reviewed: boolean): string {
    const path = join(dir, 'lifeline.yml');
    writeFileSync(
      path,
      [
        'version: 1',
        'environments:',
        '  production:',
        `    store: ${join(dir, 'store')}`,
        '    storage:',
        '      provider: s3',
        `      endpoint: ${s3.endpoint}`,
        '      region: us-east-1',
        `      bucket: ${s3.bucket}`,
        `      prefix: ${prefix}`,
        '      accessKeyIdEnv: SHOP_S3_KEY',
        '      secretAccessKeyEnv: SHOP_S3_SECRET',
        '      serverSideEncryption: AES256',
        '      objectLock: { mode: GOVERNANCE, days: 30 }',
        ...(reviewed ? ['      reviewed: { provider: s3rver, by: ops-lead, date: 2026-11-21 }'] : []),
        '',
      ].join('\n'),
    );
    return path;
  }
  const secret = 'shop-s3-secret-value-8c1f';
  const env = { SHOP_S3_KEY: 'S3RVER', SHOP_S3_SECRET: secret, LIFELINE_CONFIG: undefined, LIFELINE_STORE: undefined };

  it('refuses before review with exit 3 and the checklist, and no request reaches the server', async () => {
    const dir = tempDir('cli');
    await seedCatalog(join(dir, 'store'));
    const config = writeConfig(dir, 'refused', false);
    const before = s3.requests.length;
    const sync = await lifeline(['sync', '--config', config, '--env', ENV], { env });
    expect(sync.code).toBe(3);
    for (const item of ['data residency', 'encryption at rest', 'retention and object lock', 'access keys scoped to the prefix', 'deletion protection']) expect(sync.stderr).toContain(item);
    expect(sync.stderr).toContain('storage.reviewed');
    const fetchRun = await lifeline(['fetch', '--config', config, '--env', ENV, 'latest'], { env });
    expect(fetchRun.code).toBe(3);
    const compare = await lifeline(['sync', '--config', config, '--env', ENV, '--compare'], { env });
    expect(compare.code).toBe(3);
    expect(s3.requests.length).toBe(before);
  });

  it('syncs with --json, compares, fetches on another host, and never prints the secret key', async () => {
    const dir = tempDir('cli');
    await seedCatalog(join(dir, 'store'));
    const prefix = `cli-${randomBytes(3).toString('hex')}`;
    const config = writeConfig(dir, prefix, true);
    const before = s3.requests.length;
    const dryRun = await lifeline(['sync', '--config', config, '--env', ENV, '--dry-run', '--json'], { env });
    expect(dryRun.code).toBe(0);
    expect(JSON.parse(dryRun.stdout).bucket.entries.map((e: { status: string }) => e.status)).toEqual(['would-upload', 'would-upload', 'would-upload', 'would-upload']);
    expect(s3.requests.slice(before).filter((r) => r.method === 'PUT' || r.method === 'POST')).toEqual([]);
    const behind = await lifeline(['sync', '--config', config, '--env', ENV, '--compare'], { env });
    expect(behind.code).toBe(1);
    expect(behind.stdout + behind.stderr).toContain('4 missing remotely');

    const sync = await lifeline(['sync', '--config', config, '--env', ENV, '--json'], { env: { ...env, LIFELINE_PROGRESS_INTERVAL_MS: '0' } });
    expect(sync.stderr).not.toContain(secret);
    expect(sync.code).toBe(0);
    // Progress (#19): bytes the bucket holds of what it lacked, on stderr only, never a \r.
    expect(sync.stderr).toMatch(/^sync: [\d.]+ [KM]?B of [\d.]+ [KM]?B \(\d+%\)/m);
    expect(sync.stderr).toMatch(/^sync: ([\d.]+ [KM]?B) of \1 \(100%\).*\(done\)$/m);
    expect(sync.stderr + sync.stdout).not.toContain('\r');
    const json = JSON.parse(sync.stdout);
    expect(json.bucket.uploaded).toBe(4);
    expect(json.bucket.entries.map((e: { status: string }) => e.status)).toEqual(['uploaded', 'uploaded', 'uploaded', 'uploaded']);
    // Encryption and retention from lifeline.yml go with every new object (single PUTs and multipart starts).
    const writes = s3.requests.filter((r) => r.url.includes(`/${prefix}/`) && ((r.method === 'PUT' && !r.url.includes('partNumber=')) || (r.method === 'POST' && r.url.includes('uploads'))));
    expect(writes.length).toBeGreaterThan(8);
    for (const write of writes) {
      expect(write.headers).toMatchObject({ 'x-amz-server-side-encryption': 'AES256', 'x-amz-object-lock-mode': 'GOVERNANCE', 'x-amz-meta-sha256': expect.stringMatching(/^[0-9a-f]{64}$/) });
      expect(Date.parse(String(write.headers['x-amz-object-lock-retain-until-date'])) - Date.now()).toBeGreaterThan(29 * 86400_000);
    }

    const compare = await lifeline(['sync', '--config', config, '--env', ENV, '--compare', '--deep'], { env });
    expect(compare.code).toBe(0);
    expect(compare.stdout + compare.stderr).toContain('4 in sync');

    const missingCreds = await lifeline(['sync', '--config', config, '--env', ENV], { env: { ...env, SHOP_S3_SECRET: undefined } });
    expect(missingCreds.code).toBe(2);
    expect(missingCreds.stderr).toContain('SHOP_S3_SECRET');

    const otherHost = tempDir('cli-other');
    const fetchRun = await lifeline(['fetch', '--config', config, '--env', ENV, '--store', join(otherHost, 'store'), '--kind', 'releases', 'v1.4.2', '--json'], { env });
    expect(fetchRun.code).toBe(0);
    expect(JSON.parse(fetchRun.stdout)).toMatchObject({ id: 'v1.4.2', fetched: true });
    expect(readFileSync(join(otherHost, 'store', ENV, 'releases', 'v1.4.2', 'manifest.json'), 'utf8')).toBe('{"subject":[]}\n');
    const config2 = await lifeline(['config', 'check', '--config', config, '--env', ENV, '--json'], { env });
    expect(config2.stdout).not.toContain(secret);
  });

  it('runs as the shipped sync action: refuses before review, then syncs and fetches with outputs', async () => {
    const dir = tempDir('action');
    await seedCatalog(join(dir, 'store'));
    const outputs = join(dir, 'github-output');
    writeFileSync(outputs, '');
    const actionEnv = { ...env, GITHUB_OUTPUT: outputs };
    const before = s3.requests.length;
    const refused = await runBundle('sync', { operation: 'sync', config: writeConfig(dir, 'action-refused', false), env: ENV }, { env: actionEnv });
    expect(refused.code).toBe(3);
    expect(refused.stdout).toContain('::error::');
    expect(refused.stdout).toContain('deletion protection');
    expect(s3.requests.length).toBe(before);

    const config = writeConfig(dir, `action-${randomBytes(3).toString('hex')}`, true);
    const synced = await runBundle('sync', { operation: 'sync', config, env: ENV }, { env: actionEnv });
    expect(synced.code).toBe(0);
    // The runner is told to mask it (::add-mask::) and it appears nowhere else.
    expect(synced.stdout.split('\n').filter((line) => line.includes(secret))).toEqual([`::add-mask::${secret}`]);
    expect(parseGithubOutput(readFileSync(outputs, 'utf8'))).toMatchObject({ uploaded: '4', failed: '0' });

    writeFileSync(outputs, '');
    const fetched = await runBundle('sync', { operation: 'fetch', config, env: ENV, store: join(dir, 'drill-store'), kind: 'backups', id: 'latest' }, { env: actionEnv });
    expect(fetched.code).toBe(0);
    expect(parseGithubOutput(readFileSync(outputs, 'utf8'))).toMatchObject({ id: '20261120T010000000Z-aaaaaa', fetched: 'true' });
  });
});
