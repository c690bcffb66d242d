import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { isLifelineError } from '../../src/errors';
import { parseConfig } from '../../src/settings/load';
import { parseDuration } from '../../src/settings/duration';
import { resolveEnvironment, resolveFromConfig } from '../../src/settings/resolve';
import { lifeline, REPO } from '../helpers/cli';
import { tempDir } from '../helpers/db';

function configError(text: string): string {
  try {
    parseConfig(text, 'lifeline.yml');
  } catch (error) {
    if (isLifelineError(error)) {
      expect(error.exitCode).toBe(2);
      return error.message;
    }
    throw error;
  }
  throw new Error('expected the config to be rejected');
}

describe('lifeline.yml validation', () => {
  it('accepts the shipped example config', () => {
    const config = parseConfig(readFileSync(join(REPO, 'examples/lifeline.yml'), 'utf8'));
    expect(Object.keys(config.environments)).toEqual(expect.arrayContaining(['production', 'staging']));
  });

  it('names the key path, the line, and suggests the nearest key for a typo', () => {
    const message = configError('version: 1\nenvironments:\n  production:\n    rpo: 15m\n    postgress:\n      urlEnv: DATABASE_URL\n');
    expect(message).toContain('environments.production.postgress');
    expect(message).toContain('lifeline.yml:5');
    expect(message).toContain('did you mean "postgres"?');
  });

  it('explains a bad duration with an example of a good one', () => {
    const message = configError('version: 1\nenvironments:\n  production:\n    rpo: fifteen minutes\n');
    expect(message).toContain('environments.production.rpo');
    expect(message).toMatch(/90s, 15m, 4h or 7d/);
  });

  it('reports a missing required key and a bad enum', () => {
    expect(configError('environments: {}\n')).toContain('version: required');
    const message = configError('version: 1\nenvironments:\n  staging:\n    tenants:\n      format: xml\n');
    expect(message).toContain('environments.staging.tenants.format');
    expect(message).toContain('"ndjson", "csv"');
  });

  it('reports YAML syntax errors with their line', () => {
    expect(configError('version: 1\nenvironments:\n  production:\n    rpo: [15m\n')).toMatch(/lifeline\.yml:\d+: not valid YAML/);
  });

  it('parses durations and rejects nonsense', () => {
    expect(parseDuration('90s')).toBe(90);
    expect(parseDuration('15m')).toBe(900);
    expect(parseDuration('4h')).toBe(14400);
    expect(parseDuration('7d')).toBe(604800);
    expect(() => parseDuration('7 days')).toThrow(/not a duration/);
  });
});

describe('settings precedence: flags > environment variables > file', () => {
  const loaded = {
    path: '/etc/lifeline/lifeline.yml',
    config: parseConfig('version: 1\nstore: /srv/backups\nenvironments:\n  production:\n    postgres:\n      urlEnv: PROD_DB\n'),
  };
  const env = { PROD_DB: 'postgres://app:file-secret@db:5432/shop' };

  it('takes the URL from the configured variable, and masks its password', () => {
    const s = resolveFromConfig(loaded, { env: 'production' }, { env, cwd: '/' });
    expect(s.postgres.url).toBe(env.PROD_DB);
    expect(s.secrets).toContain('file-secret');
    expect(s.store).toBe('/srv/backups');
  });

  it('keeps the variable the environment names over DATABASE_URL, lets LIFELINE_STORE win over the file, and flags over both', () => {
    const fromEnv = resolveFromConfig(loaded, { env: 'production' }, { env: { ...env, DATABASE_URL: 'postgres://a:b@env:5432/x', LIFELINE_STORE: '/env/store' }, cwd: '/' });
    expect(fromEnv.postgres.url).toBe(env.PROD_DB);
    expect(fromEnv.postgres.urlSource).toBe('PROD_DB (environments.production.postgres.urlEnv)');
    expect(fromEnv.store).toBe('/env/store');
    // Named but unset: no URL at all, never the generic DATABASE_URL (another environment's server).
    const unset = resolveFromConfig(loaded, { env: 'production' }, { env: { DATABASE_URL: 'postgres://a:b@env:5432/x' }, cwd: '/' });
    expect(unset.postgres.url).toBeUndefined();
    expect(unset.postgres.urlEnv).toBe('PROD_DB');
    // An environment that names none takes DATABASE_URL.
    const unnamed = resolveFromConfig({ path: undefined, config: parseConfig('version: 1\nenvironments: {}\n') }, {}, { env: { DATABASE_URL: 'postgres://a:b@env:5432/x' }, cwd: '/' });
    expect(unnamed.postgres).toMatchObject({ url: 'postgres://a:b@env:5432/x', urlSource: 'DATABASE_URL' });
    const fromFlag = resolveFromConfig(
      loaded,
      { env: 'production', databaseUrl: 'postgres://a:b@flag:5432/x', store: '/flag/store' },
      { env: { ...env, DATABASE_URL: 'postgres://a:b@env:5432/x' }, cwd: '/' },
    );
    expect(fromFlag.postgres.url).toContain('@flag:5432');
    expect(fromFlag.store).toBe('/flag/store');
  });

  it('refuses an environment the file does not declare, suggesting the nearest', () => {
    expect(() => resolveFromConfig(loaded, { env: 'prodution' }, { env, cwd: '/' })).toThrow(/not declared/);
    try {
      resolveFromConfig(loaded, { env: 'prodution' }, { env, cwd: '/' });
    } catch (error) {
      expect((error as { fix: string }).fix).toContain('--env production');
    }
  });

  it('works without a config file (one-off use), with the default environment', () => {
    const dir = tempDir();
    try {
      const s = resolveEnvironment({}, { env: { DATABASE_URL: 'postgres://u:p@h:1/d' }, cwd: dir.path });
      expect(s.name).toBe('default');
      expect(s.store).toBe(join(dir.path, '.lifeline'));
    } finally {
      dir.cleanup();
    }
  });

  it('rejects a URL with the wrong scheme with an example of the right one', () => {
    expect(() => resolveFromConfig(loaded, { env: 'production', databaseUrl: 'mysql://x@y/z' }, { env, cwd: '/' })).toThrow(/scheme/);
  });
});

describe('lifeline config check', () => {
  const dirs: Array<() => void> = [];
  afterEach(() => dirs.splice(0).forEach((c) => c()));

  it('prints the resolved example config with secrets masked', async () => {
    const run = await lifeline(['config', 'check', '--config', 'examples/lifeline.yml', '--json'], {
      env: { DATABASE_URL_PRODUCTION: 'postgres://shop:hunter2-secret@127.0.0.1:5432/shop', DATABASE_URL_STAGING: 'postgres://shop:hunter3-secret@127.0.0.1:5432/shop_staging' },
    });
    expect(run.code).toBe(0);
    expect(run.stdout).not.toContain('hunter2-secret');
    const result = JSON.parse(run.stdout);
    expect(result.valid).toBe(true);
    expect(result.environments.production.postgres.url).toBe('postgres://shop:***@127.0.0.1:5432/shop');
    // The example's schedules meet its targets: copied as it is, it raises no warning.
    expect(result.warnings).toEqual([]);
  });

  it('warns when the backup schedule cannot keep the RPO, or drills cannot keep the gate maximum age', async () => {
    const dir = tempDir();
    dirs.push(dir.cleanup);
    const path = join(dir.path, 'lifeline.yml');
    writeFileSync(
      path,
      'version: 1\nenvironments:\n  production:\n    rpo: 15m\n    backup: { every: 1h }\n    drill: { maxAge: 7d, every: 7d }\n  staging:\n    rpo: 2h\n    backup: { every: 1h }\n',
    );
    const run = await lifeline(['config', 'check', '--config', path, '--json']);
    expect(run.code, run.stderr).toBe(0);
    const warnings = JSON.parse(run.stdout).warnings as string[];
    expect(warnings).toEqual([
      expect.stringContaining('environment production: backups every 1h cannot keep an RPO of 15m'),
      expect.stringContaining('environment production: drills every 7d cannot keep the newest passing drill younger than drill.maxAge 7d'),
    ]);
    expect(warnings[0]).toContain('back up at least every 11m');
  });

  it('exits 2 on a broken config, naming the key', async () => {
    const dir = tempDir();
    dirs.push(dir.cleanup);
    const path = join(dir.path, 'lifeline.yml');
    writeFileSync(path, 'version: 1\nenvironments:\n  production:\n    retention:\n      keepLatest: 3\n');
    const run = await lifeline(['config', 'check', '--config', path]);
    expect(run.code).toBe(2);
    expect(run.stderr).toContain('environments.production.retention.keepLatest');
    expect(run.stderr).toContain('did you mean "keepLast"?');
  });

  it('exits 2 when an explicit --config does not exist', async () => {
    const run = await lifeline(['config', 'check', '--config', '/nonexistent/lifeline.yml', '--json']);
    expect(run.code).toBe(2);
    expect(JSON.parse(run.stdout).error.code).toBe('CONFIG_NOT_FOUND');
  });
});

describe('empty values mean unset', () => {
  it('ignores an empty LIFELINE_STORE, DATABASE_URL or flag (as GitHub passes unset secrets)', () => {
    const loaded = { path: '/etc/lifeline/lifeline.yml', config: parseConfig('version: 1\nstore: /srv/backups\nenvironments:\n  production:\n    postgres:\n      urlEnv: PROD_DB\n') };
    const s = resolveFromConfig(loaded, { env: 'production', store: '', databaseUrl: '' }, { env: { LIFELINE_STORE: '', DATABASE_URL: '', PROD_DB: 'postgres://a:b@db:5432/shop' }, cwd: '/work' });
    expect(s.store).toBe('/srv/backups');
    expect(s.postgres.url).toBe('postgres://a:b@db:5432/shop');
  });
});

describe('the implicit default environment beside an encrypted one', () => {
  it('is refused (exit 2) instead of writing plaintext backups of the same database', async () => {
    const { generateIdentity, identityToRecipient } = await import('age-encryption');
    const recipient = await identityToRecipient(await generateIdentity());
    const loaded = { path: '/etc/lifeline/lifeline.yml', config: parseConfig(`version: 1\nenvironments:\n  production:\n    encryption:\n      recipients: [${recipient}]\n`) };
    const env = { DATABASE_URL: 'postgres://app:pw@db:5432/shop' };
    let error: unknown;
    try {
      resolveFromConfig(loaded, {}, { env, cwd: '/' });
    } catch (e) {
      error = e;
    }
    expect(isLifelineError(error) && error.exitCode).toBe(2);
    expect((error as Error).message).toMatch(/"default" is not declared .* encrypts the backups of production/);
    expect((error as { fix?: string }).fix).toMatch(/--env production/);
    // Named explicitly, or through LIFELINE_ENV, the declared environment resolves with its recipients.
    expect(resolveFromConfig(loaded, {}, { env: { ...env, LIFELINE_ENV: 'production' }, cwd: '/' }).encryption?.recipients).toEqual([recipient]);
    // A config that encrypts nothing keeps the old rule (the undeclared default works from flags and variables).
    const plain = { path: '/etc/lifeline/lifeline.yml', config: parseConfig('version: 1\nenvironments:\n  production: {}\n') };
    expect(resolveFromConfig(plain, {}, { env, cwd: '/' }).name).toBe('default');
  });
});
