import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { lifeline } from '../helpers/cli';
import { createDatabase, createSampleDatabase, dropDatabase, tableCounts, tempDir } from '../helpers/db';
import { startS3Server, type TestS3Server } from '../helpers/s3';

// A backup that lives only in the bucket (the database host was lost) restores through
// `restore --from-remote`, and `verify --remote` tells what the bucket and the catalog disagree on.
describe('restoring from reviewed object storage', () => {
  let s3: TestS3Server;
  let source: Awaited<ReturnType<typeof createSampleDatabase>>;
  const dir = tempDir('lifeline-remote-');
  const created: string[] = [];
  let env: Record<string, string | undefined>;
  let config: string;

  beforeAll(async () => {
    s3 = await startS3Server();
    source = await createSampleDatabase(1, 'remote_src');
    config = join(dir.path, 'lifeline.yml');
    writeFileSync(
      config,
      [
        'version: 1',
        'environments:',
        '  production:',
        `    store: ${join(dir.path, 'store')}`,
        '    postgres: { urlEnv: SHOP_DATABASE_URL }',
        '    storage:',
        '      provider: s3',
        `      endpoint: ${s3.endpoint}`,
        '      region: us-east-1',
        `      bucket: ${s3.bucket}`,
        '      prefix: remote-restore',
        '      accessKeyIdEnv: SHOP_S3_KEY',
        '      secretAccessKeyEnv: SHOP_S3_SECRET',
        '      reviewed: { provider: s3rver, by: ops-lead, date: 2026-11-21 }',
        '',
      ].join('\n'),
    );
    env = { SHOP_DATABASE_URL: source.url, SHOP_S3_KEY: s3.accessKeyId, SHOP_S3_SECRET: s3.secretAccessKey, DATABASE_URL: undefined, LIFELINE_STORE: undefined, LIFELINE_CONFIG: undefined };
  });
  afterAll(async () => {
    await Promise.allSettled([s3?.close(), dropDatabase(source.name), ...created.map((name) => dropDatabase(name))]);
    dir.cleanup();
  });

  it('syncs a backup, loses the local copy, then restores it from the bucket with checksums checked', async () => {
    const base = ['--config', config, '--env', 'production'];
    const backup = await lifeline(['backup', ...base, '--json'], { env });
    expect(backup.code, backup.stderr).toBe(0);
    const { id } = JSON.parse(backup.stdout) as { id: string };
    const sync = await lifeline(['sync', ...base], { env });
    expect(sync.code, sync.stderr).toBe(0);

    const inSync = await lifeline(['verify', '--remote', '--all', ...base, '--json'], { env });
    expect(inSync.code, inSync.stderr).toBe(0);
    expect(JSON.parse(inSync.stdout).missingRemotely).toEqual([]);
    const named = await lifeline(['verify', '--remote', id, ...base, '--json'], { env });
    expect(named.code, named.stderr).toBe(0);
    expect(JSON.parse(named.stdout)).toMatchObject({ id, ok: true, against: 'the local SHA256SUMS' });

    rmSync(join(dir.path, 'store', 'production', 'backups', id), { recursive: true });
    const drift = await lifeline(['verify', '--remote', '--all', ...base, '--json'], { env });
    expect(JSON.parse(drift.stdout).missingLocally.map((e: { id: string }) => e.id)).toContain(id);

    const target = await createDatabase('remote_dst');
    created.push(target.name);
    const restore = await lifeline(['restore', ...base, '--backup', id, '--from-remote', '--target', target.url], { env });
    expect(restore.code, restore.stderr).toBe(0);
    expect(restore.stderr).toContain(`fetched backup ${id}`);
    expect(await tableCounts(target.name)).toEqual(await tableCounts(source.name));
  });
});
