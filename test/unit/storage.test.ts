import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { LifelineError } from '../../src/errors';
import { resolveFromConfig } from '../../src/settings/resolve';
import { configSchema } from '../../src/settings/schema';
import { metadataFileOf, RemoteLayout, asEntryKind } from '../../src/storage/entries';
import { REVIEW_CHECKLIST, requireReviewedStorage } from '../../src/storage/review';
import { s3StoreFor } from '../../src/storage/object-store';
import { S3Client, S3RequestError, translateS3Error } from '../../src/storage/s3';

interface Captured {
  method: string;
  hostname: string;
  path: string;
  query: Record<string, unknown>;
  headers: Record<string, string>;
}

/** An SDK request handler that records each request and answers from a script, with no network. */
function scriptedHandler(answer: (request: Captured, index: number) => { status: number; body?: string; headers?: Record<string, string> }) {
  const seen: Captured[] = [];
  const handler = {
    metadata: { handlerProtocol: 'http/1.1' },
    async handle(request: { method: string; hostname: string; path: string; query: Record<string, unknown>; headers: Record<string, string>; body?: unknown }) {
      const captured = { method: request.method, hostname: request.hostname, path: request.path, query: { ...request.query }, headers: { ...request.headers } };
      seen.push(captured);
      const reply = answer(captured, seen.length - 1);
      return { response: { statusCode: reply.status, reason: '', headers: reply.headers ?? {}, body: Readable.from([Buffer.from(reply.body ?? '')]) } };
    },
    updateHttpClientConfig() {},
    httpHandlerConfigs: () => ({}),
    destroy() {},
  };
  return { handler, seen };
}

const SECRET = 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY';
const KEYS = { accessKeyId: 'AKIAIOSFODNN7EXAMPLE', secretAccessKey: SECRET };
const checksums = { md5Base64: createHash('md5').update('abc').digest('base64'), sha256Base64: createHash('sha256').update('abc').digest('base64') };

describe('the SDK client: addressing, signing, checksums', () => {
  it('addresses path-style on a custom endpoint (encoding key segments), virtual-hosted on AWS, and signs with SigV4', async () => {
    const { handler, seen } = scriptedHandler(() => ({ status: 200, headers: { 'content-length': '3', etag: '"x"', 'x-amz-meta-sha256': 'ab' } }));
    const custom = new S3Client({ endpoint: 'http://127.0.0.1:9000/', region: 'eu-west-1', bucket: 'shop', credentials: KEYS, requestHandler: handler as never });
    expect(await custom.headObject('prod/backups/a b+c(1)/x.json')).toMatchObject({ size: 3, metadata: { sha256: 'ab' } });
    expect(seen[0]).toMatchObject({ method: 'HEAD', hostname: '127.0.0.1', path: '/shop/prod/backups/a%20b%2Bc%281%29/x.json' });
    expect(seen[0]!.headers.authorization).toMatch(/^AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE\/\d{8}\/eu-west-1\/s3\/aws4_request, SignedHeaders=[a-z0-9;-]+, Signature=[0-9a-f]{64}$/);
    const aws = new S3Client({ region: 'eu-west-1', bucket: 'shop', credentials: KEYS, requestHandler: handler as never });
    await aws.headObject('k');
    expect(seen[1]).toMatchObject({ hostname: 'shop.s3.eu-west-1.amazonaws.com', path: '/k' });
    const virtual = new S3Client({ endpoint: 'https://objects.example.net', pathStyle: false, region: 'auto', bucket: 'shop', credentials: KEYS, requestHandler: handler as never });
    await virtual.headObject('k');
    expect(seen[2]).toMatchObject({ hostname: 'shop.objects.example.net', path: '/k' });
  });

  it('uploads carry Content-MD5 and x-amz-checksum-sha256, never the SDK default CRC32 or aws-chunked bodies; checksums: none sends no flexible checksum', async () => {
    const { handler, seen } = scriptedHandler(() => ({ status: 200, headers: { etag: '"e"' } }));
    const attributes = { metadata: { sha256: 'ba7816bf' } };
    await new S3Client({ endpoint: 'http://127.0.0.1:9000', region: 'us-east-1', bucket: 'b', credentials: KEYS, requestHandler: handler as never }).putObject(
      'k',
      Buffer.from('abc'),
      attributes,
      checksums,
    );
    await new S3Client({ endpoint: 'http://127.0.0.1:9000', region: 'us-east-1', bucket: 'b', credentials: KEYS, checksums: 'none', requestHandler: handler as never }).putObject(
      'k',
      Buffer.from('abc'),
      attributes,
      checksums,
    );
    const [withSha, without] = seen;
    expect(withSha!.headers).toMatchObject({ 'content-md5': checksums.md5Base64, 'x-amz-checksum-sha256': checksums.sha256Base64, 'x-amz-meta-sha256': 'ba7816bf', 'content-length': '3' });
    for (const request of [withSha!, without!]) {
      expect(Object.keys(request.headers).filter((h) => /crc|sdk-checksum|x-amz-trailer|x-amz-decoded/.test(h))).toEqual([]);
      expect(request.headers['content-encoding'] ?? '').not.toContain('aws-chunked');
      expect(request.headers['x-amz-content-sha256']).toMatch(/^[0-9a-f]{64}$|^UNSIGNED-PAYLOAD$/);
    }
    expect(Object.keys(without!.headers).filter((h) => h.startsWith('x-amz-checksum'))).toEqual([]);
    expect(without!.headers['content-md5']).toBe(checksums.md5Base64);
  });
});

describe('SDK errors in Lifeline terms', () => {
  const errorXml = (code: string, message: string) => `<?xml version="1.0" encoding="UTF-8"?><Error><Code>${code}</Code><Message>${message}</Message><RequestId>r</RequestId></Error>`;

  it('a wrong secret is a configuration error (exit 2) naming the key pair, retried never, and the secret appears nowhere', async () => {
    const { handler, seen } = scriptedHandler(() => ({ status: 403, body: errorXml('SignatureDoesNotMatch', 'The request signature we calculated does not match the signature you provided.') }));
    const client = new S3Client({ endpoint: 'http://127.0.0.1:9000', region: 'us-east-1', bucket: 'b', credentials: KEYS, requestHandler: handler as never });
    const error = (await client.putObject('k', Buffer.from('abc'), { metadata: {} }, checksums).catch((e: unknown) => e)) as S3RequestError;
    expect(error).toBeInstanceOf(S3RequestError);
    expect(error).toMatchObject({ exitCode: 2, code: 'SignatureDoesNotMatch', status: 403 });
    expect(error.fix).toMatch(/access key \/ secret key/);
    expect(`${error.message} ${error.fix} ${JSON.stringify(error)}`).not.toContain(SECRET);
    expect(seen).toHaveLength(1);
  });

  it('a provider that keeps failing is retried maxAttempts times, then fails (exit 1) saying how often it tried', async () => {
    const { handler, seen } = scriptedHandler(() => ({ status: 503, body: errorXml('SlowDown', 'Please reduce your request rate.') }));
    const client = new S3Client({ endpoint: 'http://127.0.0.1:9000', region: 'us-east-1', bucket: 'b', credentials: KEYS, maxAttempts: 3, requestHandler: handler as never });
    const error = (await client.headObject('k').catch((e: unknown) => e)) as S3RequestError;
    expect(seen).toHaveLength(3);
    expect(error).toMatchObject({ exitCode: 1, status: 503 });
    expect(error.message).toMatch(/after 3 attempts/);
    expect(error.fix).toMatch(/maxAttempts/);
  });

  it('a missing object is undefined, a missing bucket names storage.bucket', async () => {
    const { handler } = scriptedHandler((r) => (r.method === 'HEAD' ? { status: 404 } : { status: 404, body: errorXml('NoSuchBucket', 'The specified bucket does not exist') }));
    const client = new S3Client({ endpoint: 'http://127.0.0.1:9000', region: 'us-east-1', bucket: 'b', credentials: KEYS, requestHandler: handler as never });
    expect(await client.headObject('k')).toBeUndefined();
    const listing = (async () => {
      for await (const _ of client.listObjects('p/')) void _;
    })();
    await expect(listing).rejects.toMatchObject({ code: 'NoSuchBucket', exitCode: 1, fix: expect.stringContaining('storage.bucket') });
  });

  it('a hostile or broken server: a listing that repeats its continuation token, or answers with something that is not XML, fails (exit 1) instead of looping or passing', async () => {
    const page =
      '<?xml version="1.0" encoding="UTF-8"?><ListBucketResult><Name>b</Name><Contents><Key>p/a</Key><Size>1</Size></Contents><IsTruncated>true</IsTruncated><NextContinuationToken>same</NextContinuationToken></ListBucketResult>';
    const looping = new S3Client({
      endpoint: 'http://127.0.0.1:9000',
      region: 'us-east-1',
      bucket: 'b',
      credentials: KEYS,
      requestHandler: scriptedHandler(() => ({ status: 200, body: page })).handler as never,
    });
    const keys: string[] = [];
    await expect(
      (async () => {
        for await (const o of looping.listObjects('p/')) keys.push(o.key);
      })(),
    ).rejects.toMatchObject({ code: 'STORAGE_PROTOCOL', exitCode: 1 });
    expect(keys).toEqual(['p/a', 'p/a']);
    const garbage = new S3Client({
      endpoint: 'http://127.0.0.1:9000',
      region: 'us-east-1',
      bucket: 'b',
      credentials: KEYS,
      maxAttempts: 1,
      requestHandler: scriptedHandler(() => ({ status: 200, body: '<html>captive portal</html><' })).handler as never,
    });
    await expect(
      (async () => {
        for await (const _ of garbage.listObjects('p/')) void _;
      })(),
    ).rejects.toMatchObject({ exitCode: 1 });
  });

  it('maps unreachable endpoints and missing chain credentials', () => {
    const refused = translateS3Error(Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:1'), { code: 'ECONNREFUSED', $metadata: { attempts: 5 } }), 'PUT k', 'http://127.0.0.1:1');
    expect(refused).toMatchObject({ code: 'STORAGE_UNREACHABLE', exitCode: 1, message: expect.stringMatching(/cannot reach the object store.*after 5 attempts/) });
    const none = translateS3Error(Object.assign(new Error('Could not load credentials from any providers'), { name: 'CredentialsProviderError' }), 'PUT k', 's3://b');
    expect(none).toMatchObject({ code: 'STORAGE_CREDENTIALS_MISSING', exitCode: 2, fix: expect.stringContaining('storage.profile') });
  });
});

function settingsFor(storage: Record<string, unknown>, env: Record<string, string | undefined> = {}) {
  const config = configSchema.parse({ version: 1, environments: { production: { storage } } });
  return resolveFromConfig({ config, path: '/srv/shop/lifeline.yml' } as never, { env: 'production' }, { env, cwd: '/srv/shop' });
}

const BASE = { provider: 's3', endpoint: 'https://s3.eu-central-1.example.com', region: 'eu-central-1', bucket: 'shop-backups', prefix: '/lifeline/' };

describe('storage settings', () => {
  it('resolves credentials from the named variables, registers the secret, and keeps both out of serialised settings', () => {
    const settings = settingsFor({ ...BASE, accessKeyIdEnv: 'SHOP_KEY', secretAccessKeyEnv: 'SHOP_SECRET' }, { SHOP_KEY: 'AKIA-shop', SHOP_SECRET: 'very-secret-value' });
    expect(settings.storage?.credentials).toEqual({ accessKeyId: 'AKIA-shop', secretAccessKey: 'very-secret-value', sessionToken: undefined });
    expect(settings.storage?.prefix).toBe('lifeline/');
    expect(settings.secrets).toContain('very-secret-value');
    expect(JSON.stringify(settings.storage)).not.toContain('very-secret-value');
    expect({ ...settings.storage }).not.toHaveProperty('credentials');
  });

  it('falls back to the AWS variables and leaves credentials unset when they are missing', () => {
    expect(settingsFor(BASE, { AWS_ACCESS_KEY_ID: 'k', AWS_SECRET_ACCESS_KEY: 's', AWS_SESSION_TOKEN: 't' }).storage?.credentials).toEqual({
      accessKeyId: 'k',
      secretAccessKey: 's',
      sessionToken: 't',
    });
    const missing = settingsFor(BASE, {});
    expect(missing.storage?.credentials).toBeUndefined();
    expect(missing.storage?.credentialEnv).toEqual({ accessKeyId: 'AWS_ACCESS_KEY_ID', secretAccessKey: 'AWS_SECRET_ACCESS_KEY' });
  });
});

describe('storage settings for the SDK client', () => {
  it('a profile reads the shared files only: the AWS_* key variables are ignored, and the *Env keys are refused beside it', () => {
    const settings = settingsFor({ ...BASE, profile: 'lifeline-backup', maxAttempts: 3, checksums: 'none', pathStyle: false }, { AWS_ACCESS_KEY_ID: 'k', AWS_SECRET_ACCESS_KEY: 's' });
    expect(settings.storage?.credentials).toBeUndefined();
    expect(settings.storage).toMatchObject({ profile: 'lifeline-backup', maxAttempts: 3, checksums: 'none', pathStyle: false });
    expect(() => settingsFor({ ...BASE, profile: 'p', accessKeyIdEnv: 'SHOP_KEY' })).toThrow(/profile or accessKeyIdEnv/);
    expect(() => settingsFor({ ...BASE, maxAttempts: 0 })).toThrow();
    expect(() => settingsFor({ ...BASE, checksums: 'crc32' })).toThrow();
  });

  it('a profile missing from the shared files is exit 2 naming it and the files looked in', async () => {
    const saved = { ...process.env };
    Object.assign(process.env, { AWS_EC2_METADATA_DISABLED: 'true', AWS_CONFIG_FILE: '/nonexistent/config', AWS_SHARED_CREDENTIALS_FILE: '/nonexistent/credentials' });
    delete process.env.AWS_ACCESS_KEY_ID;
    delete process.env.AWS_SECRET_ACCESS_KEY;
    delete process.env.AWS_PROFILE;
    try {
      const { handler, seen } = scriptedHandler(() => ({ status: 200 }));
      const client = new S3Client({ endpoint: 'http://127.0.0.1:9000', region: 'us-east-1', bucket: 'b', profile: 'lifeline-backup', requestHandler: handler as never });
      await expect(client.headObject('k')).rejects.toMatchObject({
        exitCode: 2,
        code: 'STORAGE_CREDENTIALS_MISSING',
        message: expect.stringContaining('storage.profile "lifeline-backup"'),
        fix: expect.stringContaining('[lifeline-backup]'),
      });
      expect(seen).toEqual([]);
    } finally {
      process.env = saved;
    }
  });
});

describe('building the store', () => {
  it('half of the default key pair in the environment is exit 2 naming the missing variable, before any request', () => {
    const saved = { ...process.env };
    try {
      process.env.AWS_ACCESS_KEY_ID = 'AKIA-half';
      delete process.env.AWS_SECRET_ACCESS_KEY;
      const storage = settingsFor(BASE, { AWS_ACCESS_KEY_ID: 'AKIA-half' }).storage!;
      expect(() => s3StoreFor(storage, { journalDir: '/nonexistent' })).toThrow(
        expect.objectContaining({ exitCode: 2, message: expect.stringContaining('AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not') }),
      );
      // With a profile, the key variables play no part (as in the SDK).
      expect(() => s3StoreFor(settingsFor({ ...BASE, profile: 'p' }, {}).storage!, { journalDir: '/nonexistent' })).not.toThrow();
    } finally {
      process.env = saved;
    }
  });
});

describe('review gate', () => {
  it('refuses an unreviewed provider with exit 3 and the five-point checklist', () => {
    const storage = settingsFor(BASE).storage;
    let thrown: unknown;
    try {
      requireReviewedStorage('production', storage);
    } catch (error) {
      thrown = error;
    }
    expect(thrown).toBeInstanceOf(LifelineError);
    const error = thrown as LifelineError;
    expect(error.exitCode).toBe(3);
    expect(error.code).toBe('STORAGE_NOT_REVIEWED');
    expect(REVIEW_CHECKLIST).toHaveLength(5);
    for (const item of REVIEW_CHECKLIST) expect(error.message).toContain(item);
    expect(error.fix).toContain('environments.production.storage.reviewed');
  });

  it('says how to configure storage when there is none (exit 2), and lets a reviewed provider through', () => {
    expect(() => requireReviewedStorage('production', undefined)).toThrow(expect.objectContaining({ exitCode: 2, code: 'STORAGE_NOT_CONFIGURED' }));
    const reviewed = settingsFor({ ...BASE, reviewed: { provider: 'Example Object Storage', by: 'ops-lead', date: '2026-11-20' } }).storage;
    expect(requireReviewedStorage('production', reviewed).reviewed.by).toBe('ops-lead');
  });

  it('refuses a review dated in the future, or on a day that does not exist (exit 3)', () => {
    const now = new Date('2026-11-21T12:00:00Z');
    const at = (date: string) => settingsFor({ ...BASE, reviewed: { provider: 'x', by: 'ops-lead', date } }).storage;
    expect(() => requireReviewedStorage('production', at('2026-12-01'), now)).toThrow(
      expect.objectContaining({ exitCode: 3, code: 'STORAGE_REVIEW_DATE', message: expect.stringMatching(/is dated 2026-12-01, in the future \(today is 2026-11-21 UTC\)/) }),
    );
    expect(() => requireReviewedStorage('production', at('2099-01-01'), now)).toThrow(expect.objectContaining({ exitCode: 3 }));
    expect(() => requireReviewedStorage('production', at('2026-02-31'), now)).toThrow(expect.objectContaining({ exitCode: 3, message: expect.stringMatching(/not a calendar day/) }));
    // Today, and tomorrow where the reviewer's calendar is already there (UTC+14), are believable.
    expect(requireReviewedStorage('production', at('2026-11-21'), now).reviewed.date).toBe('2026-11-21');
    expect(requireReviewedStorage('production', at('2026-11-22'), now).reviewed.date).toBe('2026-11-22');
    expect(() => requireReviewedStorage('production', at('2026-11-23'), now)).toThrow(expect.objectContaining({ exitCode: 3 }));
  });

  it('rejects a review without a proper date at load time', () => {
    expect(() => settingsFor({ ...BASE, reviewed: { provider: 'x', by: 'y', date: 'last week' } })).toThrow();
  });
});

describe('remote layout and entry recognition', () => {
  const layout = new RemoteLayout('lifeline/', 'production');

  it('mirrors the catalog and parses keys of any kind back', () => {
    expect(layout.entryPrefix('tenants/acme/exports', 'x1')).toBe('lifeline/production/tenants/acme/exports/x1/');
    expect(layout.parse('lifeline/production/tenants/acme/exports/x1/export.json')).toEqual({ kind: 'tenants/acme/exports', id: 'x1', file: 'export.json' });
    expect(layout.parse('lifeline/production/backups/b1/backup.json')).toEqual({ kind: 'backups', id: 'b1', file: 'backup.json' });
    expect(layout.parse('lifeline/staging/backups/b1/backup.json')).toBeUndefined();
    expect(layout.parse('lifeline/production/stray.txt')).toBeUndefined();
  });

  it('takes the one JSON file SHA256SUMS does not list as the metadata', () => {
    const sums = [
      { file: 'manifest.json', sha256: 'a' },
      { file: 'manifest.sigstore.json', sha256: 'b' },
    ];
    expect(metadataFileOf(['SHA256SUMS', 'manifest.json', 'manifest.sigstore.json', 'release.json'], sums)).toBe('release.json');
    expect(metadataFileOf(['SHA256SUMS', 'manifest.json', 'manifest.sigstore.json'], sums)).toBeUndefined();
    // A drill's report.json is covered by SHA256SUMS (it is signed) and is still its metadata.
    const drillSums = [
      { file: 'report.json', sha256: 'a' },
      { file: 'report.sigstore.json', sha256: 'b' },
      { file: 'summary.md', sha256: 'c' },
    ];
    expect(metadataFileOf(['SHA256SUMS', 'report.json', 'report.sigstore.json', 'summary.md'], drillSums)).toBe('report.json');
    expect(metadataFileOf(['SHA256SUMS', 'report.sigstore.json', 'summary.md'], drillSums)).toBeUndefined();
  });

  it('accepts only catalog kinds for fetch', () => {
    expect(asEntryKind('tenants/acme/exports')).toBe('tenants/acme/exports');
    expect(() => asEntryKind('../etc')).toThrow(expect.objectContaining({ exitCode: 2 }));
  });
});
