import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, cpSync, lstatSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { cliArgv, REPO, runProcess, type CliRun } from '../helpers/cli';
import { createDatabase, createSampleDatabase, dropDatabase, query, sql, tempDir } from '../helpers/db';
import { startS3Server, type TestS3Server } from '../helpers/s3';

const CLI = cliArgv();
const baseEnv = { DATABASE_URL: undefined, REDIS_URL: undefined, LIFELINE_STORE: undefined, LIFELINE_ENV: undefined, LIFELINE_CONFIG: undefined, LIFELINE_DEBUG: undefined };

/** The CLI as root under umask 022, the way a cron job or an operator's shell runs it. */
function lifeline022(args: string[], env: Record<string, string | undefined> = {}): Promise<CliRun> {
  return runProcess('sh', ['-c', 'umask 022; exec "$0" "$@"', process.execPath, ...CLI, ...args], { env: { ...baseEnv, ...env } });
}

/** Every path under `root` (directories first), without following symlinks. */
function walk(root: string): { dirs: string[]; files: string[] } {
  const dirs: string[] = [root];
  const files: string[] = [];
  for (let i = 0; i < dirs.length; i++) {
    for (const name of readdirSync(dirs[i]!)) {
      const path = join(dirs[i]!, name);
      if (lstatSync(path).isDirectory()) dirs.push(path);
      else files.push(path);
    }
  }
  return { dirs, files };
}

const asNobody = (args: string[]) => spawnSync('runuser', ['-u', 'nobody', '--', ...args], { encoding: 'utf8' });
const sha = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex');

/** Samples /proc/<pid>/cmdline of every process while `run` is in flight. */
async function watchCmdlines<T>(run: () => Promise<T>): Promise<{ result: T; seen: string[] }> {
  const seen = new Set<string>();
  let done = false;
  const sampler = (async () => {
    while (!done) {
      for (const pid of readdirSync('/proc')) {
        if (!/^\d+$/.test(pid)) continue;
        try {
          seen.add(readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ').trim());
        } catch {
          // the process exited meanwhile
        }
      }
      await new Promise((r) => setTimeout(r, 5));
    }
  })();
  try {
    return { result: await run(), seen: [...seen] };
  } finally {
    done = true;
    await sampler;
  }
}

// A loaded 2-core machine runs each CLI start-up through tsx in seconds: generous timeouts, bounded anyway.
describe('a private, confined catalog', { timeout: 900_000 }, () => {
  const dir = tempDir('lifeline-security-');
  const store = join(dir.path, 'store');
  const outside = join(dir.path, 'outside.txt');
  let db: Awaited<ReturnType<typeof createSampleDatabase>>;
  let config: string;
  let env: Record<string, string | undefined>;
  let s3: TestS3Server;
  const databases: string[] = [];
  const base = () => ['--config', config, '--env', 'production'];

  beforeAll(async () => {
    s3 = await startS3Server();
    db = await createSampleDatabase(2, 'sec');
    chmodSync(dir.path, 0o755); // so `nobody` could reach the store if the store itself let it
    writeFileSync(outside, 'rows that live outside every entry\n');
    config = join(dir.path, 'lifeline.yml');
    writeFileSync(
      config,
      [
        'version: 1',
        'environments:',
        '  production:',
        `    store: ${store}`,
        '    postgres: { urlEnv: SEC_DATABASE_URL }',
        '    redis: { urlEnv: SEC_REDIS_URL }',
        '    tenants:',
        '      collections:',
        '        - { table: tenants, column: id }',
        '        - { table: orders, column: tenant_id }',
        '    storage:',
        '      provider: s3',
        `      endpoint: ${s3.endpoint}`,
        '      region: us-east-1',
        `      bucket: ${s3.bucket}`,
        '      prefix: confined/',
        '      accessKeyIdEnv: SEC_S3_KEY',
        '      secretAccessKeyEnv: SEC_S3_SECRET',
        '      reviewed: { provider: s3rver, by: ops-lead, date: 2026-11-21 }',
        '',
      ].join('\n'),
    );
    env = { SEC_DATABASE_URL: db.url, SEC_REDIS_URL: inject('redisUrl'), SEC_S3_KEY: s3.accessKeyId, SEC_S3_SECRET: s3.secretAccessKey };
  });
  afterAll(async () => {
    await Promise.allSettled([s3?.close(), dropDatabase(db.name), ...databases.map((name) => dropDatabase(name))]);
    dir.cleanup();
  });

  let backupId: string;
  let exportDir: string;

  it('leaves nothing another local user can read after backup, restore, tenant export and drill under umask 022', async () => {
    const backup = await lifeline022(['backup', ...base(), '--json'], env);
    expect(backup.code, backup.stderr).toBe(0);
    backupId = (JSON.parse(backup.stdout) as { id: string }).id;
    expect(readdirSync(join(store, 'production', 'backups', backupId)).sort()).toEqual(['SHA256SUMS', 'backup.json', 'postgres.dump', 'globals.sql', 'redis.rdb'].sort());

    // A restore over a database that holds data takes a pre-restore backup first: that one is private too.
    const target = await createDatabase('sec_target');
    databases.push(target.name);
    await sql('CREATE TABLE kept (id int); INSERT INTO kept VALUES (1)', target.name);
    const restore = await lifeline022(['restore', ...base(), '--backup', backupId, '--target-env', 'SEC_TARGET_URL', '--confirm', target.name], { ...env, SEC_TARGET_URL: target.url });
    expect(restore.code, restore.stderr).toBe(0);

    const exported = await lifeline022(['tenant', 'export', ...base(), '--tenant', 'tenant-001', '--json'], env);
    expect(exported.code, exported.stderr).toBe(0);
    exportDir = (JSON.parse(exported.stdout) as { path: string }).path;

    const drill = await lifeline022(['drill', ...base(), '--backup', backupId], env);
    expect(drill.code, drill.stderr).toBe(0);

    const { dirs, files } = walk(store);
    const kinds = new Set(files.map((f) => f.slice(store.length).split('/')[2]));
    expect([...kinds]).toEqual(expect.arrayContaining(['backups', 'tenants', 'drills']));
    expect(files.some((f) => f.includes('/tenants/tenant-001/exports/'))).toBe(true);
    expect(files.length).toBeGreaterThan(12);
    for (const d of dirs) expect((statSync(d).mode & 0o777).toString(8), d).toBe('700');
    for (const f of files) expect((statSync(f).mode & 0o777).toString(8), f).toBe('600');
    // The user's view: nobody can list or read anything, even with the parent directory open.
    for (const d of dirs) expect(asNobody(['ls', d]).status, d).not.toBe(0);
    for (const f of files) {
      const read = asNobody(['cat', f]);
      expect(read.status, f).not.toBe(0);
      expect(read.stdout).toBe('');
    }
    // The runuser check can fail: a file outside the store is readable by nobody.
    expect(asNobody(['cat', outside]).status).toBe(0);
  });

  it('warns on every write into a store other users can read, and preflight fails it with the chmod fix', async () => {
    chmodSync(store, 0o755);
    chmodSync(join(store, 'production'), 0o755);
    try {
      const backup = await lifeline022(['backup', ...base(), '--no-verify'], env);
      expect(backup.code, backup.stderr).toBe(0);
      expect(backup.stderr).toContain(`the catalog ${store} is readable by other local users`);
      expect(backup.stderr).toContain(`chmod 700 ${store}`);
      const preflight = await lifeline022(['preflight', ...base(), '--json'], env);
      const finding = (JSON.parse(preflight.stdout) as { findings: { check: string; status: string; fix?: string }[] }).findings.find((f) => f.check === 'backups.catalog-private');
      expect(finding).toMatchObject({ status: 'fail', fix: `chmod 700 ${store}` });
    } finally {
      chmodSync(store, 0o700);
      chmodSync(join(store, 'production'), 0o700);
    }
    const quiet = await lifeline022(['backup', ...base(), '--no-verify'], env);
    expect(quiet.stderr).not.toContain('readable by other local users');
  });

  /** Copies the good backup to a new id and lets `tamper` damage it. */
  function craft(id: string, tamper: (entry: string) => void): string {
    const entry = join(store, 'production', 'backups', id);
    cpSync(join(store, 'production', 'backups', backupId), entry, { recursive: true });
    tamper(entry);
    return entry;
  }

  it('refuses ../, absolute, symlinked, FIFO and device names in verify, restore, sync and tenant verify, hashing and uploading nothing', async () => {
    const outsideHash = sha(outside);
    const wrong = '0'.repeat(64);
    const crafted = {
      // Ids sort before the real backup's, so `latest` stays the good one.
      '20000101T000000000Z-dotdot': (e: string) => writeFileSync(join(e, 'SHA256SUMS'), `${readFileSync(join(e, 'SHA256SUMS'), 'utf8')}${wrong}  ../../../outside.txt\n`),
      '20000101T000000000Z-abspath': (e: string) => writeFileSync(join(e, 'SHA256SUMS'), `${readFileSync(join(e, 'SHA256SUMS'), 'utf8')}${wrong}  ${outside}\n${wrong}  /dev/zero\n`),
      '20000101T000000000Z-symlink': (e: string) => {
        unlinkSync(join(e, 'globals.sql'));
        symlinkSync(outside, join(e, 'globals.sql'));
      },
      '20000101T000000000Z-fifo': (e: string) => {
        unlinkSync(join(e, 'postgres.dump'));
        execFileSync('mkfifo', [join(e, 'postgres.dump')]);
      },
      '20000101T000000000Z-device': (e: string) => {
        unlinkSync(join(e, 'redis.rdb'));
        execFileSync('mknod', [join(e, 'redis.rdb'), 'c', '1', '5']);
      },
    };
    for (const [id, tamper] of Object.entries(crafted)) craft(id, tamper);

    for (const id of Object.keys(crafted)) {
      const started = Date.now();
      const verify = await lifeline022(['verify', id, ...base(), '--json'], env);
      // A FIFO read would never return: the bound is loose (start-up under load), the hang is not.
      expect(Date.now() - started, id).toBeLessThan(120_000);
      expect(verify.code, `${id}: ${verify.stderr}`).toBe(1);
      const out = verify.stdout + verify.stderr;
      expect(out, id).not.toContain(outsideHash);
      // The verdict is on stderr line by line (the JSON may be an error: recording it can be refused too).
      const failed = verify.stderr.split('\n').filter((line) => line.startsWith('FAIL '));
      expect(failed.length, `${id}: ${verify.stderr}`).toBeGreaterThan(0);
      expect(failed.join('\n'), id).toMatch(/does not name|not a single path segment|absolute path|symbolic link|FIFO|device/);
      // Nothing about the outside file was stored in the entry either.
      expect(readFileSync(join(store, 'production', 'backups', id, 'backup.json'), 'utf8')).not.toContain(outsideHash);
    }

    // A restore that skips the checksums still never feeds pg_restore a file outside the entry.
    const target = await createDatabase('sec_confined');
    databases.push(target.name);
    for (const id of ['20000101T000000000Z-symlink', '20000101T000000000Z-fifo']) {
      const tampered = join(store, 'production', 'backups', id);
      if (id.endsWith('symlink')) {
        unlinkSync(join(tampered, 'postgres.dump'));
        symlinkSync(join(store, 'production', 'backups', backupId, 'postgres.dump'), join(tampered, 'postgres.dump'));
      }
      const restore = await lifeline022(['restore', ...base(), '--backup', id, '--skip-verify', '--target-env', 'SEC_TARGET_URL'], { ...env, SEC_TARGET_URL: target.url });
      expect(restore.code, `${id}: ${restore.stderr}`).not.toBe(0);
      expect(restore.stderr).toMatch(/symbolic link|FIFO/);
      expect(await query(`SELECT count(*)::int AS n FROM pg_tables WHERE schemaname = 'public'`, target.name)).toEqual([{ n: 0 }]);
    }

    // sync: the damaged entries are not uploaded, the good one is, and no key leaves the prefix.
    const sync = await lifeline022(['sync', ...base()], env);
    expect(sync.stdout + sync.stderr).not.toContain(outsideHash);
    const puts = s3.requests.filter((r) => r.method === 'PUT' || r.method === 'POST').map((r) => decodeURIComponent(r.url));
    expect(puts.some((u) => u.includes(`/confined/production/backups/${backupId}/postgres.dump`))).toBe(true);
    for (const id of Object.keys(crafted))
      expect(
        puts.filter((u) => u.includes(id)),
        id,
      ).toEqual([]);
    for (const url of puts) expect(url, url).toMatch(new RegExp(`^/${s3.bucket}/confined/production/`));
    expect(puts.join('\n')).not.toContain('outside');

    // tenant verify on an export whose SHA256SUMS names a file outside it, and one the manifest does not name.
    const tampered = `${exportDir}-crafted`;
    cpSync(exportDir, tampered, { recursive: true });
    writeFileSync(join(tampered, 'SHA256SUMS'), `${readFileSync(join(tampered, 'SHA256SUMS'), 'utf8')}${wrong}  ../../../../../outside.txt\n${wrong}  extra.ndjson\n`);
    writeFileSync(join(tampered, 'extra.ndjson'), '{}\n');
    const id = tampered.split('/').pop()!;
    const tenantVerify = await lifeline022(['tenant', 'verify', ...base(), '--tenant', 'tenant-001', '--export', id, '--json'], env);
    expect(tenantVerify.code, tenantVerify.stderr).toBe(1);
    const problems = (JSON.parse(tenantVerify.stdout) as { problems: string[] }).problems.join('\n');
    expect(problems).toContain('../../../../../outside.txt');
    expect(problems).toContain('not named by the export');
    expect(tenantVerify.stdout).not.toContain(outsideHash);
  });

  it('keeps the target password out of every process argv during a restore given through --target-env', async () => {
    const target = await createDatabase('sec_argv');
    databases.push(target.name);
    const password = new URL(target.url).password;
    expect(password.length).toBeGreaterThan(3);
    const { result, seen } = await watchCmdlines(() =>
      lifeline022(['restore', ...base(), '--backup', backupId, '--target-env', 'SEC_TARGET_URL', '--jobs', '2'], { ...env, SEC_TARGET_URL: target.url }),
    );
    expect(result.code, result.stderr).toBe(0);
    // The sampler really saw the restore: Lifeline's own process and its pg_restore child.
    expect(seen.some((c) => c.includes(`${CLI.at(-1)} restore`))).toBe(true);
    expect(seen.some((c) => c.startsWith('pg_restore') || c.includes('/pg_restore '))).toBe(true);
    expect(seen.filter((c) => c.includes(password) || c.includes(encodeURIComponent(password)))).toEqual([]);
    expect(result.stderr + result.stdout).not.toContain(password);
  });

  it('warns once and rewrites its own process title when a password does arrive in argv', async () => {
    const password = new URL(db.url).password;
    const child = spawn(process.execPath, [...CLI, 'backup', ...base(), '--database-url', db.url, '--no-verify'], { env: { ...process.env, ...env, LIFELINE_CONFIG: undefined } });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    const samples: string[] = [];
    const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
    let running = true;
    void exited.then(() => (running = false));
    while (running) {
      try {
        samples.push(readFileSync(`/proc/${child.pid}/cmdline`, 'utf8').replace(/\0/g, ' '));
      } catch {
        break;
      }
      await new Promise((r) => setTimeout(r, 5));
    }
    expect(await exited, stderr).toBe(0);
    expect(stderr.match(/a password was given on the command line/g)).toHaveLength(1);
    expect(stderr).not.toContain(password);
    const retitled = samples.filter((s) => s.startsWith('lifeline backup'));
    expect(retitled.length, samples.slice(-3).join('\n')).toBeGreaterThan(0);
    // Once retitled, the password is gone from /proc/<pid>/cmdline for the rest of the run.
    expect(samples.slice(samples.indexOf(retitled[0]!)).filter((s) => s.includes(password))).toEqual([]);
  });
});

describe('filesystem failures name the path, the outcome and the fix', { timeout: 600_000 }, () => {
  const dir = tempDir('lifeline-fsfail-');
  let db: Awaited<ReturnType<typeof createSampleDatabase>>;
  const mounts: string[] = [];

  beforeAll(async () => {
    db = await createSampleDatabase(2, 'fsfail');
  });
  afterAll(async () => {
    for (const mount of mounts.reverse()) spawnSync('umount', ['-l', mount]);
    await dropDatabase(db.name);
    dir.cleanup();
  });

  function tmpfs(name: string, size: string): string {
    const path = join(dir.path, name);
    mkdirSync(path);
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size},mode=0700`, 'tmpfs', path]);
    mounts.push(path);
    return path;
  }

  it('ENOSPC: a full store fails the backup naming the path, and nothing is added to the catalog', async () => {
    const store = tmpfs('full', '64k');
    const run = await lifeline022(['backup', '--store', store, '--database-url', db.url, '--json']);
    expect(run.code, run.stderr).toBe(1);
    expect(run.stdout, run.stderr).toMatch(/^\{"error"/);
    const error = (JSON.parse(run.stdout) as { error: { code: string; message: string; fix: string } }).error;
    expect(error.code).toBe('FS_ENOSPC');
    expect(error.message).toContain(store);
    expect(error.message).toContain('nothing was added to the catalog');
    expect(error.fix).toContain('df -h');
    const listed = await lifeline022(['backups', '--store', store, '--json']);
    expect(JSON.parse(listed.stdout)).toEqual([]);
    expect(readdirSync(join(store, 'default', 'backups')).filter((n) => !n.startsWith('.deleting'))).toEqual([]);
  });

  it('EROFS: verify prints its verdict and warns it could not record it; a backup fails naming the path', async () => {
    const store = tmpfs('readonly', '64m');
    const made = await lifeline022(['backup', '--store', store, '--database-url', db.url, '--json']);
    expect(made.code, made.stderr).toBe(0);
    const { id } = JSON.parse(made.stdout) as { id: string };
    const before = readFileSync(join(store, 'default', 'backups', id, 'backup.json'), 'utf8');
    execFileSync('mount', ['-o', 'remount,ro', store]);
    const verify = await lifeline022(['verify', id, '--store', store, '--database-url', db.url]);
    expect(verify.code, verify.stderr).toBe(0);
    expect(verify.stdout).toContain(`backup ${id}: verified`);
    expect(verify.stderr).toMatch(/read-only/);
    expect(verify.stderr).toContain('was not recorded in backup.json');
    expect(readFileSync(join(store, 'default', 'backups', id, 'backup.json'), 'utf8')).toBe(before);
    const backup = await lifeline022(['backup', '--store', store, '--database-url', db.url]);
    expect(backup.code).toBe(1);
    expect(backup.stderr).toContain(store);
    expect(backup.stderr).toMatch(/read-only/);
    expect(backup.stderr).toContain('fix: remount');
    expect(backup.stderr).not.toContain('    at '); // a message, not a stack trace
  });

  it('EACCES: a store owned by another user fails naming the path and who should run it', async () => {
    const store = join(dir.path, 'root-owned');
    mkdirSync(store, { mode: 0o700 });
    chmodSync(dir.path, 0o755);
    const run = spawnSync('runuser', ['-u', 'nobody', '--', process.execPath, ...CLI, 'backup', '--store', store, '--database-url', db.url], {
      encoding: 'utf8',
      cwd: REPO,
      env: { ...process.env, ...baseEnv } as NodeJS.ProcessEnv,
    });
    expect(run.status, run.stderr).toBe(1);
    expect(run.stderr).toContain(store);
    expect(run.stderr).toContain('permission denied');
    expect(run.stderr).toContain('fix: run Lifeline as the user that owns the catalog');
    expect(run.stderr).not.toContain(new URL(db.url).password);
  });
});
