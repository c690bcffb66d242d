import { describe, expect, it } from 'vitest';
import { sharedDatabaseWarnings, urlSources } from '../../src/commands/config';
import { parseConfig } from '../../src/settings/load';
import { resolveFromConfig } from '../../src/settings/resolve';

const loaded = {
  path: '/etc/lifeline/lifeline.yml',
  config: parseConfig(
    [
      'version: 1',
      'environments:',
      '  production:',
      '    postgres: { urlEnv: DATABASE_URL }',
      '    redis: { urlEnv: REDIS_URL }',
      '  staging:',
      '    postgres: { urlEnv: STAGING_DATABASE_URL }',
      '    redis: { urlEnv: STAGING_REDIS_URL }',
      '  scratch: {}',
      '',
    ].join('\n'),
  ),
};
const env = {
  DATABASE_URL: 'postgres://app:prod-secret@db.internal:5432/shop',
  REDIS_URL: 'redis://:prod-redis@cache.internal:6379/0',
  STAGING_DATABASE_URL: 'postgres://app:staging-secret@db.internal:5432/shop_staging',
  STAGING_REDIS_URL: 'redis://:staging-redis@cache.internal:6379/1',
};
const resolve = (name: string, vars: Record<string, string | undefined> = env, flags: { databaseUrl?: string; redisUrl?: string } = {}) =>
  resolveFromConfig(loaded, { env: name, ...flags }, { env: vars, cwd: '/' });

describe('each environment reaches the servers its config names (issue 16 item 8)', () => {
  it('staging takes its own variables for PostgreSQL and Redis even with DATABASE_URL and REDIS_URL set', () => {
    const staging = resolve('staging');
    expect(staging.postgres).toMatchObject({ url: env.STAGING_DATABASE_URL, urlSource: 'STAGING_DATABASE_URL (environments.staging.postgres.urlEnv)' });
    expect(staging.redis).toMatchObject({ url: env.STAGING_REDIS_URL, urlSource: 'STAGING_REDIS_URL (environments.staging.redis.urlEnv)' });
    expect(staging.secrets).toEqual(expect.arrayContaining(['staging-secret', 'staging-redis']));
    expect(staging.secrets).not.toContain('prod-secret');
  });

  it("an unset named variable leaves the URL unset instead of borrowing production's", () => {
    const staging = resolve('staging', { DATABASE_URL: env.DATABASE_URL, REDIS_URL: env.REDIS_URL });
    expect(staging.postgres.url).toBeUndefined();
    expect(staging.redis?.url).toBeUndefined();
    expect(urlSources(staging)).toEqual(['staging: postgres URL not set (STAGING_DATABASE_URL is empty)', 'staging: redis URL not set (STAGING_REDIS_URL is empty)']);
  });

  it('flags win for the one command they are given to', () => {
    const flagged = resolve('staging', env, { databaseUrl: 'postgres://a:b@other:5432/x', redisUrl: 'redis://other:6379/0' });
    expect(flagged.postgres).toMatchObject({ url: 'postgres://a:b@other:5432/x', urlSource: '--database-url' });
    expect(flagged.redis).toMatchObject({ url: 'redis://other:6379/0', urlSource: '--redis-url' });
  });

  it('warns only when two environments reach the same server and database', () => {
    const all = ['production', 'staging', 'scratch'].map((name) => resolve(name));
    // scratch names no variable, so DATABASE_URL (production's database) applies to it.
    expect(sharedDatabaseWarnings(all)).toEqual([
      expect.stringContaining(
        'production (URL from DATABASE_URL (environments.production.postgres.urlEnv)) and scratch (URL from DATABASE_URL) resolve to the same PostgreSQL server and database (db.internal:5432/shop)',
      ),
    ]);
    expect(sharedDatabaseWarnings(all.slice(0, 2))).toEqual([]);
    // Same server, same database under another name of the port's default: still one database.
    const same = resolve('staging', { ...env, STAGING_DATABASE_URL: 'postgres://other:pw@DB.INTERNAL/shop' });
    expect(sharedDatabaseWarnings([all[0]!, same])).toHaveLength(1);
    expect(sharedDatabaseWarnings(all).join('\n')).not.toMatch(/secret/);
  });
});
