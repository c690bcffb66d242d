import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkSums } from '../../src/catalog/sums';
import { Catalog } from '../../src/catalog/store';
import { saveDrillReport, type DrillReport } from '../../src/drill/report';
import { createMemoryLogger } from '../../src/logger';
import type { StorageSettings } from '../../src/settings/resolve';
import { s3StoreFor } from '../../src/storage/object-store';
import { syncEnvironment } from '../../src/storage/sync';
import { lifeline } from '../helpers/cli';
import { startS3Server, writeTestEntry, type TestS3Server } from '../helpers/s3';

const MiB = 1024 * 1024;
const ENV = 'production';
const OLD = '20261119T010000000Z-aaaaaa';
const NEW = '20261120T010000000Z-bbbbbb';

// `verify --remote ID`, `fetch latest` and the review gate, attacked through the bucket itself:
// a flipped byte on the server's disk, an object gone, a review dated in the future.
// Each test runs several CLI processes (tsx start-up included); on a loaded 2-core host that takes minutes.
describe('remote verification verifies', { timeout: 400_000 }, () => {
  let s3: TestS3Server;
  const scratch: string[] = [];
  const secretEnv = { SHOP_S3_KEY: 'S3RVER', SHOP_S3_SECRET: 'S3RVER', LIFELINE_CONFIG: undefined, LIFELINE_STORE: undefined };

  beforeAll(async () => {
    s3 = await startS3Server();
  });
  afterAll(async () => {
    await s3?.close();
    for (const dir of scratch) rmSync(dir, { recursive: true, force: true });
  });

  const tempDir = (name: string) => {
    const dir = mkdtempSync(join(tmpdir(), `lifeline-rv-${name}-`));
    scratch.push(dir);
    return dir;
  };

  /** A host with two backups synced to its own prefix, and its config. */
  async function syncedHost(reviewDate = '2026-11-21') {
    const dir = tempDir('host');
    const store = join(dir, 'store');
    const catalog = new Catalog(store);
    await writeTestEntry(catalog, ENV, 'backups', OLD, 'backup.json', { 'postgres.dump': 3 * MiB, 'globals.sql': 'CREATE ROLE app;\n' }, {}, '2026-11-19T01:00:00.000Z');
    await writeTestEntry(catalog, ENV, 'backups', NEW, 'backup.json', { 'postgres.dump': 7 * MiB, 'globals.sql': 'CREATE ROLE app;\n' }, {}, '2026-11-20T01:00:00.000Z');
    const prefix = `rv-${randomBytes(4).toString('hex')}`;
    const config = join(dir, 'lifeline.yml');
    const storageYaml = (date: string) =>
      [
        'version: 1',
        'environments:',
        `  ${ENV}:`,
        `    store: ${store}`,
        '    storage:',
        '      provider: s3',
        `      endpoint: ${s3.endpoint}`,
        '      region: us-east-1',
        `      bucket: ${s3.bucket}`,
        `      prefix: ${prefix}`,
        '      accessKeyIdEnv: SHOP_S3_KEY',
        '      secretAccessKeyEnv: SHOP_S3_SECRET',
        `      reviewed: { provider: s3rver, by: ops-lead, date: ${date} }`,
        '',
      ].join('\n');
    writeFileSync(config, storageYaml(reviewDate));
    const storage: StorageSettings = {
      provider: 's3',
      endpoint: s3.endpoint,
      region: 'us-east-1',
      bucket: s3.bucket,
      prefix: `${prefix}/`,
      credentialEnv: { accessKeyId: 'SHOP_S3_KEY', secretAccessKey: 'SHOP_S3_SECRET' },
      reviewed: { provider: 's3rver', by: 'ops-lead', date: reviewDate },
    };
    Object.defineProperty(storage, 'credentials', { value: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey }, enumerable: false });
    const remote = s3StoreFor(storage, { journalDir: join(store, '.sync', ENV, 'uploads'), partSize: 5 * MiB });
    return { dir, store, catalog, prefix, config, remote, storageYaml, key: (id: string, file: string) => `${prefix}/${ENV}/backups/${id}/${file}` };
  }

  const flipByte = async (path: string, at: number) => {
    const handle = await open(path, 'r+');
    const byte = Buffer.alloc(1);
    await handle.read(byte, 0, 1, at);
    byte[0]! ^= 0x01;
    await handle.write(byte, 0, 1, at);
    await handle.close();
  };

  it('verify --remote ID hashes the named entry: a flipped byte in the bucket fails it (exit 1) naming the object, while a listing comparison says it read no bytes', async () => {
    const host = await syncedHost();
    const synced = await lifeline(['sync', '--config', host.config, '--env', ENV], { env: secretEnv });
    expect(synced.code, synced.stderr).toBe(0);

    const clean = await lifeline(['verify', '--config', host.config, '--env', ENV, '--remote', NEW, '--json'], { env: secretEnv });
    expect(clean.code, clean.stderr).toBe(0);
    const cleanJson = JSON.parse(clean.stdout);
    expect(cleanJson).toMatchObject({ id: NEW, ok: true, against: 'the local SHA256SUMS' });
    expect(
      cleanJson.files
        .filter((f: { method: string }) => f.method === 'downloaded and hashed')
        .map((f: { file: string }) => f.file)
        .sort(),
    ).toEqual(['SHA256SUMS', 'globals.sql', 'postgres.dump']);

    await flipByte(s3.objectPath(host.key(NEW, 'postgres.dump')), 5 * MiB + 17);
    const flipped = await lifeline(['verify', '--config', host.config, '--env', ENV, '--remote', NEW], { env: secretEnv });
    expect(flipped.code).toBe(1);
    expect(flipped.stdout).toMatch(/MISMATCH postgres.dump {2}\[downloaded and hashed\] sha256 [0-9a-f]{64} in the bucket, [0-9a-f]{64} expected/);
    expect(flipped.stderr).toContain(`${host.key(NEW, 'postgres.dump')} does not match`);
    // The other backup is untouched and still verifies: the id is not ignored.
    const other = await lifeline(['verify', '--config', host.config, '--env', ENV, '--remote', OLD], { env: secretEnv });
    expect(other.code, other.stderr).toBe(0);

    // The listing comparison cannot see the flip, and says it did not look.
    const listing = await lifeline(['verify', '--config', host.config, '--env', ENV, '--remote', '--all'], { env: secretEnv });
    expect(listing.code).toBe(0);
    expect(listing.stdout).toContain('listing comparison only: sizes and the sha256 recorded at upload were compared; no remote bytes were read');
    const deep = await lifeline(['verify', '--config', host.config, '--env', ENV, '--remote', '--all', '--deep'], { env: secretEnv });
    expect(deep.code).toBe(1);
    expect(deep.stdout).toContain('deep comparison');
    expect(deep.stdout).toMatch(new RegExp(`MISMATCH +backups/${NEW} postgres.dump`));

    // A host that lost its catalog checks the bucket against its own SHA256SUMS, and still sees the flip.
    const lost = await lifeline(['verify', '--config', host.config, '--env', ENV, '--store', tempDir('empty'), '--remote', 'latest', '--json'], { env: secretEnv });
    expect(lost.code).toBe(1);
    expect(JSON.parse(lost.stdout)).toMatchObject({ id: NEW, ok: false, against: "the bucket's own SHA256SUMS (no local copy)" });
  });

  it('verify --remote names a missing object as missing, and a rewritten SHA256SUMS as differing from the local one', async () => {
    const host = await syncedHost();
    await syncEnvironment({ env: ENV, store: host.store, remote: host.remote, prefix: `${host.prefix}/`, logger: createMemoryLogger() });
    await host.remote.client.deleteObject(host.key(NEW, 'globals.sql'));
    const run = await lifeline(['verify', '--config', host.config, '--env', ENV, '--remote', NEW], { env: secretEnv });
    expect(run.code).toBe(1);
    expect(run.stdout).toMatch(/MISSING {2}globals.sql .*missing in the bucket \(listed in SHA256SUMS\)/);
    expect(run.stderr).toContain(`${host.key(NEW, 'globals.sql')} is missing`);
    expect(run.stderr).not.toMatch(/storage\.bucket|endpoint/);

    // Someone replaces the bucket's SHA256SUMS of the other backup (with a matching upload hash): compared with the local one, it differs.
    const forged = join(host.dir, 'forged-sums');
    const sums = readFileSync(join(host.store, ENV, 'backups', OLD, 'SHA256SUMS'), 'utf8').replace(/^[0-9a-f]{64}(?= {2}globals.sql)/m, '0'.repeat(64));
    writeFileSync(forged, sums);
    await host.remote.putFile(host.key(OLD, 'SHA256SUMS'), forged, { sha256: createHash('sha256').update(sums).digest('hex'), bytes: Buffer.byteLength(sums) });
    const replaced = await lifeline(['verify', '--config', host.config, '--env', ENV, '--remote', OLD], { env: secretEnv });
    expect(replaced.code).toBe(1);
    expect(replaced.stdout).toMatch(/MISMATCH SHA256SUMS .*differs from the local SHA256SUMS/);
    expect(replaced.stdout).toMatch(/ok {6} globals.sql/);

    const never = await lifeline(['verify', '--config', host.config, '--env', ENV, '--remote', '20261121T000000000Z-cccccc'], { env: secretEnv });
    expect(never.code).toBe(1);
    expect(never.stdout).toContain('is not in');
  });

  it('fetch latest takes only a complete entry that verifies, falls back with a message, and names a missing object', async () => {
    const host = await syncedHost();
    await syncEnvironment({ env: ENV, store: host.store, remote: host.remote, prefix: `${host.prefix}/`, logger: createMemoryLogger() });

    // The newest entry lost an object: latest falls back to the previous one and says why.
    await host.remote.client.deleteObject(host.key(NEW, 'postgres.dump'));
    const other = tempDir('other');
    const fetched = await lifeline(['fetch', '--config', host.config, '--env', ENV, '--store', join(other, 'store'), 'latest', '--json'], { env: secretEnv });
    expect(fetched.code, fetched.stderr).toBe(0);
    const json = JSON.parse(fetched.stdout);
    expect(json).toMatchObject({ id: OLD, fetched: true });
    expect(json.skipped).toEqual([{ id: NEW, reason: expect.stringContaining(`missing the object ${host.key(NEW, 'postgres.dump')}`) }]);
    expect(fetched.stderr).toContain('falling back to the previous complete entry');
    expect((await checkSums(join(other, 'store', ENV, 'backups', OLD))).every((c) => c.ok)).toBe(true);

    // Named, the incomplete entry is a missing object (exit 1), not a configuration problem (exit 2).
    const named = await lifeline(['fetch', '--config', host.config, '--env', ENV, '--store', join(tempDir('named'), 'store'), NEW], { env: secretEnv });
    expect(named.code).toBe(1);
    expect(named.stderr).toContain(`is missing the object ${host.key(NEW, 'postgres.dump')}`);

    // Both damaged (one byte flipped in the older one too): nothing is fetched, and each reason is named.
    await flipByte(s3.objectPath(host.key(OLD, 'postgres.dump')), 1000);
    const none = tempDir('none');
    const nothing = await lifeline(['fetch', '--config', host.config, '--env', ENV, '--store', join(none, 'store'), 'latest'], { env: secretEnv });
    expect(nothing.code).toBe(1);
    expect(nothing.stderr).toContain('is complete and verifies');
    expect(nothing.stderr).toMatch(new RegExp(`${OLD}: postgres.dump of backups/${OLD} .* has sha256 [0-9a-f]{64}, expected`));
    expect(nothing.stderr).toContain(`${NEW}: backups/${NEW}`);
  });

  it('syncs, verifies and fetches a drill entry whose signed report.json is covered by SHA256SUMS', async () => {
    const host = await syncedHost();
    const report = {
      schemaVersion: 1,
      id: '20261120T020000000Z-dddddd',
      createdAt: '2026-11-20T02:00:00.000Z',
      finishedAt: '2026-11-20T02:01:00.000Z',
      environment: ENV,
      mode: 'logical',
      backup: { id: NEW, createdAt: '2026-11-20T01:00:00.000Z' },
      target: { kind: 'throwaway-cluster', description: 't' },
      steps: [],
      checks: [],
      rto: { seconds: 1, targetSeconds: null, met: null, phases: {} },
      rpo: { seconds: 1, targetSeconds: null, met: null, detail: null },
      passed: true,
      failures: [],
    } as DrillReport;
    await saveDrillReport(host.catalog, report, '# drill\n', { sign: async () => ({ kind: 'key', bundleJson: '{"stand-in":"bundle"}\n' }) });
    const sync = await lifeline(['sync', '--config', host.config, '--env', ENV, '--json'], { env: secretEnv });
    expect(sync.code, sync.stderr).toBe(0);
    expect(JSON.parse(sync.stdout).bucket.entries.find((e: { kind: string }) => e.kind === 'drills')).toMatchObject({ status: 'uploaded', files: 4 });
    // report.json, the entry's metadata, arrives last even though SHA256SUMS lists it.
    const drillPuts = s3.requests.filter((r) => r.method === 'PUT' && r.url.includes(`/${host.prefix}/${ENV}/drills/`)).map((r) => r.url);
    expect(drillPuts.at(-1)).toContain('report.json');
    const compare = await lifeline(['sync', '--config', host.config, '--env', ENV, '--compare', '--deep'], { env: secretEnv });
    expect(compare.code, compare.stdout).toBe(0);
    const other = tempDir('drill-other');
    const fetched = await lifeline(['fetch', '--config', host.config, '--env', ENV, '--store', join(other, 'store'), '--kind', 'drills', 'latest'], { env: secretEnv });
    expect(fetched.code, fetched.stderr).toBe(0);
    const dir = join(other, 'store', ENV, 'drills', report.id);
    expect(readFileSync(join(dir, 'report.json')).equals(readFileSync(join(host.store, ENV, 'drills', report.id, 'report.json')))).toBe(true);
    expect((await checkSums(dir)).map((c) => `${c.file}:${c.ok}`)).toEqual(['report.json:true', 'report.sigstore.json:true', 'summary.md:true']);
  });

  /** Gives each backup.json the `files` a real backup records (name, bytes, sha256), as `lifeline backup` writes them. */
  const nameFilesInMetadata = (host: Awaited<ReturnType<typeof syncedHost>>) => {
    for (const id of [OLD, NEW]) {
      const dir = join(host.store, ENV, 'backups', id);
      const sums = new Map(
        readFileSync(join(dir, 'SHA256SUMS'), 'utf8')
          .trim()
          .split('\n')
          .map((line) => [line.slice(66), line.slice(0, 64)] as const),
      );
      const metadata = JSON.parse(readFileSync(join(dir, 'backup.json'), 'utf8'));
      metadata.database = 'shop';
      metadata.rowCounts = { 'public.orders': 42 };
      metadata.files = { postgres: { name: 'postgres.dump', sha256: sums.get('postgres.dump') }, globals: { name: 'globals.sql', sha256: sums.get('globals.sql') } };
      writeFileSync(join(dir, 'backup.json'), `${JSON.stringify(metadata, null, 2)}\n`);
    }
  };
  /** Replaces an object in the bucket, with the sha256 upload metadata rewritten to match (what an attacker with write access does). */
  const replaceObject = async (host: Awaited<ReturnType<typeof syncedHost>>, key: string, content: string) => {
    const path = join(host.dir, `forged-${randomBytes(4).toString('hex')}`);
    writeFileSync(path, content);
    await host.remote.putFile(key, path, { sha256: createHash('sha256').update(content).digest('hex'), bytes: Buffer.byteLength(content) });
  };
  const removeSumsLine = async (host: Awaited<ReturnType<typeof syncedHost>>, id: string, file: string) => {
    const sums = readFileSync(join(host.store, ENV, 'backups', id, 'SHA256SUMS'), 'utf8')
      .split('\n')
      .filter((line) => !line.endsWith(`  ${file}`))
      .join('\n');
    expect(sums).not.toContain(file);
    await replaceObject(host, host.key(id, 'SHA256SUMS'), sums);
  };
  const localBackups = (store: string) => {
    const dir = join(store, ENV, 'backups');
    return existsSync(dir) ? readdirSync(dir).filter((name) => !name.startsWith('.')) : [];
  };

  it('an entry whose SHA256SUMS lost the dump line (upload hash rewritten) is incomplete: verify --remote exits 1 naming postgres.dump, fetch latest falls back, or fails when none is left', async () => {
    const host = await syncedHost();
    nameFilesInMetadata(host);
    await syncEnvironment({ env: ENV, store: host.store, remote: host.remote, prefix: `${host.prefix}/`, logger: createMemoryLogger() });
    // Untouched, the lost-host check passes: the named files are listed and present.
    const clean = await lifeline(['verify', '--config', host.config, '--env', ENV, '--store', tempDir('clean'), '--remote', NEW], { env: secretEnv });
    expect(clean.code, clean.stdout + clean.stderr).toBe(0);

    await removeSumsLine(host, NEW, 'postgres.dump');
    await flipByte(s3.objectPath(host.key(NEW, 'postgres.dump')), 1000);

    // The host-loss case: no local copy, the bucket's own SHA256SUMS is all there is.
    const verify = await lifeline(['verify', '--config', host.config, '--env', ENV, '--store', tempDir('lost'), '--remote', NEW], { env: secretEnv });
    expect(verify.code).toBe(1);
    expect(verify.stdout).toContain('backup.json names postgres.dump but SHA256SUMS does not list it');
    const verifyJson = await lifeline(['verify', '--config', host.config, '--env', ENV, '--store', tempDir('lost-json'), '--remote', 'latest', '--json'], { env: secretEnv });
    expect(verifyJson.code).toBe(1);
    expect(JSON.parse(verifyJson.stdout)).toMatchObject({ id: NEW, ok: false });
    expect(JSON.parse(verifyJson.stdout).files).toContainEqual(expect.objectContaining({ file: 'postgres.dump', status: 'missing' }));
    // With the local copy the rewritten SHA256SUMS is also caught, and the dump is still named.
    const withLocal = await lifeline(['verify', '--config', host.config, '--env', ENV, '--remote', NEW], { env: secretEnv });
    expect(withLocal.code).toBe(1);
    expect(withLocal.stdout).toMatch(/MISMATCH SHA256SUMS/);

    const other = join(tempDir('fetch'), 'store');
    const fetched = await lifeline(['fetch', '--config', host.config, '--env', ENV, '--store', other, '--kind', 'backups', 'latest', '--json'], { env: secretEnv });
    expect(fetched.code, fetched.stderr).toBe(0);
    const json = JSON.parse(fetched.stdout);
    expect(json).toMatchObject({ id: OLD, fetched: true });
    expect(json.skipped).toEqual([{ id: NEW, reason: expect.stringContaining('backup.json names postgres.dump but SHA256SUMS does not list it') }]);
    expect(fetched.stderr).toContain('falling back to the previous complete entry');
    expect(localBackups(other)).toEqual([OLD]);
    expect(readdirSync(join(other, ENV, 'backups', OLD)).sort()).toEqual(['SHA256SUMS', 'backup.json', 'globals.sql', 'postgres.dump']);
    const listed = await lifeline(['backups', '--config', host.config, '--env', ENV, '--store', other, '--json'], { env: secretEnv });
    expect(listed.code, listed.stderr).toBe(0);
    expect(listed.stdout).not.toContain(NEW);

    // Named, the altered entry is refused and nothing half-imported appears.
    const named = join(tempDir('named'), 'store');
    const one = await lifeline(['fetch', '--config', host.config, '--env', ENV, '--store', named, NEW], { env: secretEnv });
    expect(one.code).toBe(1);
    expect(one.stderr).toContain('backup.json names postgres.dump but SHA256SUMS does not list it');
    expect(localBackups(named)).toEqual([]);

    // The same done to the older one: no complete entry is left, and fetch latest says so.
    await removeSumsLine(host, OLD, 'postgres.dump');
    const none = join(tempDir('none'), 'store');
    const nothing = await lifeline(['fetch', '--config', host.config, '--env', ENV, '--store', none, 'latest'], { env: secretEnv });
    expect(nothing.code).toBe(1);
    expect(nothing.stderr).toContain('is complete and verifies');
    expect(nothing.stderr).toContain(`${OLD}: backups/${OLD}`);
    expect(localBackups(none)).toEqual([]);
  });

  it("a SHA256SUMS sha256 that differs from backup.json's is a mismatch (the dump swapped, sums and upload hash rewritten), and a bucket backup.json that differs from the local one in what matters fails", async () => {
    const host = await syncedHost();
    nameFilesInMetadata(host);
    await syncEnvironment({ env: ENV, store: host.store, remote: host.remote, prefix: `${host.prefix}/`, logger: createMemoryLogger() });
    const recorded = JSON.parse(readFileSync(join(host.store, ENV, 'backups', NEW, 'backup.json'), 'utf8')).files.postgres.sha256 as string;

    // A consistent forgery as far as SHA256SUMS goes: another dump, its sha256 in SHA256SUMS and in the upload metadata.
    const fake = 'not the production dump\n';
    const fakeSha = createHash('sha256').update(fake).digest('hex');
    await replaceObject(host, host.key(NEW, 'postgres.dump'), fake);
    const sums = readFileSync(join(host.store, ENV, 'backups', NEW, 'SHA256SUMS'), 'utf8').replace(recorded, fakeSha);
    await replaceObject(host, host.key(NEW, 'SHA256SUMS'), sums);

    const verify = await lifeline(['verify', '--config', host.config, '--env', ENV, '--store', tempDir('lost'), '--remote', NEW], { env: secretEnv });
    expect(verify.code).toBe(1);
    expect(verify.stdout).toContain(`backup.json records sha256 ${recorded} for postgres.dump, SHA256SUMS lists ${fakeSha}`);
    const other = join(tempDir('fetch'), 'store');
    const fetched = await lifeline(['fetch', '--config', host.config, '--env', ENV, '--store', other, 'latest', '--json'], { env: secretEnv });
    expect(fetched.code, fetched.stderr).toBe(0);
    expect(JSON.parse(fetched.stdout)).toMatchObject({ id: OLD, skipped: [{ id: NEW, reason: expect.stringContaining('records sha256') }] });
    expect(localBackups(other)).toEqual([OLD]);

    // The older entry: a locally recorded verification rewrites backup.json, which is not a difference...
    const localOld = join(host.store, ENV, 'backups', OLD, 'backup.json');
    const metadata = JSON.parse(readFileSync(localOld, 'utf8'));
    writeFileSync(localOld, `${JSON.stringify({ ...metadata, verified: { at: '2026-11-21T00:00:00.000Z', ok: true, checks: [] } }, null, 2)}\n`);
    const recordedOnly = await lifeline(['verify', '--config', host.config, '--env', ENV, '--remote', OLD], { env: secretEnv });
    expect(recordedOnly.code, recordedOnly.stdout).toBe(0);
    // ...but the bucket's backup.json with other row counts is.
    await replaceObject(host, host.key(OLD, 'backup.json'), `${JSON.stringify({ ...metadata, rowCounts: { 'public.orders': 0 } }, null, 2)}\n`);
    const rows = await lifeline(['verify', '--config', host.config, '--env', ENV, '--remote', OLD], { env: secretEnv });
    expect(rows.code).toBe(1);
    expect(rows.stdout).toContain('differs from the local backup.json in rowCounts');
  });

  it('refuses a provider review dated in the future (exit 3) before any request', async () => {
    const host = await syncedHost('2099-01-01');
    const before = s3.requests.length;
    for (const args of [['sync'], ['fetch', 'latest'], ['verify', '--remote', NEW]]) {
      const run = await lifeline([...args, '--config', host.config, '--env', ENV], { env: secretEnv });
      expect(run.code, args.join(' ')).toBe(3);
      expect(run.stderr).toMatch(/is dated 2099-01-01, in the future/);
    }
    expect(s3.requests.length).toBe(before);
  });
});
