import { describe, expect, it } from 'vitest';
import { LifelineError } from '../../src/errors';
import { resolveFromConfig } from '../../src/settings/resolve';
import { configSchema } from '../../src/settings/schema';
import { metadataFileOf, RemoteLayout, asEntryKind } from '../../src/storage/entries';
import { REVIEW_CHECKLIST, requireReviewedStorage } from '../../src/storage/review';
import { S3Client, xmlBlocks, xmlValue } from '../../src/storage/s3';

const EMPTY_SHA256 = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';

/** The worked examples of AWS's "Signature Version 4 for Amazon S3" documentation. */
describe('SigV4 signing', () => {
  const client = new S3Client({
    region: 'us-east-1',
    bucket: 'examplebucket',
    credentials: { accessKeyId: 'AKIAIOSFODNN7EXAMPLE', secretAccessKey: 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY' },
    now: () => new Date('2013-05-24T00:00:00Z'),
  });

  it('matches the GET object example', () => {
    const headers = client.sign('GET', new URL('https://examplebucket.s3.amazonaws.com/test.txt'), { range: 'bytes=0-9' }, EMPTY_SHA256);
    expect(headers.authorization).toBe(
      'AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41',
    );
  });

  it('matches the list objects example (sorted, encoded query)', () => {
    const headers = client.sign('GET', new URL('https://examplebucket.s3.amazonaws.com/?max-keys=2&prefix=J'), {}, EMPTY_SHA256);
    expect(headers.authorization).toContain('Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7');
  });

  it('addresses path-style on a custom endpoint and encodes key segments', () => {
    const custom = new S3Client({ endpoint: 'http://127.0.0.1:9000/', region: 'eu-west-1', bucket: 'shop', credentials: { accessKeyId: 'a', secretAccessKey: 'b' } });
    expect(custom.url('prod/backups/a b+c(1)/x.json').toString()).toBe('http://127.0.0.1:9000/shop/prod/backups/a%20b%2Bc%281%29/x.json');
    const aws = new S3Client({ region: 'eu-west-1', bucket: 'shop', credentials: { accessKeyId: 'a', secretAccessKey: 'b' } });
    expect(aws.url('k').toString()).toBe('https://shop.s3.eu-west-1.amazonaws.com/k');
  });

  it('reads the XML S3 answers with', () => {
    const xml = '<ListBucketResult><Contents><Key>a&amp;b</Key><Size>3</Size></Contents><Contents><Key>c</Key><Size>4</Size></Contents><IsTruncated>false</IsTruncated></ListBucketResult>';
    expect(xmlBlocks(xml, 'Contents').map((b) => xmlValue(b, 'Key'))).toEqual(['a&b', 'c']);
    expect(xmlValue(xml, 'IsTruncated')).toBe('false');
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
    expect(settingsFor(BASE, { AWS_ACCESS_KEY_ID: 'k', AWS_SECRET_ACCESS_KEY: 's', AWS_SESSION_TOKEN: 't' }).storage?.credentials).toEqual({ accessKeyId: 'k', secretAccessKey: 's', sessionToken: 't' });
    const missing = settingsFor(BASE, {});
    expect(missing.storage?.credentials).toBeUndefined();
    expect(missing.storage?.credentialEnv).toEqual({ accessKeyId: 'AWS_ACCESS_KEY_ID', secretAccessKey: 'AWS_SECRET_ACCESS_KEY' });
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
    expect(() => requireReviewedStorage('production', at('2026-12-01'), now)).toThrow(expect.objectContaining({ exitCode: 3, code: 'STORAGE_REVIEW_DATE', message: expect.stringMatching(/is dated 2026-12-01, in the future \(today is 2026-11-21 UTC\)/) }));
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
    const sums = [{ file: 'manifest.json', sha256: 'a' }, { file: 'manifest.sigstore.json', sha256: 'b' }];
    expect(metadataFileOf(['SHA256SUMS', 'manifest.json', 'manifest.sigstore.json', 'release.json'], sums)).toBe('release.json');
    expect(metadataFileOf(['SHA256SUMS', 'manifest.json', 'manifest.sigstore.json'], sums)).toBeUndefined();
    // A drill's report.json is covered by SHA256SUMS (it is signed) and is still its metadata.
    const drillSums = [{ file: 'report.json', sha256: 'a' }, { file: 'report.sigstore.json', sha256: 'b' }, { file: 'summary.md', sha256: 'c' }];
    expect(metadataFileOf(['SHA256SUMS', 'report.json', 'report.sigstore.json', 'summary.md'], drillSums)).toBe('report.json');
    expect(metadataFileOf(['SHA256SUMS', 'report.sigstore.json', 'summary.md'], drillSums)).toBeUndefined();
  });

  it('accepts only catalog kinds for fetch', () => {
    expect(asEntryKind('tenants/acme/exports')).toBe('tenants/acme/exports');
    expect(() => asEntryKind('../etc')).toThrow(expect.objectContaining({ exitCode: 2 }));
  });
});
