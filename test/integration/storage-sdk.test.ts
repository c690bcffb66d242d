import { randomBytes } from 'node:crypto';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Catalog } from '../../src/catalog/store';
import { createMemoryLogger } from '../../src/logger';
import type { StorageSettings } from '../../src/settings/resolve';
import { s3StoreFor } from '../../src/storage/object-store';
import { S3Client } from '../../src/storage/s3';
import { compareRemote, fetchEntry, syncEnvironment } from '../../src/storage/sync';
import { lifeline, REPO } from '../helpers/cli';
import { startFaultProxy, startS3Server, writeTestEntry, type TestS3Server } from '../helpers/s3';

/**
 * The AWS SDK client against a server that recomputes every SigV4 signature (the maintained
 * s3rver fork): a wrong secret is refused there, unlike s3rver 3.7. Faults come from a loopback
 * proxy in front of it. The instance metadata service is never asked (no traffic leaves 127.0.0.1).
 */
const MiB = 1024 * 1024;
const ENV = 'production';
const KEY_ID = 'LIFELINETESTKEY';
const SECRET = `sdk-test-secret-${randomBytes(6).toString('hex')}`;
const PROFILE_KEY_ID = 'LIFELINEPROFILEKEY';
const PROFILE_SECRET = `profile-secret-${randomBytes(6).toString('hex')}`;
process.env.AWS_EC2_METADATA_DISABLED = 'true';

// The credential chain knows AWS's endpoints: in this file, any TCP connection that is not to
// loopback throws instead of leaving the machine (the chain's STS and metadata lookups included).
const connect = net.Socket.prototype.connect;
(net.Socket.prototype as unknown as { connect: unknown }).connect = function (this: net.Socket, ...args: unknown[]) {
  const first = args[0] as { host?: string; path?: string } | number | string;
  const host = typeof first === 'object' ? (first.path ? 'unix' : (first.host ?? 'localhost')) : typeof first === 'string' ? 'unix' : typeof args[1] === 'string' ? args[1] : 'localhost';
  if (!/^(127\.|localhost$|::1$|unix$)/.test(host)) throw new Error(`test guard: no connection to ${host} (only loopback)`);
  return (connect as (...a: unknown[]) => net.Socket).apply(this, args);
};

let s3: TestS3Server;
const scratch: string[] = [];

beforeAll(async () => {
  s3 = await startS3Server('lifeline-sdk', { verifySignatures: true });
  s3.addKeyPair(KEY_ID, SECRET);
  s3.addKeyPair(PROFILE_KEY_ID, PROFILE_SECRET);
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

/** `credentials: null`: none from variables, so the SDK's provider chain decides. */
function storageSettings(overrides: Partial<StorageSettings> = {}, credentials: StorageSettings['credentials'] | null = { accessKeyId: KEY_ID, secretAccessKey: SECRET }): StorageSettings {
  const settings: StorageSettings = {
    provider: 's3',
    endpoint: s3.endpoint,
    region: 'us-east-1',
    bucket: s3.bucket,
    prefix: `t-${randomBytes(4).toString('hex')}/`,
    credentialEnv: { accessKeyId: 'TEST_S3_KEY', secretAccessKey: 'TEST_S3_SECRET' },
    reviewed: { provider: 's3rver fork', by: 'test', date: '2026-11-21' },
    ...overrides,
  };
  Object.defineProperty(settings, 'credentials', { value: credentials ?? undefined, enumerable: false });
  return settings;
}

async function seed(store: string, dumpBytes = 17 * MiB): Promise<Catalog> {
  const catalog = new Catalog(store);
  await writeTestEntry(
    catalog,
    ENV,
    'backups',
    '20261120T010000000Z-aaaaaa',
    'backup.json',
    { 'postgres.dump': dumpBytes, 'globals.sql': 'CREATE ROLE app;\n' },
    { verified: { at: '2026-11-20T01:05:00Z', ok: true, checks: [] } },
    '2026-11-20T01:00:00.000Z',
  );
  await writeTestEntry(catalog, ENV, 'backups', '20261119T010000000Z-bbbbbb', 'backup.json', { 'postgres.dump': 2000, 'globals.sql': '-- none\n' }, {}, '2026-11-19T01:00:00.000Z');
  await writeTestEntry(catalog, ENV, 'releases', 'v1.4.2', 'release.json', { 'manifest.json': '{"subject":[]}\n', 'manifest.sigstore.json': '{}\n' }, {}, '2026-11-20T02:00:00.000Z');
  await writeTestEntry(catalog, ENV, 'tenants/acme/exports', '20261120T040000000Z-cccccc', 'export.json', { 'orders.ndjson': '{"id":1}\n' }, {}, '2026-11-20T04:00:00.000Z');
  return catalog;
}

const partNumbers = (requests: TestS3Server['requests']) => requests.filter((r) => r.method === 'PUT' && r.url.includes('partNumber=')).map((r) => Number(/partNumber=(\d+)/.exec(r.url)![1]));

describe('the SDK client against a server that checks signatures', () => {
  it('syncs (multipart and single PUTs with SHA-256 checksums), resumes a cut upload, lists across pages, and fetches back byte for byte', async () => {
    const store = tempDir('store');
    await seed(store);
    const storage = storageSettings();
    const journalDir = join(store, '.sync', ENV, 'uploads');

    // First run: every attempt at part 3 of the dump loses its connection (the SDK retries it 5 times).
    const proxy = await startFaultProxy(s3.endpoint, ({ url }) => (url.includes('postgres.dump') && url.includes('partNumber=3') ? 'cut' : 'pass'));
    const before = s3.requests.length;
    try {
      const cut = await syncEnvironment({
        env: ENV,
        store,
        remote: s3StoreFor(storageSettings({ endpoint: proxy.endpoint, prefix: storage.prefix }), { journalDir, partSize: 5 * MiB, concurrency: 1 }),
        prefix: storage.prefix,
        logger: createMemoryLogger(),
      });
      expect(cut.entries.find((e) => e.id === '20261120T010000000Z-aaaaaa')).toMatchObject({ status: 'failed', reason: expect.stringMatching(/cannot reach the object store.*after 5 attempts/) });
      expect(proxy.seen.filter((r) => r.decision === 'cut')).toHaveLength(5);
    } finally {
      await proxy.close();
    }
    expect(partNumbers(s3.requests.slice(before))).toEqual([1, 2]);

    // Second run, straight to the server, listing 3 keys a page: only parts 3 and 4 go up.
    const remote = s3StoreFor(storage, { journalDir, partSize: 5 * MiB, pageSize: 3 });
    const midway = await compareRemote({ env: ENV, store, remote, prefix: storage.prefix });
    expect([...midway.missingRemotely, ...midway.incompleteRemotely].map((e) => e.id)).toContain('20261120T010000000Z-aaaaaa');
    expect(midway.inSync.map((e) => e.id)).not.toContain('20261120T010000000Z-aaaaaa');
    const resumedAt = s3.requests.length;
    const report = await syncEnvironment({ env: ENV, store, remote, prefix: storage.prefix, logger: createMemoryLogger() });
    expect(report.failed).toBe(0);
    expect(report.entries.find((e) => e.id === '20261120T010000000Z-aaaaaa')).toMatchObject({ status: 'uploaded', resumedParts: 2 });
    const resumed = s3.requests.slice(resumedAt);
    expect(partNumbers(resumed).sort()).toEqual([3, 4]);

    // Every upload was signed (the server checked), carried Content-MD5 and x-amz-checksum-sha256, and no SDK default CRC32 or aws-chunked body.
    const uploads = s3.requests.slice(before).filter((r) => r.method === 'PUT');
    expect(uploads.length).toBeGreaterThan(8);
    for (const upload of uploads) {
      expect(upload.headers).toMatchObject({
        authorization: expect.stringMatching(/^AWS4-HMAC-SHA256 Credential=LIFELINETESTKEY\//),
        'content-md5': expect.any(String),
        'x-amz-checksum-sha256': expect.any(String),
      });
      expect(Object.keys(upload.headers).filter((h) => /crc|x-amz-trailer|sdk-checksum/.test(h))).toEqual([]);
      expect(String(upload.headers['x-amz-content-sha256'])).toMatch(/^[0-9a-f]{64}$/);
    }

    // The entry listing crossed pages (ListObjectsV2 continuation tokens), and everything is in sync.
    const listedAt = s3.requests.length;
    const compared = await compareRemote({ env: ENV, store, remote, prefix: storage.prefix, deep: true });
    expect(compared.inSync).toHaveLength(4);
    expect(compared.mismatched).toEqual([]);
    expect(s3.requests.slice(listedAt).filter((r) => r.method === 'GET' && r.url.includes('continuation-token=')).length).toBeGreaterThanOrEqual(3);

    const other = new Catalog(tempDir('other-host'));
    const fetched = await fetchEntry({ env: ENV, kind: 'backups', id: 'latest', catalog: other, remote, prefix: storage.prefix, logger: createMemoryLogger() });
    expect(fetched.entry.id).toBe('20261120T010000000Z-aaaaaa');
    for (const file of ['postgres.dump', 'globals.sql', 'SHA256SUMS', 'backup.json']) {
      expect(readFileSync(join(fetched.entry.dir, file)).equals(readFileSync(join(store, ENV, 'backups', fetched.entry.id, file))), file).toBe(true);
    }
  });

  it('a key revoked mid-sync stops the sync (exit 2) and leaves no entry that looks complete; s3rver 3.7 would have accepted the wrong secret', async () => {
    const store = tempDir('store');
    await seed(store, 6 * MiB);
    const storage = storageSettings();
    // The provider starts refusing the key when the first metadata file goes up.
    let revoked = false;
    const proxy = await startFaultProxy(s3.endpoint, ({ method, url }) => {
      if (method === 'PUT' && /\.json(\?|$)/.test(url)) revoked = true;
      return revoked ? { status: 403, code: 'InvalidAccessKeyId' } : 'pass';
    });
    try {
      const remote = s3StoreFor(storageSettings({ endpoint: proxy.endpoint, prefix: storage.prefix }), { journalDir: join(store, '.sync', ENV, 'uploads'), partSize: 5 * MiB });
      await expect(syncEnvironment({ env: ENV, store, remote, prefix: storage.prefix, logger: createMemoryLogger() })).rejects.toMatchObject({
        exitCode: 2,
        code: 'InvalidAccessKeyId',
        fix: expect.stringContaining('access key / secret key'),
      });
      expect(proxy.seen.filter((r) => r.decision === '403')).toHaveLength(1); // refused credentials are not retried
    } finally {
      await proxy.close();
    }
    const remote = s3StoreFor(storage, { journalDir: join(store, '.sync', ENV, 'uploads') });
    const after = await compareRemote({ env: ENV, store, remote, prefix: storage.prefix });
    expect(after.inSync).toEqual([]);
    expect([...after.incompleteRemotely, ...after.missingRemotely]).toHaveLength(4);
    await expect(fetchEntry({ env: ENV, kind: 'backups', id: 'latest', catalog: new Catalog(tempDir('other')), remote, prefix: storage.prefix, logger: createMemoryLogger() })).rejects.toMatchObject({
      code: 'REMOTE_ENTRY_NOT_FOUND',
    });

    // Why this file needs the fork: s3rver 3.7 lists with a wrong secret as if it were right.
    const legacy = await startS3Server('lifeline-legacy');
    try {
      const wrong = new S3Client({ endpoint: legacy.endpoint, region: 'us-east-1', bucket: legacy.bucket, credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'not-the-secret' }, maxAttempts: 1 });
      await expect(
        (async () => {
          for await (const _ of wrong.listObjects('')) void _;
        })(),
      ).resolves.toBeUndefined();
      const checked = new S3Client({ endpoint: s3.endpoint, region: 'us-east-1', bucket: s3.bucket, credentials: { accessKeyId: KEY_ID, secretAccessKey: 'not-the-secret' }, maxAttempts: 1 });
      await expect(
        (async () => {
          for await (const _ of checked.listObjects('')) void _;
        })(),
      ).rejects.toMatchObject({ code: 'SignatureDoesNotMatch', exitCode: 2 });
    } finally {
      await legacy.close();
    }
  });

  it('a provider failing the first attempts (500, 503) is retried with backoff and the sync completes', async () => {
    const store = tempDir('store');
    await seed(store, 6 * MiB);
    const storage = storageSettings();
    // The listing fails four times (the fifth attempt is the last allowed), then part 2 fails once.
    let partTwoFailed = false;
    const proxy = await startFaultProxy(s3.endpoint, ({ index, url }) => {
      if (index < 4) return { status: index % 2 ? 503 : 500 };
      if (!partTwoFailed && url.includes('partNumber=2')) {
        partTwoFailed = true;
        return { status: 500 };
      }
      return 'pass';
    });
    try {
      const remote = s3StoreFor(storageSettings({ endpoint: proxy.endpoint, prefix: storage.prefix }), { journalDir: join(store, '.sync', ENV, 'uploads'), partSize: 5 * MiB });
      const report = await syncEnvironment({ env: ENV, store, remote, prefix: storage.prefix, logger: createMemoryLogger() });
      expect(report.failed).toBe(0);
      expect(report.uploaded).toBe(4);
      expect(proxy.seen.slice(0, 5).map((r) => r.decision)).toEqual(['500', '503', '500', '503', 'pass']);
      expect(proxy.seen.filter((r) => r.url.includes('partNumber=2')).map((r) => r.decision)).toEqual(['500', 'pass']);
    } finally {
      await proxy.close();
    }
    const check = await compareRemote({ env: ENV, store, remote: s3StoreFor(storage, { journalDir: join(store, '.sync', ENV, 'uploads') }), prefix: storage.prefix, deep: true });
    expect(check.inSync).toHaveLength(4);
  });
});

describe('credentials from web identity (as aws-actions/configure-aws-credentials sets up)', () => {
  it('the chain trades the token file for temporary keys at STS (a loopback stand-in), signs with them, and hands the secret and session token to the masker', async () => {
    const dir = tempDir('web-identity');
    const token = `eyJhbGciOiJSUzI1NiJ9.${randomBytes(12).toString('hex')}.sig`;
    writeFileSync(join(dir, 'token'), token);
    const sessionToken = `session-${randomBytes(8).toString('hex')}`;
    const secret = `wi-secret-${randomBytes(8).toString('hex')}`;
    s3.addKeyPair('ASIALIFELINEWI', secret);
    const stsCalls: URLSearchParams[] = [];
    const sts = createServer((request, response) => {
      let body = '';
      request.on('data', (c: Buffer) => (body += c));
      request.on('end', () => {
        stsCalls.push(new URLSearchParams(body));
        response.setHeader('content-type', 'text/xml');
        response.end(
          `<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><AssumeRoleWithWebIdentityResult><Credentials><AccessKeyId>ASIALIFELINEWI</AccessKeyId><SecretAccessKey>${secret}</SecretAccessKey><SessionToken>${sessionToken}</SessionToken><Expiration>2099-01-01T00:00:00Z</Expiration></Credentials><AssumedRoleUser><Arn>arn:aws:sts::123456789012:assumed-role/lifeline-backup/gh</Arn><AssumedRoleId>AROA:gh</AssumedRoleId></AssumedRoleUser></AssumeRoleWithWebIdentityResult><ResponseMetadata><RequestId>r</RequestId></ResponseMetadata></AssumeRoleWithWebIdentityResponse>`,
        );
      });
    });
    await new Promise<void>((resolve) => sts.listen(0, '127.0.0.1', resolve));
    const saved = { ...process.env };
    Object.assign(process.env, {
      AWS_CONFIG_FILE: '/nonexistent/config',
      AWS_SHARED_CREDENTIALS_FILE: '/nonexistent/credentials',
      AWS_ROLE_ARN: 'arn:aws:iam::123456789012:role/lifeline-backup',
      AWS_WEB_IDENTITY_TOKEN_FILE: join(dir, 'token'),
      AWS_ENDPOINT_URL_STS: `http://127.0.0.1:${(sts.address() as net.AddressInfo).port}`,
    });
    for (const name of ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_SESSION_TOKEN', 'AWS_PROFILE']) delete process.env[name];
    try {
      const store = tempDir('store');
      await writeTestEntry(new Catalog(store), ENV, 'releases', 'v2.0.0', 'release.json', { 'manifest.json': '{"subject":[]}\n' });
      const masked: string[] = [];
      const storage = storageSettings({}, null);
      const before = s3.requests.length;
      const report = await syncEnvironment({
        env: ENV,
        store,
        remote: s3StoreFor(storage, { journalDir: join(store, '.sync'), onSecret: (v) => masked.push(v) }),
        prefix: storage.prefix,
        logger: createMemoryLogger(),
      });
      expect(report).toMatchObject({ uploaded: 1, failed: 0 });
      expect(stsCalls).toHaveLength(1);
      expect(Object.fromEntries(stsCalls[0]!)).toMatchObject({ Action: 'AssumeRoleWithWebIdentity', RoleArn: 'arn:aws:iam::123456789012:role/lifeline-backup', WebIdentityToken: token });
      const sent = s3.requests.slice(before);
      expect(sent.length).toBeGreaterThan(3);
      for (const request of sent) {
        expect(String(request.headers.authorization)).toMatch(/^AWS4-HMAC-SHA256 Credential=ASIALIFELINEWI\//);
        expect(request.headers['x-amz-security-token']).toBe(sessionToken);
      }
      expect(masked.sort()).toEqual([secret, sessionToken].sort());
    } finally {
      process.env = saved;
      sts.close();
    }
  });
});

describe('lifeline sync through the SDK (CLI)', () => {
  function writeConfig(dir: string, storageLines: string[]): string {
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
        `      region: us-east-1`,
        `      bucket: ${s3.bucket}`,
        ...(storageLines.some((l) => l.startsWith('prefix:')) ? [] : [`      prefix: cli-${randomBytes(3).toString('hex')}`]),
        '      reviewed: { provider: s3rver fork, by: ops-lead, date: 2026-11-21 }',
        ...storageLines.map((l) => `      ${l}`),
        '',
      ].join('\n'),
    );
    return path;
  }
  const quiet = {
    LIFELINE_CONFIG: undefined,
    LIFELINE_STORE: undefined,
    AWS_PROFILE: undefined,
    AWS_SESSION_TOKEN: undefined,
    AWS_EC2_METADATA_DISABLED: 'true',
    AWS_CONFIG_FILE: '/nonexistent/config',
    AWS_SHARED_CREDENTIALS_FILE: '/nonexistent/credentials',
  };

  it('a wrong secret key: exit 2, the fix names the key pair, the secret is printed nowhere, nothing reaches the bucket', async () => {
    const dir = tempDir('cli');
    await seed(join(dir, 'store'), 1000);
    const config = writeConfig(dir, [`endpoint: ${s3.endpoint}`, 'accessKeyIdEnv: SHOP_S3_KEY', 'secretAccessKeyEnv: SHOP_S3_SECRET']);
    const wrongSecret = `wrong-${SECRET}`;
    const before = s3.requests.length;
    const run = await lifeline(['sync', '--config', config, '--env', ENV, '--json'], { env: { ...quiet, SHOP_S3_KEY: KEY_ID, SHOP_S3_SECRET: wrongSecret } });
    expect(run.code).toBe(2);
    const error = JSON.parse(run.stdout).error;
    expect(error).toMatchObject({ code: 'SignatureDoesNotMatch', fix: expect.stringContaining('access key / secret key') });
    expect(error.message).toMatch(/403 SignatureDoesNotMatch: The request signature we calculated does not match/);
    expect(run.stdout + run.stderr).not.toContain(wrongSecret);
    expect(run.stdout + run.stderr).not.toContain(SECRET);
    const sent = s3.requests.slice(before);
    expect(sent.map((r) => r.method)).toEqual(['GET']); // the first listing, refused and not retried
  });

  it('credentials from a profile of the shared config files; a provider that keeps failing gives a clear error after storage.maxAttempts', async () => {
    const dir = tempDir('cli');
    await seed(join(dir, 'store'), 1000);
    const awsConfig = join(dir, 'aws-config');
    const awsCredentials = join(dir, 'aws-credentials');
    writeFileSync(awsConfig, '[default]\nregion = eu-west-1\n\n[profile lifeline-backup]\nregion = us-east-1\n');
    writeFileSync(
      awsCredentials,
      `[default]\naws_access_key_id = ${KEY_ID}\naws_secret_access_key = not-the-default-secret\n\n[lifeline-backup]\naws_access_key_id = ${PROFILE_KEY_ID}\naws_secret_access_key = ${PROFILE_SECRET}\n`,
      { mode: 0o600 },
    );
    const env = { ...quiet, AWS_CONFIG_FILE: awsConfig, AWS_SHARED_CREDENTIALS_FILE: awsCredentials, AWS_ACCESS_KEY_ID: undefined, AWS_SECRET_ACCESS_KEY: undefined };
    const config = writeConfig(dir, [`endpoint: ${s3.endpoint}`, 'profile: lifeline-backup']);
    const before = s3.requests.length;
    const run = await lifeline(['sync', '--config', config, '--env', ENV, '--json'], { env });
    expect(run.stderr).not.toContain(PROFILE_SECRET);
    expect(run.stdout).not.toContain(PROFILE_SECRET);
    expect(run.code).toBe(0);
    expect(JSON.parse(run.stdout).bucket).toMatchObject({ uploaded: 4, failed: 0 });
    const signed = s3.requests.slice(before).map((r) => String(r.headers.authorization ?? ''));
    expect(signed.length).toBeGreaterThan(5);
    for (const authorization of signed) expect(authorization).toMatch(/^AWS4-HMAC-SHA256 Credential=LIFELINEPROFILEKEY\/\d{8}\/us-east-1\/s3\//);

    // The same profile through a provider that answers 500 to everything: two attempts, then exit 1.
    const proxy = await startFaultProxy(s3.endpoint, () => ({ status: 500 }));
    try {
      const failing = writeConfig(dir, [`endpoint: ${proxy.endpoint}`, 'profile: lifeline-backup', 'maxAttempts: 2']);
      const failed = await lifeline(['sync', '--config', failing, '--env', ENV], { env });
      expect(failed.code).toBe(1);
      expect(failed.stderr).toMatch(/500 InternalError.*after 2 attempts/);
      expect(failed.stderr).toMatch(/storage\.maxAttempts/);
      expect(failed.stderr).not.toContain(PROFILE_SECRET);
      expect(proxy.seen).toHaveLength(2);
    } finally {
      await proxy.close();
    }
  });

  it('a sync killed (SIGKILL) in the middle of a multipart upload: nothing looks complete, and the next run sends only the missing part', async () => {
    const dir = tempDir('cli');
    const catalog = new Catalog(join(dir, 'store'));
    await writeTestEntry(catalog, ENV, 'backups', '20261121T010000000Z-dddddd', 'backup.json', { 'postgres.dump': 17 * MiB }, {}, '2026-11-21T01:00:00.000Z');
    // Default part size 8 MiB: parts 1 and 2 pass, part 3 stalls until the process is killed.
    const proxy = await startFaultProxy(s3.endpoint, ({ url }) => (url.includes('partNumber=3') ? 'hold' : 'pass'));
    const prefixLine = `prefix: killed-${randomBytes(3).toString('hex')}`;
    const env = { ...process.env, ...quiet, SHOP_S3_KEY: KEY_ID, SHOP_S3_SECRET: SECRET } as Record<string, string | undefined>;
    for (const [k, v] of Object.entries(env)) if (v === undefined) delete env[k];
    const journalDir = join(dir, 'store', '.sync', ENV, 'uploads');
    const journaledParts = () =>
      existsSync(journalDir)
        ? readdirSync(journalDir)
            .filter((f) => f.endsWith('.json'))
            .flatMap((f) => (JSON.parse(readFileSync(join(journalDir, f), 'utf8')) as { parts: unknown[] }).parts)
        : [];
    try {
      const config = writeConfig(dir, [`endpoint: ${proxy.endpoint}`, 'accessKeyIdEnv: SHOP_S3_KEY', 'secretAccessKeyEnv: SHOP_S3_SECRET', prefixLine]);
      const child = spawn(process.execPath, ['--import', 'tsx', join(REPO, 'src/cli/index.ts'), 'sync', '--config', config, '--env', ENV], {
        cwd: REPO,
        env: env as NodeJS.ProcessEnv,
        stdio: 'ignore',
      });
      const exited = new Promise<number | null>((resolve) => child.on('close', (code, signal) => resolve(signal ? -1 : code)));
      try {
        const deadline = Date.now() + 90_000;
        while (!(journaledParts().length === 2 && proxy.seen.some((r) => r.url.includes('partNumber=3'))) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
        expect(journaledParts()).toHaveLength(2);
      } finally {
        child.kill('SIGKILL');
      }
      expect(await exited).toBe(-1);
    } finally {
      await proxy.close();
    }
    // Killed between parts: the bucket holds no object of the entry, and the comparison says so.
    const storage = storageSettings({ prefix: `${prefixLine.slice('prefix: '.length)}/` });
    const remote = s3StoreFor(storage, { journalDir });
    const midway = await compareRemote({ env: ENV, store: join(dir, 'store'), remote, prefix: storage.prefix });
    expect(midway.inSync).toEqual([]);
    expect(midway.missingRemotely.map((e) => e.id)).toEqual(['20261121T010000000Z-dddddd']);

    // The rerun (the same sync code the CLI runs, straight to the server) sends part 3 only.
    const before = s3.requests.length;
    const rerun = await syncEnvironment({ env: ENV, store: join(dir, 'store'), remote, prefix: storage.prefix, logger: createMemoryLogger() });
    expect(rerun.entries[0]).toMatchObject({ status: 'uploaded', resumedParts: 2 });
    expect(partNumbers(s3.requests.slice(before))).toEqual([3]);
    const after = await compareRemote({ env: ENV, store: join(dir, 'store'), remote, prefix: storage.prefix, deep: true });
    expect(after.inSync.map((e) => e.id)).toEqual(['20261121T010000000Z-dddddd']);
    expect(journaledParts()).toEqual([]);
  });
});
