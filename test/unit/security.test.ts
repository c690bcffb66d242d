import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, describe, expect, it } from 'vitest';
import { entryFileNameProblem, isSafeEntryFileName, openEntryFile, readEntryText, sharedStoreProblem } from '../../src/catalog/confine';
import { describeFilesystemError } from '../../src/catalog/fs-errors';
import { Catalog } from '../../src/catalog/store';
import { checkSums } from '../../src/catalog/sums';
import { isLifelineError, LifelineError } from '../../src/errors';
import { redactSecretsInText, SecretMasker } from '../../src/logger';
import { parsePgUrl, pgEnv } from '../../src/runner/postgres-env';
import { parseRedisUrl } from '../../src/redis/snapshot';
import { parseConfig, loadConfig } from '../../src/settings/load';
import { redactUrl, urlSecrets } from '../../src/settings/secrets';

const dirs: string[] = [];
function temp(prefix = 'lifeline-sec-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  dirs.push(dir);
  return dir;
}
afterAll(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

const sha = (data: string | Buffer) => createHash('sha256').update(data).digest('hex');
const mode = (path: string) => statSync(path).mode & 0o777;

/** Runs `fn` with the given umask, restoring the previous one. */
async function withUmask<T>(mask: number, fn: () => Promise<T>): Promise<T> {
  const previous = process.umask(mask);
  try {
    return await fn();
  } finally {
    process.umask(previous);
  }
}

/** The LifelineError `fn` throws (any other error is rethrown; no error fails the test). */
function usage(fn: () => unknown): LifelineError {
  try {
    fn();
  } catch (error) {
    if (isLifelineError(error)) return error;
    throw error;
  }
  throw new Error('expected a usage error');
}

describe('the entry file name rule', () => {
  it('accepts the names Lifeline writes and nothing that can leave the entry', () => {
    for (const name of ['db.dump', 'redis.rdb', 'globals.sql', 'SHA256SUMS', 'orders.ndjson', 'export.tar.gz.sha256', 'manifest.sigstore.json']) {
      expect(isSafeEntryFileName(name), name).toBe(true);
    }
    for (const name of ['', '.', '..', '../x', 'a/../b', '/etc/passwd', 'sub/file', '.hidden', 'a\\b', 'a\0b', 'x..y', 'new\nline', ' space', `${'a'.repeat(256)}`]) {
      expect(isSafeEntryFileName(name), JSON.stringify(name)).toBe(false);
    }
    expect(entryFileNameProblem('/dev/zero')).toBe('is an absolute path');
    expect(entryFileNameProblem('../outside')).toBe('is not a single path segment');
    expect(entryFileNameProblem('..')).toBe("contains '..'");
  });
});

describe('openEntryFile and checkSums confine every read to the entry', () => {
  const root = temp();
  const outside = join(root, 'outside-secret.txt');
  writeFileSync(outside, 'production rows that live outside the entry\n');
  const outsideHash = sha(readFileSync(outside));

  function craftedEntry(sums: string, setup?: (dir: string) => void): string {
    const dir = mkdtempSync(join(root, 'entry-'));
    writeFileSync(join(dir, 'db.dump'), 'dump bytes');
    if (setup) setup(dir);
    writeFileSync(join(dir, 'SHA256SUMS'), sums);
    return dir;
  }

  it('refuses a ../ line, an absolute path, a symlink, a FIFO and a device without hashing anything outside', async () => {
    const dir = craftedEntry(
      [
        `${sha('dump bytes')}  db.dump`,
        `${outsideHash}  ../outside-secret.txt`,
        `${outsideHash}  ${outside}`,
        `${outsideHash}  /dev/zero`,
        `${outsideHash}  link.dump`,
        `${outsideHash}  pipe.dump`,
        `${outsideHash}  zero.dump`,
        '',
      ].join('\n'),
      (d) => {
        symlinkSync(outside, join(d, 'link.dump'));
        execFileSync('mkfifo', [join(d, 'pipe.dump')]);
        execFileSync('mknod', [join(d, 'zero.dump'), 'c', '1', '5']);
      },
    );
    const started = Date.now();
    const results = await checkSums(dir);
    // A FIFO with no writer and /dev/zero would block or never end: both are refused at once.
    expect(Date.now() - started).toBeLessThan(2000);
    const byFile = Object.fromEntries(results.map((r) => [r.file, r]));
    expect(byFile['db.dump']).toMatchObject({ ok: true });
    expect(byFile['../outside-secret.txt']).toMatchObject({ ok: false, error: expect.stringContaining('not a single path segment') });
    expect(byFile[outside]).toMatchObject({ ok: false, error: expect.stringContaining('absolute path') });
    expect(byFile['/dev/zero']).toMatchObject({ ok: false, error: expect.stringContaining('absolute path') });
    expect(byFile['link.dump']).toMatchObject({ ok: false, error: expect.stringContaining('symbolic link') });
    expect(byFile['pipe.dump']).toMatchObject({ ok: false, error: expect.stringContaining('FIFO') });
    expect(byFile['zero.dump']).toMatchObject({ ok: false, error: expect.stringContaining('device') });
    // Nothing outside was hashed: the outside file's real hash never shows up as an actual value.
    expect(results.filter((r) => r.file !== 'db.dump').every((r) => r.actual === undefined)).toBe(true);
    expect(JSON.stringify(results.map((r) => r.actual))).not.toContain(outsideHash);
  });

  it('fails a SHA256SUMS line for a name the metadata does not list, without reading it', async () => {
    const dir = craftedEntry(`${sha('dump bytes')}  db.dump\n${sha('extra')}  extra.bin\n`, (d) => writeFileSync(join(d, 'extra.bin'), 'extra'));
    const results = await checkSums(dir, { listed: ['db.dump'] });
    expect(results.find((r) => r.file === 'db.dump')).toMatchObject({ ok: true });
    const extra = results.find((r) => r.file === 'extra.bin');
    expect(extra).toMatchObject({ ok: false, error: expect.stringContaining('does not name') });
    expect(extra?.actual).toBeUndefined();
  });

  it('refuses an entry directory that is itself a symlink, and a SHA256SUMS that is one', async () => {
    const real = craftedEntry(`${sha('dump bytes')}  db.dump\n`);
    const linked = join(root, 'linked-entry');
    symlinkSync(real, linked);
    await expect(openEntryFile(linked, 'db.dump')).rejects.toThrow(/not an entry directory/);
    const dir = mkdtempSync(join(root, 'entry-'));
    symlinkSync(join(real, 'SHA256SUMS'), join(dir, 'SHA256SUMS'));
    await expect(checkSums(dir)).rejects.toMatchObject({ code: 'ENTRY_UNSAFE_FILE' });
    await expect(readEntryText(dir, 'SHA256SUMS')).rejects.toThrow(/symbolic link/);
  });
});

describe('catalog files are private whatever the umask', () => {
  it('creates the store, environment and entry directories 0700 and every file 0600 under umask 000', async () => {
    const store = join(temp(), 'store');
    const catalog = new Catalog(store);
    await withUmask(0o000, async () => {
      const staged = await catalog.begin('production', 'backups', 'b1', 'backup.json');
      await staged.addStream('db.dump', Readable.from([Buffer.from('rows')]));
      const writer = staged.addWriter('redis.rdb');
      writer.stream.end(Buffer.from('rdb'));
      await writer.done();
      await staged.addText('globals.sql', 'CREATE ROLE app;');
      await staged.commit({ schemaVersion: 1, id: 'b1', createdAt: new Date().toISOString() });
      await catalog.appendLog('production', 'history.ndjson', { event: 'deploy' });
      const exported = await catalog.begin('production', 'tenants/acme/exports', 'e1', 'export.json');
      await exported.addText('orders.ndjson', '{}\n');
      await exported.commit({ schemaVersion: 1, id: 'e1', createdAt: new Date().toISOString() });
    });
    for (const dir of [
      store,
      join(store, 'production'),
      join(store, 'production', 'backups'),
      join(store, 'production', 'backups', 'b1'),
      join(store, 'production', 'tenants', 'acme', 'exports', 'e1'),
    ]) {
      expect(mode(dir), dir).toBe(0o700);
    }
    for (const file of ['db.dump', 'redis.rdb', 'globals.sql', 'SHA256SUMS', 'backup.json']) expect(mode(join(store, 'production', 'backups', 'b1', file)), file).toBe(0o600);
    expect(mode(join(store, 'production', 'history.ndjson'))).toBe(0o600);
    expect(mode(join(store, 'production', 'tenants', 'acme', 'exports', 'e1', 'orders.ndjson'))).toBe(0o600);
  });

  it('names a store that other users can read, with the chmod fix, and stays quiet for a private one', () => {
    const store = temp();
    mkdirSync(join(store, 'production'));
    chmodSync(store, 0o755);
    chmodSync(join(store, 'production'), 0o755);
    const problem = sharedStoreProblem(store, 'production');
    expect(problem?.message).toContain('readable by other local users (mode 0755)');
    expect(problem?.fix).toBe(`chmod 700 ${store}`);
    // A private environment below no longer hides a shared root: others could plant a link beside it.
    chmodSync(join(store, 'production'), 0o700);
    expect(sharedStoreProblem(store, 'production')?.fix).toBe(`chmod 700 ${store}`);
    chmodSync(store, 0o1777);
    expect(sharedStoreProblem(store, 'production')?.message).toContain('readable and writable by other local users (mode 1777)');
    chmodSync(join(store, 'production'), 0o750);
    chmodSync(store, 0o700);
    expect(sharedStoreProblem(store, 'production')).toBeUndefined();
    expect(sharedStoreProblem(join(store, 'missing'), 'production')).toBeUndefined();
  });
});

describe('every form of a password is masked', () => {
  const cases = [
    ['postgres://app:s3cret-pw@db:5432/shop', ['s3cret-pw']],
    ['postgres://db:5432/shop?user=app&password=qu3ry-pw&sslmode=require', ['qu3ry-pw']],
    ['postgres://app@db/shop?sslkey=/k.pem&sslpassword=k3y-pw', ['k3y-pw']],
    ['postgres://app:pa%zzword@db/shop', ['pa%zzword']],
    ['postgres://app:p%40ss%2Fw0rd@db/shop', ['p%40ss%2Fw0rd', 'p@ss/w0rd']],
    ['redis://:r3dis-pw@127.0.0.1:6379/0', ['r3dis-pw']],
    // An unencoded @ in the password: URL parsers and libpq read the userinfo up to the LAST @.
    ['postgresql://postgres:p@ss@word@127.0.0.1:1/shop', ['p@ss@word', 'ss@word']],
    ['redis://:My@Secret@127.0.0.1:1/0', ['My@Secret', 'Secret']],
  ] as const;

  it('finds every secret a URL carries, raw and decoded, including a malformed escape', () => {
    for (const [url, secrets] of cases) {
      expect(urlSecrets(url), url).toContain(secrets[0]);
    }
  });

  it('masks them by shape even when nobody registered them, in URLs, conninfo strings and error text', () => {
    for (const [url, secrets] of cases) {
      const text = `error: could not connect to ${url}: timeout`;
      const masked = redactSecretsInText(text);
      for (const secret of secrets) expect(masked, url).not.toContain(secret);
      expect(redactUrl(url)).toContain('***');
    }
    expect(redactSecretsInText('host=db dbname=shop password=c0nninfo-pw user=app')).toBe('host=db dbname=shop password=*** user=app');
    expect(redactSecretsInText('{"url":"postgres://a:j50n-pw@h/db"}')).toBe('{"url":"postgres://a:***@h/db"}');
    const masker = new SecretMasker();
    masker.add('registered-token');
    expect(masker.mask('token registered-token and postgres://u:x7-pw@h/d?password=y8-pw')).toBe('token *** and postgres://u:***@h/d?password=***');
  });

  it('authenticates with a ?password= parameter through PGPASSWORD and keeps it out of the other parameters', () => {
    const conn = parsePgUrl('postgres://app@db:5432/shop?password=qu3ry-pw&sslmode=require');
    expect(conn.password).toBe('qu3ry-pw');
    expect(conn.params).toEqual({ sslmode: 'require' });
    expect(pgEnv(conn)).toMatchObject({ PGPASSWORD: 'qu3ry-pw', PGSSLMODE: 'require' });
  });

  it('refuses sslpassword, which could reach the tools only through their argv', () => {
    expect(() => parsePgUrl('postgres://app@db/shop?sslkey=/k.pem&sslpassword=k3y-pw')).toThrow(/sets sslpassword/);
    try {
      parsePgUrl('postgres://app@db/shop?sslpassword=k3y-pw');
    } catch (error) {
      expect((error as LifelineError).exitCode).toBe(2);
      expect(`${(error as LifelineError).message} ${(error as LifelineError).fix}`).not.toContain('k3y-pw');
    }
  });

  it('refuses a malformed percent-escape as bad usage, without quoting the password', () => {
    let error: unknown;
    try {
      parsePgUrl('postgres://app:pa%zzword@db/shop');
    } catch (caught) {
      error = caught;
    }
    expect(isLifelineError(error) && error.exitCode).toBe(2);
    expect((error as LifelineError).message).toContain('password has a malformed percent-escape');
    expect((error as LifelineError).message + (error as LifelineError).fix).not.toContain('zzword');
  });

  it('refuses an sslmode libpq does not know, and a Redis URL with a bad escape or scheme, as bad usage (exit 2) before anything connects', () => {
    expect(usage(() => parsePgUrl('postgres://app:s3cret-pw@db/shop?sslmode=bogus'))).toMatchObject({ code: 'BAD_URL', exitCode: 2, message: expect.stringContaining('sslmode=bogus') });
    for (const mode of ['disable', 'allow', 'prefer', 'require', 'verify-ca', 'verify-full']) expect(parsePgUrl(`postgres://db/shop?sslmode=${mode}`).params.sslmode).toBe(mode);
    const escape = usage(() => parseRedisUrl('redis://:pa%zzword@cache:6379/0'));
    expect(escape).toMatchObject({ code: 'BAD_URL', exitCode: 2, message: expect.stringContaining('password has a malformed percent-escape') });
    expect(escape.message + escape.fix).not.toContain('zzword');
    expect(usage(() => parseRedisUrl('http://cache:6379'))).toMatchObject({ code: 'BAD_URL', exitCode: 2, message: expect.stringContaining('scheme http:') });
    expect(parseRedisUrl('rediss://:p%40ss@cache:6380/0')).toMatchObject({ host: 'cache', port: 6380, password: 'p@ss', tls: true });
  });
});

describe('bad configuration is exit 2 with the file and the fix, never an echo', () => {
  it('stops a billion-laughs alias bomb fast and in bounded memory', () => {
    const lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]'];
    for (let i = 1; i < 10; i++) {
      const prev = String.fromCharCode(96 + i);
      const next = String.fromCharCode(97 + i);
      lines.push(`${next}: &${next} [*${prev},*${prev},*${prev},*${prev},*${prev},*${prev},*${prev},*${prev},*${prev}]`);
    }
    const before = process.memoryUsage().heapUsed;
    const started = Date.now();
    const error = usage(() => parseConfig(`version: 1\n${lines.join('\n')}\nenvironments: {}\n`, '/etc/lifeline/bomb.yml'));
    expect(Date.now() - started).toBeLessThan(1000);
    expect(process.memoryUsage().heapUsed - before).toBeLessThan(64 * 1024 * 1024);
    expect(error.exitCode).toBe(2);
    expect(error.message).toContain('/etc/lifeline/bomb.yml');
    expect(error.message).toContain('aliases expand too far');
    expect(error.fix).toBeTruthy();
  });

  it('names a directory, a FIFO and a binary file given as --config', () => {
    const dir = temp();
    expect(usage(() => loadConfig(dir, { explicit: true }))).toMatchObject({ code: 'CONFIG_NOT_A_FILE', message: expect.stringContaining('is a directory') });
    const fifo = join(dir, 'fifo.yml');
    execFileSync('mkfifo', [fifo]);
    expect(usage(() => loadConfig(fifo, { explicit: true }))).toMatchObject({ code: 'CONFIG_NOT_A_FILE', kind: 'usage' });
    const binary = join(dir, 'binary.yml');
    writeFileSync(binary, Buffer.from([0x7f, 0x45, 0x4c, 0x46, 0, 1, 2]));
    expect(usage(() => loadConfig(binary, { explicit: true }))).toMatchObject({ code: 'CONFIG_NOT_YAML', kind: 'usage' });
  });

  it('describes a file that is not a Lifeline configuration without printing any of it', () => {
    const shadow = 'root:$6$Zq1.salt$H4shOfTheRootPassw0rdXXXXXXXXXXXXXXXXXX:19700:0:99999:7:::\ndaemon:*:19700:0:99999:7:::\n';
    const envFile = 'DB_PASSWORD: hunter2-secret\nAPI_TOKEN: tok-abc123\n';
    const broken = 'password: [hunter2-unclosed\n  -: x\n';
    for (const [text, secrets] of [
      [shadow, ['H4shOfTheRootPassw0rd', 'root', 'daemon']],
      [envFile, ['hunter2-secret', 'tok-abc123', 'DB_PASSWORD', 'API_TOKEN']],
      [broken, ['hunter2-unclosed']],
    ] as const) {
      const error = usage(() => parseConfig(text, '/etc/shadow'));
      expect(error.exitCode).toBe(2);
      expect(error.message).toContain('/etc/shadow');
      const shown = `${error.message}\n${error.fix}\n${JSON.stringify(error.details ?? {})}`;
      for (const secret of secrets) expect(shown, secret).not.toContain(secret);
    }
  });
});

describe('filesystem failures name the path, the outcome and the fix', () => {
  it('maps ENOSPC, EROFS and EACCES to failures that say what to do', () => {
    const make = (code: string, path: string) => Object.assign(new Error(`${code}: x, open '${path}'`), { code, path, syscall: 'open' });
    const full = describeFilesystemError(make('ENOSPC', '/srv/lifeline/production/backups/.staging-x/db.dump'), 'nothing was added to the catalog');
    expect(full).toMatchObject({ code: 'FS_ENOSPC', kind: 'failed' });
    expect(full!.message).toBe('/srv/lifeline/production/backups/.staging-x/db.dump: no space left on the device (open); nothing was added to the catalog');
    expect(full!.fix).toContain('df -h');
    expect(describeFilesystemError(make('EROFS', '/srv/x'))!.fix).toContain('read-write');
    expect(describeFilesystemError(make('EACCES', '/srv/x'))!.message).toContain('permission denied');
    expect(describeFilesystemError(new Error('other'))).toBeUndefined();
  });
});

describe('credentials in hook URLs and application check variables', () => {
  const configWith = (yaml: string) => {
    const dir = temp();
    const path = join(dir, 'lifeline.yml');
    writeFileSync(path, `version: 1\nenvironments:\n  production:\n${yaml}`);
    return { dir, path };
  };

  it('refuses a hook URL that carries a password or a token, at config time, without repeating it', () => {
    for (const url of ['https://deploy:hunter2-pw@hooks.example.com/revalidate', 'https://hooks.example.com/revalidate?token=tok-9f8e7d', 'https://hooks.example.com/x?api_key=k-123456']) {
      let error: LifelineError | undefined;
      try {
        parseConfig(`version: 1\nenvironments:\n  production:\n    hooks:\n      postRestore:\n        - http: ${url}\n`, 'lifeline.yml');
      } catch (caught) {
        error = caught as LifelineError;
      }
      expect(error?.exitCode, url).toBe(2);
      expect(error!.message).toContain('environments.production.hooks.postRestore[0].http (lifeline.yml:6)');
      expect(error!.message).toContain('headersFromEnv: { Authorization: HOOK_AUTHORIZATION }');
      for (const secret of ['hunter2-pw', 'tok-9f8e7d', 'k-123456']) expect(error!.message).not.toContain(secret);
    }
    // A plain URL with harmless parameters is fine.
    expect(() => parseConfig('version: 1\nenvironments:\n  production:\n    hooks:\n      postRestore:\n        - http: https://hooks.example.com/revalidate?path=/menu\n')).not.toThrow();
  });

  it('sends hook headers from environment variables, registers them as secrets, and masks them and appCheck.env in config check', async () => {
    const { dir } = configWith(
      [
        '    hooks:',
        '      postRestore:',
        '        - http: https://hooks.example.com/revalidate',
        '          headersFromEnv: { Authorization: HOOK_AUTHORIZATION }',
        '    drill:',
        '      appCheck:',
        '        healthUrl: http://127.0.0.1:18000/health',
        '        env: { STRIPE_API_KEY: sk-live-abcdef123456, APP_PORT: "18000" }',
        '',
      ].join('\n'),
    );
    const { resolveEnvironment } = await import('../../src/settings/resolve');
    const settings = resolveEnvironment({ env: 'production' }, { env: { HOOK_AUTHORIZATION: 'Bearer hook-secret-42' }, cwd: dir });
    expect(settings.hooks.postRestore[0]).toMatchObject({ headers: { Authorization: 'Bearer hook-secret-42' } });
    expect(settings.secrets).toEqual(expect.arrayContaining(['Bearer hook-secret-42', 'sk-live-abcdef123456']));
    expect(() => resolveEnvironment({ env: 'production' }, { env: {}, cwd: dir })).toThrow(/HOOK_AUTHORIZATION is unset or empty/);

    const { runCli } = await import('../../src/cli/main');
    const { COMMANDS } = await import('../../src/commands/registry');
    let stdout = '';
    let stderr = '';
    const code = await runCli(COMMANDS, ['config', 'check', '--env', 'production', '--json'], {
      stdout: (t) => (stdout += t),
      stderr: (t) => (stderr += t),
      env: {
        HOOK_AUTHORIZATION: 'Bearer hook-secret-42',
        LIFELINE_DEBUG: '1',
        DATABASE_URL: 'postgres://app@127.0.0.1:5432/shop?password=qu3ry-dbg-77&sslmode=disable',
        REDIS_URL: 'redis://:r3d%zz-dbg@127.0.0.1:6379/0',
      },
      cwd: dir,
      interactive: false,
    });
    expect(code, stderr + stdout).toBe(0);
    expect(stdout).toContain('STRIPE_API_KEY');
    expect(stdout).toContain('Authorization');
    expect(stdout).toContain('sslmode=disable');
    for (const secret of ['sk-live-abcdef123456', 'hook-secret-42', 'qu3ry-dbg-77', 'r3d%zz-dbg']) {
      expect(stdout, secret).not.toContain(secret);
      expect(stderr, secret).not.toContain(secret);
    }
  });
});
