import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { hostname } from 'node:os';
import { closeSync, cpSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Catalog } from '../../src/catalog/store';
import { createMemoryLogger } from '../../src/logger';
import { findRedisSnapshot, restoreRedisLive } from '../../src/backup/redis-live-restore';
import { aofLayout } from '../../src/redis/container-files';
import { LocalRunner } from '../../src/runner/runner';
import { tarStream } from '../../src/catalog/tar';
import { freePort } from '../../src/runner/ports';
import { cliArgv, lifeline, REPO, type CliRun } from '../helpers/cli';
import { createSampleDatabase, dropDatabase, tempDir } from '../helpers/db';
import { dockerAvailable, startDockerEnvironment, type DockerEnvironment } from '../helpers/docker';
import { buildRedisImage, REDIS_UID } from '../helpers/redis-image';

const PASSWORD = 'live-redis-secret-4f9c';
const PROJECT = 'lllive';

describe('the tar stream docker cp receives', () => {
  it('is read by GNU tar with the owners, modes and bytes it was given', async () => {
    const dir = tempDir('lifeline-tar-');
    try {
      const payload = join(dir.path, 'snap.rdb');
      writeFileSync(payload, Buffer.alloc(1300, 7));
      const layout = aofLayout('appendonly.aof');
      const chunks: Buffer[] = [];
      const owner = { uid: 999, gid: 998 };
      for await (const chunk of tarStream([
        { name: 'dump.rdb', mode: 0o644, ...owner, path: payload, size: 1300 },
        { name: 'appendonlydir', directory: true, mode: 0o755, ...owner },
        { name: `appendonlydir/${layout.manifestName}`, mode: 0o644, ...owner, content: Buffer.from(layout.manifest) },
        { name: `appendonlydir/${layout.incr}`, mode: 0o644, ...owner, content: Buffer.alloc(0) },
      ]))
        chunks.push(chunk as Buffer);
      const listing = spawnSync('tar', ['-tv', '--numeric-owner'], { input: Buffer.concat(chunks), encoding: 'utf8' });
      expect(listing.status, listing.stderr).toBe(0);
      const lines = listing.stdout.trim().split('\n');
      expect(lines[0]).toMatch(/^-rw-r--r-- 999\/998\s+1300 .* dump\.rdb$/);
      expect(lines[1]).toMatch(/^drwxr-xr-x 999\/998\s+0 .* appendonlydir\/$/);
      expect(lines[2]).toMatch(/appendonlydir\/appendonly\.aof\.manifest$/);
      const out = join(dir.path, 'out');
      mkdirSync(out);
      expect(spawnSync('tar', ['-x', '-C', out], { input: Buffer.concat(chunks) }).status).toBe(0);
      expect(readFileSync(join(out, 'dump.rdb'))).toEqual(Buffer.alloc(1300, 7));
      expect(readFileSync(join(out, 'appendonlydir', 'appendonly.aof.manifest'), 'utf8')).toBe('file appendonly.aof.1.base.rdb seq 1 type b\nfile appendonly.aof.1.incr.aof seq 1 type i\n');
    } finally {
      dir.cleanup();
    }
  });
});

// Each Compose exec costs seconds, many more on a busy machine: a restore is a minute or more there.
describe.skipIf(!dockerAvailable())('redis-restore into the live Redis of a Compose stack', { timeout: 600_000 }, () => {
  let docker: DockerEnvironment;
  let db: Awaited<ReturnType<typeof createSampleDatabase>> | undefined;
  const store = tempDir('lifeline-redis-live-');
  const stackDir = tempDir('lifeline-redis-stack-');
  const ports = { rdb: 0, aof: 0, small: 0, lock: 0 };
  let configPath: string;

  const compose = (args: string[]) => {
    const r = spawnSync('docker-compose', ['-p', PROJECT, ...args], { cwd: stackDir.path, env: { ...process.env, ...docker.env }, encoding: 'utf8' });
    return { status: r.status, stdout: r.stdout, stderr: r.stderr };
  };

  /** redis-cli from the host: the servers listen on 127.0.0.1 (host network). */
  const cli = (port: number, args: string[], input?: string): string => {
    const r = spawnSync('redis-cli', ['-p', String(port), '--no-auth-warning', ...args], { env: { ...process.env, REDISCLI_AUTH: PASSWORD }, input, encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`redis-cli ${args.join(' ')}: ${r.stderr}`);
    return r.stdout;
  };

  /** Every key of every database, sorted: what a user would compare. */
  const keySet = (port: number): Record<string, string[]> => {
    const out: Record<string, string[]> = {};
    for (const [, n] of cli(port, ['INFO', 'keyspace']).matchAll(/^db(\d+):keys=/gm)) {
      out[`db${n}`] = cli(port, ['-n', n!, '--scan']).split('\n').filter(Boolean).sort();
    }
    return out;
  };

  const seed = (port: number, prefix: string) => {
    const commands = [
      ...Array.from({ length: 200 }, (_, i) => `SET ${prefix}:cache:${i} ${'v'.repeat(40)}`),
      ...Array.from({ length: 5 }, (_, i) => `SET ${prefix}:session:${i} s EX 3600`),
      'SELECT 3',
      ...Array.from({ length: 12 }, (_, i) => `HSET ${prefix}:order:${i} status placed`),
    ];
    cli(port, [], `${commands.join('\n')}\n`);
  };

  const run = (env: string, args: string[]): Promise<CliRun> =>
    lifeline([...args, '--config', configPath, '--env', env], {
      env: {
        ...docker.env,
        DATABASE_URL: db!.url,
        REDIS_URL: undefined,
        LIFELINE_STORE: undefined,
        LIFELINE_ENV: undefined,
        LIFELINE_CONFIG: undefined,
        RDB_REDIS_URL: `redis://:${PASSWORD}@127.0.0.1:${ports.rdb}/0`,
        AOF_REDIS_URL: `redis://:${PASSWORD}@127.0.0.1:${ports.aof}/0`,
        SMALL_REDIS_URL: `redis://:${PASSWORD}@127.0.0.1:${ports.small}/0`,
        LOCK_REDIS_URL: `redis://:${PASSWORD}@127.0.0.1:${ports.lock}/0`,
      },
    });

  const backup = async (env: string): Promise<string> => {
    const r = await run(env, ['backup', '--json']);
    expect(r.code, `${r.stderr}\n${r.stdout}`).toBe(0); // --json puts an error on stdout
    const parsed = JSON.parse(r.stdout);
    expect(JSON.parse(readFileSync(join(parsed.path, 'backup.json'), 'utf8')).files.redis).toBeTruthy();
    return parsed.id;
  };

  beforeAll(async () => {
    docker = await startDockerEnvironment();
    const image = buildRedisImage(docker);
    db = await createSampleDatabase(1, 'rlive');
    ports.rdb = await freePort();
    ports.aof = await freePort();
    ports.small = await freePort();
    ports.lock = await freePort();
    const server = (port: number, appendonly: 'yes' | 'no', extra: string[] = []) =>
      JSON.stringify([
        'redis-server',
        '--port',
        String(port),
        '--bind',
        '127.0.0.1',
        '--dir',
        '/data',
        '--appendonly',
        appendonly,
        '--requirepass',
        PASSWORD,
        '--repl-diskless-sync-delay',
        '0',
        ...extra,
      ]);
    writeFileSync(
      join(stackDir.path, 'docker-compose.yml'),
      [
        'version: "3.8"',
        'services:',
        '  redis:',
        `    image: ${image}`,
        '    network_mode: host',
        `    command: ${server(ports.rdb, 'no')}`,
        '    volumes: ["rdb-data:/data"]',
        '  redis-aof:',
        `    image: ${image}`,
        '    network_mode: host',
        `    command: ${server(ports.aof, 'yes')}`,
        '    volumes: ["aof-data:/data"]',
        // Four databases only: a snapshot with keys in db5 makes it exit at start-up.
        '  redis-small:',
        `    image: ${image}`,
        '    network_mode: host',
        `    command: ${server(ports.small, 'no', ['--databases', '4'])}`,
        '    volumes: ["small-data:/data"]',
        // Starts empty: the lock and re-check tests write into it while a restore waits.
        '  redis-lock:',
        `    image: ${image}`,
        '    network_mode: host',
        `    command: ${server(ports.lock, 'no')}`,
        '    volumes: ["lock-data:/data"]',
        'volumes:',
        '  rdb-data: {}',
        '  aof-data: {}',
        '  small-data: {}',
        '  lock-data: {}',
        '',
      ].join('\n'),
    );
    configPath = join(stackDir.path, 'lifeline.yml');
    const composeBlock = ['    compose:', '      files: [docker-compose.yml]', `      projectName: ${PROJECT}`, '      command: docker-compose'];
    writeFileSync(
      configPath,
      [
        'version: 1',
        'environments:',
        '  rdb:',
        `    store: ${store.path}`,
        '    redis: { urlEnv: RDB_REDIS_URL, service: redis }',
        ...composeBlock,
        '  aof:',
        `    store: ${store.path}`,
        '    redis: { urlEnv: AOF_REDIS_URL, service: redis-aof }',
        ...composeBlock,
        '  small:',
        `    store: ${store.path}`,
        '    redis: { urlEnv: SMALL_REDIS_URL, service: redis-small }',
        ...composeBlock,
        '  lock:',
        `    store: ${store.path}`,
        '    redis: { urlEnv: LOCK_REDIS_URL, service: redis-lock }',
        ...composeBlock,
        '  bare:',
        `    store: ${store.path}`,
        '    redis: { urlEnv: RDB_REDIS_URL }',
        ...composeBlock,
        '',
      ].join('\n'),
    );
    const up = compose(['up', '-d']);
    expect(up.status, up.stderr).toBe(0);
    for (const port of [ports.rdb, ports.aof, ports.small, ports.lock]) {
      for (
        let i = 0;
        i < 100 && spawnSync('redis-cli', ['-p', String(port), '--no-auth-warning', 'PING'], { env: { ...process.env, REDISCLI_AUTH: PASSWORD }, encoding: 'utf8' }).stdout.trim() !== 'PONG';
        i++
      )
        await new Promise((r) => setTimeout(r, 100));
    }
  });

  afterAll(async () => {
    if (docker) compose(['down', '-v', '--timeout', '2']);
    await docker?.stop();
    if (db) await dropDatabase(db.name);
    store.cleanup();
    stackDir.cleanup();
  });

  describe('appendonly no', () => {
    let backupId: string;
    let atBackup: Record<string, string[]>;
    let beforeRestore: Record<string, string[]>;

    beforeAll(async () => {
      seed(ports.rdb, 'rdb');
      atBackup = keySet(ports.rdb);
      backupId = await backup('rdb');
      // Written after the backup: the restore must take these away again.
      cli(ports.rdb, [], 'SET after:1 x\nSET after:2 y\nDEL rdb:cache:0\nSELECT 5\nSET after:db5 z\n');
      beforeRestore = keySet(ports.rdb);
      expect(beforeRestore).not.toEqual(atBackup);
    });

    it.each([
      ['no --confirm', []],
      ['a different case', ['--confirm', 'Redis']],
      ['a trailing space', ['--confirm', 'redis ']],
      ['another service name', ['--confirm', 'redis-aof']],
    ])('refuses with %s (exit 3) and leaves every live key in place', async (_what, confirm) => {
      const r = await run('rdb', ['redis-restore', '--backup', backupId, ...confirm]);
      expect(r.code, r.stderr).toBe(3);
      expect(r.stderr).toContain('--confirm redis');
      expect(r.stderr).toMatch(/nothing was changed/);
      expect(r.stderr).not.toContain(PASSWORD);
      expect(keySet(ports.rdb)).toEqual(beforeRestore);
      expect(existsSync(join(store.path, 'rdb', 'redis-snapshots'))).toBe(false);
    });

    it('refuses a snapshot with one flipped byte (checksum, and redis-check-rdb with --skip-verify); the live keys stay', async () => {
      const damaged = await backup('rdb');
      const file = join(store.path, 'rdb', 'backups', damaged, 'redis.rdb');
      const fd = openSync(file, 'r+');
      writeSync(fd, Buffer.from('#'), 0, 1, 200);
      closeSync(fd);
      const checked = await run('rdb', ['redis-restore', '--backup', damaged, '--confirm', 'redis']);
      expect(checked.code, checked.stderr).toBe(3);
      expect(checked.stderr).toMatch(/fails its checksum/);
      const parsed = await run('rdb', ['redis-restore', '--backup', damaged, '--confirm', 'redis', '--skip-verify']);
      expect(parsed.code, parsed.stderr).toBe(3);
      expect(parsed.stderr).toMatch(/does not validate/);
      expect(keySet(ports.rdb)).toEqual(beforeRestore);
      expect(existsSync(join(store.path, 'rdb', 'redis-snapshots'))).toBe(false);
    });

    let preRestoreId: string;

    it("with --confirm redis, replaces the data: the backup's keys are back, later keys are gone", async () => {
      const r = await run('rdb', ['redis-restore', '--backup', backupId, '--confirm', 'redis', '--json']);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).not.toContain(PASSWORD);
      for (const step of ['[1/7]', '[4/7]', '[5/7]', '[7/7]']) expect(r.stderr).toContain(step);
      const result = JSON.parse(r.stdout);
      expect(result).toMatchObject({ ok: true, mode: 'rdb', service: 'redis', checksumsVerified: true, snapshotKeys: 217, snapshotKeysWithTtl: 5, keysAfter: { db0: 205, db3: 12 } });
      expect(keySet(ports.rdb)).toEqual(atBackup);
      preRestoreId = result.preRestoreSnapshot.id;
      const dir = result.preRestoreSnapshot.path;
      expect(dir).toBe(join(store.path, 'rdb', 'redis-snapshots', preRestoreId));
      expect(spawnSync('sha256sum', ['-c', 'SHA256SUMS'], { cwd: dir }).status).toBe(0);
      const files = compose(['exec', '-T', 'redis', 'ls', '-ln', '/data']).stdout;
      expect(files).toMatch(new RegExp(`${REDIS_UID}\\s+${REDIS_UID}\\s+\\d+ .* dump\\.rdb`));
    });

    it('the pre-restore snapshot undoes the restore', async () => {
      const r = await run('rdb', ['redis-restore', '--backup', preRestoreId, '--confirm', 'redis']);
      expect(r.code, r.stderr).toBe(0);
      expect(keySet(ports.rdb)).toEqual(beforeRestore);
    });

    it('an empty live Redis needs no confirmation; a Redis that cannot load the snapshot fails with exit 1 and says where the old data is', async () => {
      // Catalog entries are plain directories: hand this environment's entries to the other one.
      cpSync(join(store.path, 'rdb', 'backups', backupId), join(store.path, 'small', 'backups', backupId), { recursive: true });
      cpSync(join(store.path, 'rdb', 'redis-snapshots', preRestoreId), join(store.path, 'small', 'redis-snapshots', preRestoreId), { recursive: true });
      expect(keySet(ports.small)).toEqual({});
      const first = await run('small', ['redis-restore', '--backup', backupId, '--json']);
      expect(first.code, first.stderr).toBe(0);
      expect(JSON.parse(first.stdout)).toMatchObject({ ok: true, preRestoreSnapshot: null });
      expect(keySet(ports.small)).toEqual(atBackup);

      // The pre-restore snapshot holds a key in db5; this server has four databases.
      const failed = await run('small', ['redis-restore', '--backup', preRestoreId, '--confirm', 'redis-small']);
      expect(failed.code, failed.stderr).toBe(1);
      expect(failed.stderr).toMatch(/did not come back/);
      expect(failed.stderr).toMatch(/logs --tail \d+ redis-small/);
      const pre = /pre-restore snapshot (\S+) at/.exec(failed.stderr)?.[1];
      expect(pre).toBeTruthy();
      expect(failed.stderr).toContain(`redis-restore --env small --backup ${pre} --confirm redis-small`);
      expect(failed.stderr).not.toContain(PASSWORD);

      // The service is down now; its pre-restore snapshot recorded the settings, so the undo works,
      // still only with the exact confirmation.
      const unconfirmed = await run('small', ['redis-restore', '--backup', pre!]);
      expect(unconfirmed.code, unconfirmed.stderr).toBe(3);
      const undo = await run('small', ['redis-restore', '--backup', pre!, '--confirm', 'redis-small']);
      expect(undo.code, undo.stderr).toBe(0);
      expect(undo.stderr).toMatch(/not running/);
      expect(keySet(ports.small)).toEqual(atBackup);
    });
  });

  // Encryption at rest (#21): a backup's snapshot stored as redis.rdb.age is decrypted in the stream
  // into redis-check-rdb and docker cp (never onto this host's disk); the pre-restore snapshot is stored encrypted too.
  describe('an encrypted snapshot (encryption.recipients)', () => {
    const MARK = 'ZQXJ-REDIS-ENC-5521';
    let keys: { a: string; b: string; aRecipient: string };
    let backupId: string;
    let atBackup: Record<string, string[]>;
    let beforeRestore: Record<string, string[]>;
    const runAs = (args: string[], extra: Record<string, string | undefined>) =>
      lifeline([...args, '--config', configPath, '--env', 'enc'], {
        env: {
          ...docker.env,
          DATABASE_URL: db!.url,
          REDIS_URL: undefined,
          LIFELINE_STORE: undefined,
          LIFELINE_ENV: undefined,
          LIFELINE_CONFIG: undefined,
          LIFELINE_AGE_IDENTITY: undefined,
          LIFELINE_AGE_IDENTITY_FILE: undefined,
          RDB_REDIS_URL: `redis://:${PASSWORD}@127.0.0.1:${ports.rdb}/0`,
          ...extra,
        },
      });

    beforeAll(async () => {
      const keyDir = join(stackDir.path, 'keys');
      mkdirSync(keyDir, { mode: 0o700 });
      for (const name of ['a', 'b']) spawnSync('age-keygen', ['-o', join(keyDir, `${name}.key`)], { stdio: 'pipe' });
      const text = (name: string) => readFileSync(join(keyDir, `${name}.key`), 'utf8');
      keys = { a: text('a'), b: text('b'), aRecipient: /public key: (age1\S+)/.exec(text('a'))![1]! };
      writeFileSync(
        configPath,
        readFileSync(configPath, 'utf8') +
          [
            '  enc:',
            `    store: ${store.path}`,
            '    redis: { urlEnv: RDB_REDIS_URL, service: redis }',
            `    encryption: { recipients: [${keys.aRecipient}] }`,
            '    compose:',
            '      files: [docker-compose.yml]',
            `      projectName: ${PROJECT}`,
            '      command: docker-compose',
            '',
          ].join('\n'),
      );
      cli(ports.rdb, [], `SET enc:mark ${MARK}\nSET enc:value before\n`);
      atBackup = keySet(ports.rdb);
      const r = await runAs(['backup', '--json'], {});
      expect(r.code, `${r.stderr}\n${r.stdout}`).toBe(0);
      backupId = JSON.parse(r.stdout).id;
      expect(readdirSync(join(store.path, 'enc', 'backups', backupId))).toContain('redis.rdb.age');
      cli(ports.rdb, [], 'SET enc:value after\nSET enc:later 1\n');
      beforeRestore = keySet(ports.rdb);
    });

    it('no identity: exit 2 naming the variables; a wrong one: exit 1; a tampered byte behind rewritten checksums: exit 1; nothing changed each time', async () => {
      const none = await runAs(['redis-restore', '--backup', backupId, '--confirm', 'redis'], {});
      expect(none.code, none.stderr).toBe(2);
      expect(none.stderr).toContain('LIFELINE_AGE_IDENTITY_FILE');
      const wrong = await runAs(['redis-restore', '--backup', backupId, '--confirm', 'redis'], { LIFELINE_AGE_IDENTITY: keys.b });
      expect(wrong.code, wrong.stderr).toBe(1);
      expect(wrong.stderr).toContain('not among them');
      // A flipped ciphertext byte with SHA256SUMS and backup.json rewritten to match: the age MAC fails it, exit 1, before anything is touched.
      const entry = join(store.path, 'enc', 'backups', backupId);
      const saved = Object.fromEntries(['redis.rdb.age', 'SHA256SUMS', 'backup.json'].map((f) => [f, readFileSync(join(entry, f))]));
      try {
        const bytes = Buffer.from(saved['redis.rdb.age']!);
        bytes[Math.floor(bytes.length / 2)]! ^= 0x01;
        writeFileSync(join(entry, 'redis.rdb.age'), bytes);
        const oldSha = createHash('sha256').update(saved['redis.rdb.age']!).digest('hex');
        const newSha = createHash('sha256').update(bytes).digest('hex');
        for (const f of ['SHA256SUMS', 'backup.json']) writeFileSync(join(entry, f), saved[f]!.toString('utf8').replace(oldSha, newSha));
        const tampered = await runAs(['redis-restore', '--backup', backupId, '--confirm', 'redis'], { LIFELINE_AGE_IDENTITY: keys.a });
        expect(tampered.code, tampered.stderr).toBe(1);
        expect(tampered.stderr).toMatch(/failed to decrypt/);
      } finally {
        for (const [f, content] of Object.entries(saved)) writeFileSync(join(entry, f), content);
      }
      expect(keySet(ports.rdb)).toEqual(beforeRestore);
      expect(cli(ports.rdb, ['GET', 'enc:value']).trim()).toBe('after');
      expect(existsSync(join(store.path, 'enc', 'redis-snapshots'))).toBe(false);
    });

    it('the right identity restores it; the pre-restore snapshot is stored encrypted, holds no plaintext, and undoes the restore', async () => {
      const r = await runAs(['redis-restore', '--backup', backupId, '--confirm', 'redis', '--json'], { LIFELINE_AGE_IDENTITY: keys.a });
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).toContain('decrypted in the stream');
      expect(keySet(ports.rdb)).toEqual(atBackup);
      expect(cli(ports.rdb, ['GET', 'enc:value']).trim()).toBe('before');
      const pre = JSON.parse(r.stdout).preRestoreSnapshot as { id: string; path: string };
      expect(readdirSync(pre.path).sort()).toEqual(['SHA256SUMS', 'redis.rdb.age', 'snapshot.json']);
      expect(readFileSync(join(pre.path, 'redis.rdb.age')).includes(MARK)).toBe(false);
      expect(spawnSync('sha256sum', ['-c', 'SHA256SUMS'], { cwd: pre.path }).status).toBe(0);
      const undo = await runAs(['redis-restore', '--backup', pre.id, '--confirm', 'redis'], { LIFELINE_AGE_IDENTITY: keys.a });
      expect(undo.code, undo.stderr).toBe(0);
      expect(keySet(ports.rdb)).toEqual(beforeRestore);
      expect(cli(ports.rdb, ['GET', 'enc:value']).trim()).toBe('after');
      for (const out of [r, undo]) expect(out.stderr + out.stdout).not.toContain('AGE-SECRET-KEY-1');
    });
  });
  describe('appendonly yes (Redis 7 multi-part AOF)', () => {
    it('restores into the AOF so the data survives another restart, and removes the old AOF files', async () => {
      seed(ports.aof, 'aof');
      // A rewrite moves the AOF to sequence 2: files the restored manifest no longer lists.
      cli(ports.aof, ['BGREWRITEAOF']);
      for (let i = 0; i < 100 && !/aof_rewrite_in_progress:0/.test(cli(ports.aof, ['INFO', 'persistence'])); i++) await new Promise((r) => setTimeout(r, 100));
      const atBackup = keySet(ports.aof);
      const backupId = await backup('aof');
      cli(ports.aof, [], 'SET after:aof 1\nFLUSHDB\nSET only:after 1\n');
      expect(keySet(ports.aof)).not.toEqual(atBackup);

      const r = await run('aof', ['redis-restore', '--backup', backupId, '--confirm', 'redis-aof', '--json']);
      expect(r.code, r.stderr).toBe(0);
      expect(JSON.parse(r.stdout)).toMatchObject({ ok: true, mode: 'aof', staleFilesLeft: [] });
      expect(keySet(ports.aof)).toEqual(atBackup);
      const listing = compose(['exec', '-T', 'redis-aof', 'ls', '/data/appendonlydir']).stdout.split('\n').filter(Boolean).sort();
      expect(listing).toEqual(['appendonly.aof.1.base.rdb', 'appendonly.aof.1.incr.aof', 'appendonly.aof.manifest']);

      // Restarted, Redis loads the AOF again: the restored keys (and a write after the restore) are there.
      cli(ports.aof, ['SET', 'written:after:restore', '1']);
      const restart = compose(['restart', '-t', '5', 'redis-aof']);
      expect(restart.status, restart.stderr).toBe(0);
      for (
        let i = 0;
        i < 100 && spawnSync('redis-cli', ['-p', String(ports.aof), '--no-auth-warning', 'PING'], { env: { ...process.env, REDISCLI_AUTH: PASSWORD }, encoding: 'utf8' }).stdout.trim() !== 'PONG';
        i++
      )
        await new Promise((res) => setTimeout(res, 100));
      expect(keySet(ports.aof)).toEqual({ ...atBackup, db0: [...atBackup.db0!, 'written:after:restore'].sort() });
    });
  });

  describe('decided under the lock, re-checked before the stop, RDB version checked first', () => {
    let backupId: string;
    const lockFile = () => join(store.path, 'lock', '.lock');
    const startedAt = () => spawnSync('docker', ['inspect', '-f', '{{.State.StartedAt}}', `${PROJECT}_redis-lock_1`], { env: { ...process.env, ...docker.env }, encoding: 'utf8' }).stdout.trim();
    const snapshotsOfLock = () => (existsSync(join(store.path, 'lock', 'redis-snapshots')) ? readdirSync(join(store.path, 'lock', 'redis-snapshots')).filter((n) => !n.startsWith('.')) : []);

    /** The CLI as a child whose stderr the test watches while it runs. */
    const start = (args: string[]) => {
      const env: NodeJS.ProcessEnv = { ...process.env, ...docker.env, DATABASE_URL: db!.url, LOCK_REDIS_URL: `redis://:${PASSWORD}@127.0.0.1:${ports.lock}/0` };
      for (const k of ['REDIS_URL', 'LIFELINE_STORE', 'LIFELINE_ENV', 'LIFELINE_CONFIG']) delete env[k];
      const child = spawn(process.execPath, [...cliArgv(), ...args, '--config', configPath, '--env', 'lock'], { cwd: REPO, env });
      let stderr = '';
      child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
      child.stdout.resume();
      const done = new Promise<number | null>((resolve) => child.on('close', resolve));
      return { child, done, stderr: () => stderr };
    };

    beforeAll(async () => {
      cli(ports.rdb, ['FLUSHALL']);
      seed(ports.rdb, 'lockseed');
      backupId = await backup('rdb');
      cpSync(join(store.path, 'rdb', 'backups', backupId), join(store.path, 'lock', 'backups', backupId), { recursive: true });
      expect(keySet(ports.lock)).toEqual({});
    });

    it('keys written into an empty Redis while the restore waits for the lock are counted: exit 3, keys intact', async () => {
      // A live holder (this test process) has the lock, as a running backup or deploy would.
      mkdirSync(join(store.path, 'lock'), { recursive: true });
      writeFileSync(lockFile(), JSON.stringify({ owner: 'test', pid: process.pid, host: hostname(), command: 'backup', acquiredAt: new Date().toISOString() }));
      const before = startedAt();
      const restore = start(['redis-restore', '--backup', backupId]);
      try {
        for (let i = 0; i < 300 && !/waiting up to \d+ s for the lock/.test(restore.stderr()); i++) await new Promise((r) => setTimeout(r, 100));
        expect(restore.stderr()).toMatch(/waiting up to \d+ s for the lock of lock, held by test/);
        cli(ports.lock, [], 'SET written:while:waiting:1 a\nSET written:while:waiting:2 b\nSELECT 2\nSET written:while:waiting:3 c\n');
        const written = keySet(ports.lock);
        rmSync(lockFile());
        expect(await restore.done, restore.stderr()).toBe(3);
        expect(restore.stderr()).toMatch(/replaces its 3 keys, and --confirm was not given; nothing was changed/);
        expect(keySet(ports.lock)).toEqual(written);
        expect(startedAt()).toBe(before);
        expect(snapshotsOfLock()).toEqual([]);
      } finally {
        restore.child.kill('SIGKILL');
        rmSync(lockFile(), { force: true });
      }
    });

    const restoreInProcess = async (confirm: string | undefined, onLine: (line: string) => void) => {
      const saved = { ...process.env };
      Object.assign(process.env, docker.env);
      try {
        const catalog = new Catalog(store.path);
        const logger = createMemoryLogger();
        const info = logger.info.bind(logger);
        logger.info = (line: string) => {
          info(line);
          onLine(line);
        };
        return await restoreRedisLive({
          catalog,
          environment: 'lock',
          source: await findRedisSnapshot(catalog, 'lock', backupId),
          service: 'redis-lock',
          compose: { command: ['docker-compose'], files: [join(stackDir.path, 'docker-compose.yml')], projectName: PROJECT },
          target: { host: '127.0.0.1', port: ports.lock, password: PASSWORD, tls: false },
          confirm,
          runner: new LocalRunner(),
          checkRunner: new LocalRunner(),
          logger,
          startTimeoutSeconds: 60,
        });
      } finally {
        for (const k of Object.keys(docker.env)) if (saved[k] === undefined) delete process.env[k];
      }
    };

    it('keys that appear in the empty Redis after the decision, before the stop, refuse an unconfirmed restore (exit 3)', async () => {
      cli(ports.lock, ['FLUSHALL']);
      const before = startedAt();
      // The writer strikes between the decision ("no keys, no confirmation needed") and the stop.
      const attempt = restoreInProcess(undefined, (line) => {
        if (line.startsWith('[4/7]')) cli(ports.lock, [], 'SET late:1 x\nSET late:2 y\n');
      });
      await expect(attempt).rejects.toMatchObject({ code: 'REDIS_CHANGED', exitCode: 3 });
      await expect(attempt).rejects.toThrow(/held no keys when the restore was decided and holds 2 now/);
      expect(keySet(ports.lock)).toEqual({ db0: ['late:1', 'late:2'] });
      expect(startedAt()).toBe(before);
      expect(snapshotsOfLock()).toEqual([]);
    });

    it('with --confirm, keys that appear before the stop are saved in a pre-restore snapshot first', async () => {
      cli(ports.lock, ['FLUSHALL']);
      const result = await restoreInProcess('redis-lock', (line) => {
        if (line.startsWith('[4/7]')) cli(ports.lock, [], 'SET late:3 z\n');
      });
      expect(result.ok).toBe(true);
      expect(result.preRestoreSnapshot).not.toBeNull();
      const snapshot = JSON.parse(readFileSync(join(result.preRestoreSnapshot!.path, 'snapshot.json'), 'utf8'));
      expect(snapshot.files.redis.keys).toEqual({ db0: 1 });
      expect(keySet(ports.lock).db0).toContain('lockseed:cache:0');
      expect(keySet(ports.lock).db0).not.toContain('late:3');
    });

    /** A copy of the backup whose snapshot header says `header`, with SHA256SUMS and backup.json made consistent. */
    const craft = (header: string): string => {
      const id = `${backupId}-${header.toLowerCase()}`;
      const dir = join(store.path, 'lock', 'backups', id);
      cpSync(join(store.path, 'lock', 'backups', backupId), dir, { recursive: true });
      const rdb = readFileSync(join(dir, 'redis.rdb'));
      rdb.write(header, 0, 'latin1');
      writeFileSync(join(dir, 'redis.rdb'), rdb);
      const sha = createHash('sha256').update(rdb).digest('hex');
      const meta = JSON.parse(readFileSync(join(dir, 'backup.json'), 'utf8'));
      const old = meta.files.redis.sha256;
      meta.id = id;
      meta.files.redis.sha256 = sha;
      writeFileSync(join(dir, 'backup.json'), JSON.stringify(meta));
      writeFileSync(join(dir, 'SHA256SUMS'), readFileSync(join(dir, 'SHA256SUMS'), 'utf8').replace(old, sha));
      return id;
    };

    it.each([
      ['REDIS0011', /Redis 7\.0\.\d+ loads RDB versions up to 10, and the snapshot is RDB version 11 \(REDIS0011\)/],
      ['REDIS0012', /Redis 7\.0\.\d+ loads RDB versions up to 10, and the snapshot is RDB version 12 \(REDIS0012\)/],
      ['VALKEY080', /Valkey 9\+ RDB version 80 \(VALKEY080\); Redis 7\.0\.\d+ reads only REDIS snapshots/],
    ])('a snapshot with header %s is refused (exit 3) before anything stops, naming the version and the server', async (header, message) => {
      const keys = keySet(ports.lock);
      const before = startedAt();
      const snapshotsBefore = snapshotsOfLock();
      const id = craft(header);
      const r = await run('lock', ['redis-restore', '--backup', id, '--confirm', 'redis-lock']);
      expect(r.code, r.stderr).toBe(3);
      expect(r.stderr).toMatch(message);
      expect(r.stderr).toMatch(/cannot be loaded by the live server of service redis-lock/);
      expect(keySet(ports.lock)).toEqual(keys);
      expect(startedAt()).toBe(before);
      expect(snapshotsOfLock()).toEqual(snapshotsBefore);
    });
  });

  it('without redis.service it is a usage error (exit 2) that says what to set', async () => {
    const r = await run('bare', ['redis-restore', '--confirm', 'redis']);
    expect(r.code, r.stderr).toBe(2);
    expect(r.stderr).toMatch(/redis\.service/);
  });
});
