import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decryptFile, loadIdentity } from '../../src/crypto/age';
import { unencryptedPayloads } from '../../src/crypto/payload';
import { createMemoryLogger } from '../../src/logger';
import { startThrowawayRedis, type ThrowawayRedis } from '../../src/redis/server';
import { runCli } from '../../src/cli/main';
import { COMMANDS } from '../../src/commands/registry';
import { lifeline, type CliRun } from '../helpers/cli';
import { createDatabase, createSampleDatabase, dropDatabase, query, sql, tableCounts, tempDir } from '../helpers/db';
import { startS3Server } from '../helpers/s3';

// Encryption at rest with age (#21): payloads are stored as age files, encrypted as they stream;
// only an identity reads them back, and the standard `age` CLI interoperates both ways.
const MARKER = 'ZQXJ-ORDER-7731'; // short: Redis stores it raw, pg_dump --compress none keeps it whole
const TENANT_MARKER = 'ZQXJ-TENANT-4412'; // a tenant's row: only its plaintext export may hold it

function keygen(path: string): { key: string; recipient: string; file: string } {
  execFileSync('age-keygen', ['-o', path], { stdio: 'pipe' });
  const text = readFileSync(path, 'utf8');
  const key = /^AGE-SECRET-KEY-1\S+$/m.exec(text)![0];
  const recipient = /public key: (age1\S+)/.exec(text)![1]!;
  chmodSync(path, 0o600);
  return { key, recipient, file: path };
}

function filesUnder(dir: string): string[] {
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((d) => d.isFile())
    .map((d) => join(d.parentPath, d.name));
}

async function rowChecksum(database: string): Promise<string> {
  const [row] = await query<{ sum: string }>(`SELECT md5(string_agg(t::text, ',' ORDER BY t::text)) AS sum FROM keepme t`, database);
  return row!.sum;
}

describe('encryption at rest with age', () => {
  const dir = tempDir('lifeline-age-');
  const store = join(dir.path, 'store');
  let redis: ThrowawayRedis;
  let source: Awaited<ReturnType<typeof createSampleDatabase>>;
  let a: ReturnType<typeof keygen>;
  let b: ReturnType<typeof keygen>;
  let config: string;
  let env: Record<string, string | undefined>;
  let backupId: string;
  const created: string[] = [];
  const outputs: CliRun[] = [];
  const base = () => ['--config', config, '--env', 'production'];
  const run = async (args: string[], extra: Record<string, string | undefined> = {}) => {
    const result = await lifeline(args, { env: { ...env, ...extra } });
    outputs.push(result);
    return result;
  };
  // In-process (the runCli the binary calls, as tenant.test.ts does) for the tenant checks: no Node start per call.
  const inproc = async (args: string[], extra: Record<string, string | undefined> = {}): Promise<CliRun> => {
    let stdout = '';
    let stderr = '';
    const merged = Object.fromEntries(Object.entries({ PATH: process.env.PATH, HOME: process.env.HOME, ...env, ...extra }).filter(([, v]) => v !== undefined)) as Record<string, string>;
    const code = await runCli(COMMANDS, args, { stdout: (t) => (stdout += t), stderr: (t) => (stderr += t), env: merged, cwd: process.cwd(), interactive: false });
    const result = { code, stdout, stderr };
    outputs.push(result);
    return result;
  };

  beforeAll(async () => {
    a = keygen(join(dir.path, 'a.key'));
    b = keygen(join(dir.path, 'b.key'));
    redis = await startThrowawayRedis();
    execFileSync('redis-cli', ['-u', redis.url, 'SET', 'note', MARKER]);
    source = await createSampleDatabase(1, 'age_src');
    await sql(`CREATE TABLE secret_notes (t text); INSERT INTO secret_notes VALUES ('${MARKER}')`, source.name);
    await sql(
      `CREATE TABLE tenant_notes (id serial PRIMARY KEY, tenant text, note text); INSERT INTO tenant_notes (tenant, note) SELECT 'acme', '${TENANT_MARKER} #' || g FROM generate_series(1, 300) g; INSERT INTO tenant_notes (tenant, note) VALUES ('other', 'x')`,
      source.name,
    );
    config = join(dir.path, 'lifeline.yml');
    writeFileSync(
      config,
      [
        'version: 1',
        'environments:',
        '  production:',
        `    store: ${store}`,
        '    postgres: { urlEnv: SHOP_DATABASE_URL }',
        '    redis: { urlEnv: SHOP_REDIS_URL }',
        '    tenants: { collections: [{ table: tenant_notes, column: tenant }] }',
        `    encryption: { recipients: [${a.recipient}] }`,
        '',
      ].join('\n'),
    );
    env = {
      SHOP_DATABASE_URL: source.url,
      SHOP_REDIS_URL: redis.url,
      DATABASE_URL: undefined,
      REDIS_URL: undefined,
      LIFELINE_STORE: undefined,
      LIFELINE_CONFIG: undefined,
      LIFELINE_AGE_IDENTITY: undefined,
      LIFELINE_AGE_IDENTITY_FILE: undefined,
    };
  });
  afterAll(async () => {
    await Promise.allSettled([redis?.stop(), dropDatabase(source.name), ...created.map((name) => dropDatabase(name))]);
    dir.cleanup();
  });

  it('writes every payload as an age file that the age CLI decrypts; no plaintext anywhere; sha256sum -c without a key', async () => {
    const backup = await run(['backup', ...base(), '--compress', 'none', '--json']);
    expect(backup.code, backup.stderr + backup.stdout).toBe(0);
    backupId = (JSON.parse(backup.stdout) as { id: string }).id;
    const entry = join(store, 'production', 'backups', backupId);
    expect(readdirSync(entry).sort()).toEqual(['SHA256SUMS', 'backup.json', 'globals.sql.age', 'postgres.dump.age', 'redis.rdb.age']);
    for (const file of filesUnder(store)) {
      expect(readFileSync(file).includes(MARKER), `${file} holds plaintext`).toBe(false);
      expect(statSync(file).mode & 0o077).toBe(0);
    }
    // Checksums of the stored (encrypted) files: anyone can check them, no key needed.
    execFileSync('sha256sum', ['-c', 'SHA256SUMS'], { cwd: entry, stdio: 'pipe' });

    // The age CLI decrypts it into an archive pg_restore reads, whose bytes backup.json recorded.
    const plain = join(dir.path, 'plain.dump');
    execFileSync('age', ['-d', '-i', a.file, '-o', plain, join(entry, 'postgres.dump.age')]);
    expect(execFileSync('pg_restore', ['--list', plain]).toString()).toContain('TABLE DATA public secret_notes');
    const bytes = readFileSync(plain);
    expect(bytes.includes(MARKER)).toBe(true); // the control: the plaintext does hold it
    const meta = JSON.parse(readFileSync(join(entry, 'backup.json'), 'utf8'));
    expect(meta.files.postgres).toMatchObject({
      name: 'postgres.dump.age',
      encryption: { format: 'age', recipients: [a.recipient], plaintextSha256: createHash('sha256').update(bytes).digest('hex'), plaintextBytes: bytes.length },
    });
    expect(meta.files.redis.encryption.recipients).toEqual([a.recipient]);
    const rdb = execFileSync('age', ['-d', '-i', a.file, join(entry, 'redis.rdb.age')]);
    expect(rdb.includes(MARKER)).toBe(true);
    expect(createHash('sha256').update(rdb).digest('hex')).toBe(meta.files.redis.encryption.plaintextSha256);

    // And the other way: a file the age CLI encrypted is read by Lifeline's module.
    const theirs = join(dir.path, 'theirs.age');
    execFileSync('age', ['-r', a.recipient, '-o', theirs], { input: `hello ${MARKER}\n`.repeat(10000) });
    const identity = (await loadIdentity({ LIFELINE_AGE_IDENTITY: readFileSync(a.file, 'utf8') }, createMemoryLogger()))!;
    const chunks: Buffer[] = [];
    for await (const chunk of (await decryptFile(theirs, identity, 'test file')) as Readable) chunks.push(Buffer.from(chunk));
    expect(Buffer.concat(chunks).toString()).toBe(`hello ${MARKER}\n`.repeat(10000));
  });

  it('verify: ciphertext checksums only without an identity (and says so); the full check with one; a shared key file is refused', async () => {
    const without = await run(['verify', backupId, ...base()]);
    expect(without.code, without.stderr).toBe(0);
    expect(without.stdout).toContain('NOT CHECKED: the contents');
    expect(without.stdout).toContain('LIFELINE_AGE_IDENTITY');
    const recorded = JSON.parse(readFileSync(join(store, 'production', 'backups', backupId, 'backup.json'), 'utf8'));
    expect(recorded.verified).toMatchObject({ ok: true, contentsChecked: false });
    const full = await run(['verify', backupId, ...base(), '--json'], { LIFELINE_AGE_IDENTITY_FILE: a.file });
    expect(full.code, full.stderr).toBe(0);
    const report = JSON.parse(full.stdout) as { ok: boolean; contentsChecked: boolean; checks: { name: string; ok: boolean }[] };
    expect(report.contentsChecked).toBe(true);
    expect(report.checks.map((c) => c.name)).toEqual(
      expect.arrayContaining(['archive decompresses end to end', 'postgres.dump.age plaintext', 'redis.rdb.age (redis-check-rdb)', 'globals.sql.age plaintext']),
    );
    expect(report.checks.every((c) => c.ok)).toBe(true);
    expect(JSON.parse(readFileSync(join(store, 'production', 'backups', backupId, 'backup.json'), 'utf8')).verified.contentsChecked).toBeUndefined();
    const wrong = await run(['verify', backupId, ...base()], { LIFELINE_AGE_IDENTITY: readFileSync(b.file, 'utf8') });
    expect(wrong.code).toBe(1);
    chmodSync(a.file, 0o644);
    try {
      const shared = await run(['verify', backupId, ...base()], { LIFELINE_AGE_IDENTITY_FILE: a.file });
      expect(shared.code).toBe(3);
      expect(shared.stderr).toContain(`chmod 600 ${a.file}`);
    } finally {
      chmodSync(a.file, 0o600);
    }
  });

  it('restore: exit 2 without an identity, 1 with a wrong one (target untouched both times), rows match with the right one', async () => {
    const target = await createDatabase('age_dst');
    created.push(target.name);
    await sql(`CREATE TABLE keepme (id int, v text); INSERT INTO keepme SELECT g, md5(g::text) FROM generate_series(1, 500) g`, target.name);
    const before = await rowChecksum(target.name);
    const args = ['restore', ...base(), '--backup', backupId, '--target-env', 'TARGET_URL', '--confirm', target.name];
    const none = await run(args, { TARGET_URL: target.url });
    expect(none.code, none.stderr).toBe(2);
    expect(none.stderr).toContain('LIFELINE_AGE_IDENTITY');
    expect(none.stderr).toContain('LIFELINE_AGE_IDENTITY_FILE');
    expect(await rowChecksum(target.name)).toBe(before);
    const wrong = await run(args, { TARGET_URL: target.url, LIFELINE_AGE_IDENTITY: b.key });
    expect(wrong.code, wrong.stderr).toBe(1);
    expect(wrong.stderr).toContain('which is not among them; nothing was changed');
    expect(await rowChecksum(target.name)).toBe(before);
    // backup.json edited to name the wrong key as a recipient: the age header still refuses it.
    const metaPath = join(store, 'production', 'backups', backupId, 'backup.json');
    const original = readFileSync(metaPath, 'utf8');
    const forged = JSON.parse(original);
    forged.files.postgres.encryption.recipients.push(b.recipient);
    writeFileSync(metaPath, JSON.stringify(forged));
    try {
      const header = await run(args, { TARGET_URL: target.url, LIFELINE_AGE_IDENTITY: b.key });
      expect(header.code, header.stderr).toBe(1);
      expect(header.stderr).toContain('cannot be decrypted with the given identity');
      expect(await rowChecksum(target.name)).toBe(before);
    } finally {
      writeFileSync(metaPath, original);
    }
    const right = await run([...args, '--json'], { TARGET_URL: target.url, LIFELINE_AGE_IDENTITY_FILE: a.file });
    expect(right.code, right.stderr).toBe(0);
    expect(await tableCounts(target.name)).toEqual(await tableCounts(source.name));
    const preId = (JSON.parse(right.stdout) as { preRestoreBackupId: string }).preRestoreBackupId;
    // The pre-restore backup (what the target held) is encrypted too.
    expect(readdirSync(join(store, 'production', 'backups', preId))).toContain('postgres.dump.age');
  });

  it('a tampered ciphertext byte (checksums rewritten to match) fails verify and restore; the target stays as it was', async () => {
    const copy = await run(['backup', ...base(), '--json']);
    expect(copy.code, copy.stderr).toBe(0);
    const id = (JSON.parse(copy.stdout) as { id: string }).id;
    const entry = join(store, 'production', 'backups', id);
    const path = join(entry, 'postgres.dump.age');
    const bytes = readFileSync(path);
    bytes[Math.floor(bytes.length / 2)]! ^= 0x01;
    writeFileSync(path, bytes);
    // An attacker who can write the store rewrites the checksums too: the age MAC still catches it.
    const sha = createHash('sha256').update(bytes).digest('hex');
    const meta = JSON.parse(readFileSync(join(entry, 'backup.json'), 'utf8'));
    const oldSha = meta.files.postgres.sha256 as string;
    meta.files.postgres.sha256 = sha;
    writeFileSync(join(entry, 'backup.json'), JSON.stringify(meta));
    writeFileSync(join(entry, 'SHA256SUMS'), readFileSync(join(entry, 'SHA256SUMS'), 'utf8').replace(oldSha, sha));
    const verify = await run(['verify', id, ...base(), '--json'], { LIFELINE_AGE_IDENTITY_FILE: a.file });
    expect(verify.code).toBe(1);
    expect(verify.stdout).toMatch(/decrypt/i);

    const target = await createDatabase('age_tamper');
    created.push(target.name);
    await sql(`CREATE TABLE keepme (id int, v text); INSERT INTO keepme SELECT g, md5(g::text) FROM generate_series(1, 50) g`, target.name);
    const before = await rowChecksum(target.name);
    const restore = await run(['restore', ...base(), '--backup', id, '--target-env', 'TARGET_URL', '--confirm', target.name], { TARGET_URL: target.url, LIFELINE_AGE_IDENTITY_FILE: a.file });
    expect(restore.code, restore.stderr).toBe(1);
    expect(restore.stderr).toMatch(/AGE_DECRYPT_FAILED|failed to decrypt/);
    expect(await rowChecksum(target.name)).toBe(before);
    const leftovers = await query<{ n: number }>(`SELECT count(*)::int AS n FROM pg_database WHERE datname LIKE '${target.name}_lifeline_%'`, 'postgres');
    expect(leftovers[0]!.n).toBe(0);
    // reencrypt refuses to rewrite a damaged entry: exit 1, the entry byte for byte as it was, no staging left.
    const rotated = join(dir.path, 'rotated.yml');
    writeFileSync(rotated, readFileSync(config, 'utf8').replace(`recipients: [${a.recipient}]`, `recipients: [${b.recipient}]`));
    const rewrite = await run(['reencrypt', '--backup', id, '--config', rotated, '--env', 'production'], { LIFELINE_AGE_IDENTITY_FILE: a.file });
    expect(rewrite.code, rewrite.stderr).toBe(1);
    expect(rewrite.stderr).toMatch(/failed to decrypt/);
    expect(createHash('sha256').update(readFileSync(path)).digest('hex')).toBe(sha);
    expect(readdirSync(join(store, 'production', 'backups')).filter((n) => n.startsWith('.'))).toEqual([]);
    execFileSync('rm', ['-rf', entry]); // the later tests sync the store: a damaged entry would fail that
  });

  it('drill: exit 2 without an identity, 1 with a wrong one, passes with the right one', async () => {
    const drillTarget = () => `${source.url.replace(/\/[^/?]+(\?|$)/, `/age_drill_${Math.random().toString(16).slice(2, 10)}$1`)}`;
    const none = await run(['drill', ...base(), '--backup', backupId, '--target', drillTarget()]);
    expect(none.code, none.stderr).toBe(2);
    expect(none.stderr).toContain('LIFELINE_AGE_IDENTITY_FILE');
    const wrong = await run(['drill', ...base(), '--backup', backupId, '--target', drillTarget()], { LIFELINE_AGE_IDENTITY: b.key });
    expect(wrong.code, wrong.stderr).toBe(1);
    const url = drillTarget();
    created.push(new URL(url).pathname.slice(1));
    const right = await run(['drill', ...base(), '--backup', backupId, '--target', url, '--json'], { LIFELINE_AGE_IDENTITY: readFileSync(a.file, 'utf8') });
    expect(right.code, right.stderr).toBe(0);
    expect(JSON.parse(right.stdout).passed).toBe(true);
  });

  it('reencrypt: a plaintext entry gets encrypted, an added recipient alone reads the rewritten entry, a kill mid-way leaves the entry whole', async () => {
    // A backup taken before encryption was configured: plaintext payloads.
    const plainConfig = join(dir.path, 'plain.yml');
    writeFileSync(plainConfig, readFileSync(config, 'utf8').replace(/ *encryption:.*\n/, ''));
    const old = await run(['backup', '--config', plainConfig, '--env', 'production', '--json']);
    expect(old.code, old.stderr).toBe(0);
    const oldId = (JSON.parse(old.stdout) as { id: string }).id;
    expect(readdirSync(join(store, 'production', 'backups', oldId))).toContain('postgres.dump');

    // Rotation: B is added; entries encrypted to A need an identity to be rewritten.
    writeFileSync(config, readFileSync(config, 'utf8').replace(`recipients: [${a.recipient}]`, `recipients: [${a.recipient}, ${b.recipient}]`));
    const none = await run(['reencrypt', '--backup', backupId, ...base()]);
    expect(none.code, none.stderr).toBe(2);
    expect(none.stderr).toContain('LIFELINE_AGE_IDENTITY');
    const plainEntry = await run(['reencrypt', '--backup', oldId, ...base(), '--json']);
    expect(plainEntry.code, plainEntry.stderr).toBe(0);
    expect(readdirSync(join(store, 'production', 'backups', oldId)).sort()).toEqual(['SHA256SUMS', 'backup.json', 'globals.sql.age', 'postgres.dump.age', 'redis.rdb.age']);
    execFileSync('sha256sum', ['-c', 'SHA256SUMS'], { cwd: join(store, 'production', 'backups', oldId), stdio: 'pipe' });

    const entry = join(store, 'production', 'backups', backupId);
    const rewritten = await run(['reencrypt', '--backup', backupId, ...base(), '--json'], { LIFELINE_AGE_IDENTITY_FILE: a.file });
    expect(rewritten.code, rewritten.stderr).toBe(0);
    expect(JSON.parse(rewritten.stdout).entries[0]).toMatchObject({ id: backupId, action: 'rewritten' });
    execFileSync('sha256sum', ['-c', 'SHA256SUMS'], { cwd: entry, stdio: 'pipe' });
    // B's key alone now reads it: the age CLI, and a full verify.
    expect(execFileSync('age', ['-d', '-i', b.file, join(entry, 'postgres.dump.age')]).includes(MARKER)).toBe(true);
    const byB = await run(['verify', backupId, ...base(), '--json'], { LIFELINE_AGE_IDENTITY_FILE: b.file });
    expect(byB.code, byB.stdout).toBe(0);
    expect(JSON.parse(byB.stdout).contentsChecked).toBe(true);
    // Every other entry (pre-restore backups included) is still encrypted to A alone: an identity
    // holding both keys, as age-keygen output concatenated, rewrites them and skips the done one.
    const both = `${readFileSync(a.file, 'utf8')}\n${readFileSync(b.file, 'utf8')}`;
    const bOnly = await run(['reencrypt', '--backup', 'all', ...base()], { LIFELINE_AGE_IDENTITY_FILE: b.file });
    expect(bOnly.code).toBe(1); // B cannot read what only A can: refused before any entry is rewritten
    expect(bOnly.stderr).toContain('which is not among them');
    const again = await run(['reencrypt', '--backup', 'all', ...base(), '--json'], { LIFELINE_AGE_IDENTITY: both });
    expect(again.code, again.stderr).toBe(0);
    expect((JSON.parse(again.stdout).entries as { id: string; action: string }[]).find((e) => e.id === backupId)!.action).toBe('skipped');

    // Killed while it writes the new copy: the entry stays listed and whole (old or new, never a mix).
    writeFileSync(config, readFileSync(config, 'utf8').replace(`, ${b.recipient}]`, ']'));
    const before = readFileSync(join(entry, 'backup.json'), 'utf8');
    const { spawn } = await import('node:child_process');
    const child = spawn(process.execPath, ['--import', 'tsx', join(import.meta.dirname, '..', '..', 'src/cli/index.ts'), 'reencrypt', '--backup', backupId, ...base()], {
      env: { ...process.env, ...env, LIFELINE_AGE_IDENTITY_FILE: b.file } as NodeJS.ProcessEnv,
      stdio: 'ignore',
    });
    const kindDir = join(store, 'production', 'backups');
    let sawStaging = false;
    const exited = new Promise((resolve) => child.on('exit', resolve));
    let done = false;
    void exited.then(() => (done = true));
    while (!done) {
      if (readdirSync(kindDir).some((n) => n.startsWith('.staging-reencrypt-'))) {
        sawStaging = true;
        child.kill('SIGKILL');
        break;
      }
      await new Promise((resolve) => setImmediate(resolve));
    }
    await exited;
    expect(sawStaging).toBe(true);
    const after = readFileSync(join(entry, 'backup.json'), 'utf8');
    expect(after).toBe(before); // killed before its swap: nothing of the entry changed
    const listed = await run(['backups', ...base(), '--json']);
    expect((JSON.parse(listed.stdout) as { id: string }[]).map((r) => r.id)).toContain(backupId);
    const broken = await run(['lock', 'break', ...base()]);
    expect(broken.code, broken.stderr).toBe(0);
    const whole = await run(['verify', backupId, ...base(), '--json'], { LIFELINE_AGE_IDENTITY_FILE: b.file });
    expect(whole.code, whole.stdout).toBe(0);
    // The next run sweeps nothing it should not, and finishes the rotation.
    const finish = await run(['reencrypt', '--backup', backupId, ...base()], { LIFELINE_AGE_IDENTITY_FILE: b.file });
    expect(finish.code, finish.stderr).toBe(0);
    expect(() => execFileSync('age', ['-d', '-i', b.file, join(entry, 'postgres.dump.age')], { stdio: 'pipe' })).toThrow();
    expect(execFileSync('age', ['-d', '-i', a.file, join(entry, 'postgres.dump.age')]).length).toBeGreaterThan(0);
  }, 300_000);

  let plainExportId: string;
  let encryptedExportId: string;
  it('tenant exports: stored as .age files, verify decrypts in the stream (none = not read, wrong = 1), a tampered byte with sums rewritten fails, deletion-plan needs the identity', async () => {
    const tenantDir = join(store, 'production', 'tenants', 'acme', 'exports');
    // One made before encryption was configured: plaintext (the control for the greps below).
    const plainConfig = join(dir.path, 'plain-tenant.yml');
    writeFileSync(plainConfig, readFileSync(config, 'utf8').replace(/ *encryption:.*\n/, ''));
    const old = await inproc(['tenant', 'export', '--tenant', 'acme', '--config', plainConfig, '--env', 'production', '--json']);
    expect(old.code, old.stderr).toBe(0);
    plainExportId = (JSON.parse(old.stdout) as { id: string }).id;
    expect(readFileSync(join(tenantDir, plainExportId, 'tenant_notes.ndjson')).includes(TENANT_MARKER)).toBe(true);

    const made = await inproc(['tenant', 'export', '--tenant', 'acme', ...base(), '--archive', '--json']);
    expect(made.code, made.stderr).toBe(0);
    encryptedExportId = (JSON.parse(made.stdout) as { id: string }).id;
    const entry = join(tenantDir, encryptedExportId);
    expect(readdirSync(entry).sort()).toEqual(['SHA256SUMS', 'export.json', 'export.tar.gz', 'export.tar.gz.sha256', 'tenant_notes.ndjson.age']);
    for (const file of filesUnder(entry)) expect(readFileSync(file).includes(TENANT_MARKER), `${file} holds a tenant row`).toBe(false);
    expect(execFileSync('tar', ['-tzf', join(entry, 'export.tar.gz')]).toString()).toMatch(/tenant_notes\.ndjson\.age\n/);
    execFileSync('sha256sum', ['-c', 'SHA256SUMS'], { cwd: entry, stdio: 'pipe' });
    const plain = execFileSync('age', ['-d', '-i', a.file, join(entry, 'tenant_notes.ndjson.age')]);
    expect(plain.toString().split('\n').filter(Boolean)).toHaveLength(300);
    const manifest = JSON.parse(readFileSync(join(entry, 'export.json'), 'utf8'));
    expect(manifest.collections[0]).toMatchObject({
      file: 'tenant_notes.ndjson.age',
      rows: 300,
      contentDigest: createHash('sha256').update(plain).digest('hex'),
      encryption: { format: 'age', recipients: [a.recipient], plaintextBytes: plain.length },
    });
    expect(manifest.totals.bytes).toBe(plain.length);

    const none = await inproc(['tenant', 'verify', '--tenant', 'acme', ...base(), '--json']);
    expect(none.code, none.stderr).toBe(0);
    expect(JSON.parse(none.stdout)).toMatchObject({ ok: true, encrypted: true, contentsChecked: false });
    expect(none.stderr).toMatch(/rows were NOT read.*LIFELINE_AGE_IDENTITY_FILE/);
    const wrong = await inproc(['tenant', 'verify', '--tenant', 'acme', ...base()], { LIFELINE_AGE_IDENTITY: b.key });
    expect(wrong.code, wrong.stderr).toBe(1);
    expect(wrong.stdout).toContain('is not among them');
    const right = await inproc(['tenant', 'verify', '--tenant', 'acme', ...base(), '--json'], { LIFELINE_AGE_IDENTITY_FILE: a.file });
    expect(right.code, right.stdout).toBe(0);
    expect(JSON.parse(right.stdout)).toMatchObject({ ok: true, contentsChecked: true, files: expect.arrayContaining([{ file: 'tenant_notes.ndjson.age', ok: true, rows: 300 }]) });

    // A deletion plan stands on a readable export: exit 2 naming the variables without an identity.
    const planNone = await inproc(['tenant', 'deletion-plan', '--tenant', 'acme', ...base()]);
    expect(planNone.code, planNone.stderr).toBe(2);
    expect(planNone.stderr).toContain('LIFELINE_AGE_IDENTITY_FILE');
    const plan = await inproc(['tenant', 'deletion-plan', '--tenant', 'acme', ...base(), '--json'], { LIFELINE_AGE_IDENTITY_FILE: a.file });
    expect(plan.code, plan.stderr).toBe(0);
    expect(JSON.parse(plan.stdout).coveredBy.exportId).toBe(encryptedExportId);

    // A flipped ciphertext byte, SHA256SUMS and export.json rewritten to match (an attacker with write access to the store).
    const path = join(entry, 'tenant_notes.ndjson.age');
    const original = readFileSync(path);
    const originalSums = readFileSync(join(entry, 'SHA256SUMS'), 'utf8');
    const originalManifest = readFileSync(join(entry, 'export.json'), 'utf8');
    const bytes = Buffer.from(original);
    bytes[bytes.length - 20]! ^= 0x01;
    writeFileSync(path, bytes);
    const sha = createHash('sha256').update(bytes).digest('hex');
    writeFileSync(join(entry, 'SHA256SUMS'), originalSums.replace(manifest.collections[0].sha256, sha));
    writeFileSync(join(entry, 'export.json'), originalManifest.replace(manifest.collections[0].sha256, sha));
    try {
      const blind = await inproc(['tenant', 'verify', '--tenant', 'acme', ...base(), '--json']);
      // The checksums match, but the handoff archive still holds the stored file as it was: the keyless
      // verify catches the swap there (before the archive was checked, only decryption could tell).
      expect(blind.code).toBe(1);
      expect(blind.stdout).toMatch(/export\.tar\.gz: its tenant_notes\.ndjson\.age is not the stored one/);
      expect(JSON.parse(blind.stdout).contentsChecked).toBe(false);
      const tampered = await inproc(['tenant', 'verify', '--tenant', 'acme', ...base()], { LIFELINE_AGE_IDENTITY_FILE: a.file });
      expect(tampered.code).toBe(1);
      expect(tampered.stdout).toMatch(/failed to decrypt/);
    } finally {
      writeFileSync(path, original);
      writeFileSync(join(entry, 'SHA256SUMS'), originalSums);
      writeFileSync(join(entry, 'export.json'), originalManifest);
    }
  }, 120_000);

  it('claims of encryption are checked against the bytes (outside attack): a forged export.json, a rebuilt archive, an error that would quote a row', async () => {
    const tenantDir = join(store, 'production', 'tenants', 'acme', 'exports');
    const plainEntry = join(tenantDir, plainExportId);
    const encEntry = join(tenantDir, encryptedExportId);
    // What sync decides from: the bytes. The genuine encrypted export passes; the plaintext one does not.
    expect(await unencryptedPayloads(encEntry)).toEqual([]);
    expect(await unencryptedPayloads(plainEntry)).toEqual(['tenant_notes.ndjson is not an age file']);

    // B1/B2: the plaintext export's export.json edited to claim encryption (files untouched).
    const manifestPath = join(plainEntry, 'export.json');
    const originalManifest = readFileSync(manifestPath, 'utf8');
    const forged = JSON.parse(originalManifest);
    forged.collections = forged.collections.map((c: { sha256: string; bytes: number }) => ({
      ...c,
      encryption: { format: 'age', recipients: [a.recipient], plaintextSha256: c.sha256, plaintextBytes: c.bytes },
    }));
    writeFileSync(manifestPath, JSON.stringify(forged, null, 2));
    try {
      expect(await unencryptedPayloads(plainEntry)).toEqual(['tenant_notes.ndjson is not an age file']);
      // reencrypt must not skip it as "already encrypted": the entry is named as edited, and left as it was.
      const re = await inproc(['reencrypt', '--tenant', 'acme', ...base(), '--json'], { LIFELINE_AGE_IDENTITY_FILE: a.file });
      expect(re.code, re.stdout + re.stderr).toBe(1);
      expect(re.stdout + re.stderr).toMatch(/says tenant_notes\.ndjson is encrypted with age, but the stored file is not an age file/);
      expect(readFileSync(join(plainEntry, 'tenant_notes.ndjson')).includes(TENANT_MARKER)).toBe(true);
      // M1: a decrypting verify of the forged entry fails without quoting the row it choked on.
      const verify = await inproc(['tenant', 'verify', '--tenant', 'acme', '--export', plainExportId, ...base(), '--json'], { LIFELINE_AGE_IDENTITY_FILE: a.file });
      expect(verify.code).toBe(1);
      expect(verify.stdout + verify.stderr).not.toContain(TENANT_MARKER);
    } finally {
      writeFileSync(manifestPath, originalManifest);
    }

    // B3: the handoff archive rebuilt with the decrypted (plaintext) file, its checksums rewritten to match.
    const archive = join(encEntry, 'export.tar.gz');
    const saved = Object.fromEntries(['export.tar.gz', 'export.tar.gz.sha256', 'SHA256SUMS', 'export.json'].map((f) => [f, readFileSync(join(encEntry, f))]));
    const work = join(dir.path, 'rebuild');
    const folder = execFileSync('tar', ['-tzf', archive]).toString().split('\n')[0]!.split('/')[0]!;
    mkdirSync(join(work, folder), { recursive: true });
    writeFileSync(join(work, folder, 'tenant_notes.ndjson.age'), execFileSync('age', ['-d', '-i', a.file, join(encEntry, 'tenant_notes.ndjson.age')]));
    execFileSync('tar', ['-czf', archive, '-C', work, folder]);
    const sha = createHash('sha256').update(readFileSync(archive)).digest('hex');
    const oldSha = String(saved['export.tar.gz.sha256']).split(' ')[0]!;
    writeFileSync(join(encEntry, 'export.tar.gz.sha256'), `${sha}  export.tar.gz\n`);
    writeFileSync(join(encEntry, 'SHA256SUMS'), String(saved['SHA256SUMS']).replace(oldSha, sha));
    const m = JSON.parse(String(saved['export.json']));
    m.archive = { ...m.archive, sha256: sha, bytes: statSync(archive).size };
    writeFileSync(join(encEntry, 'export.json'), JSON.stringify(m, null, 2));
    try {
      expect(await unencryptedPayloads(encEntry)).toEqual([`export.tar.gz: member ${folder}/tenant_notes.ndjson.age is not an age file`]);
      for (const identity of [{}, { LIFELINE_AGE_IDENTITY_FILE: a.file }]) {
        const v = await inproc(['tenant', 'verify', '--tenant', 'acme', '--export', encryptedExportId, ...base(), '--json'], identity);
        expect(v.code, v.stdout).toBe(1);
        expect(v.stdout).toMatch(/export\.tar\.gz: its tenant_notes\.ndjson\.age is not the stored one/);
        expect(v.stdout + v.stderr).not.toContain(TENANT_MARKER);
      }
    } finally {
      for (const [f, content] of Object.entries(saved)) writeFileSync(join(encEntry, f), content);
    }
    const again = await inproc(['tenant', 'verify', '--tenant', 'acme', '--export', encryptedExportId, ...base()]);
    expect(again.code, again.stdout).toBe(0);

    // M2: an entry set aside by a re-encryption killed between its renames is named by doctor, never with an rm.
    const setAside = join(tenantDir, `.reencrypt-old-${encryptedExportId}-999999`);
    mkdirSync(setAside);
    try {
      const doctor = await inproc(['doctor', ...base()]);
      expect(doctor.code).toBe(1);
      expect(doctor.stdout + doctor.stderr).toMatch(/set aside by a re-encryption killed between its two renames[^\n]*reencrypt-old-[^\n]*\n\s*fix: run lifeline reencrypt again/);
      expect(doctor.stdout + doctor.stderr).not.toMatch(/rm -rf[^\n]*reencrypt-old/);
    } finally {
      rmSync(setAside, { recursive: true, force: true });
    }
  }, 120_000);

  it('sync and restore --from-remote of an encrypted backup: the bucket holds only ciphertext', async () => {
    const s3 = await startS3Server();
    try {
      const remoteConfig = join(dir.path, 'remote.yml');
      writeFileSync(
        remoteConfig,
        readFileSync(config, 'utf8') +
          [
            '    storage:',
            '      provider: s3',
            `      endpoint: ${s3.endpoint}`,
            '      region: us-east-1',
            `      bucket: ${s3.bucket}`,
            '      prefix: age',
            '      accessKeyIdEnv: SHOP_S3_KEY',
            '      secretAccessKeyEnv: SHOP_S3_SECRET',
            '      reviewed: { provider: s3rver, by: ops-lead, date: 2026-11-21 }',
            '',
          ].join('\n'),
      );
      const rbase = ['--config', remoteConfig, '--env', 'production'];
      const s3env = { SHOP_S3_KEY: s3.accessKeyId, SHOP_S3_SECRET: s3.secretAccessKey };
      const backup = await run(['backup', ...rbase, '--json'], s3env);
      expect(backup.code, backup.stderr).toBe(0);
      const id = (JSON.parse(backup.stdout) as { id: string }).id;
      const sync = await run(['sync', ...rbase, '--json'], s3env);
      expect(sync.code, sync.stderr).toBe(0);
      // The encrypted tenant export goes up like a backup; the plaintext one made before encryption stays, naming the fix.
      const synced = (JSON.parse(sync.stdout).bucket.entries as { kind: string; id: string; status: string }[]).filter((e) => e.kind === 'tenants/acme/exports');
      expect(synced).toEqual([expect.objectContaining({ id: encryptedExportId, status: 'uploaded' })]);
      expect(sync.stderr).toContain(`tenants/acme/exports/${plainExportId} is not copied off the host`);
      expect(sync.stderr).toContain('lifeline reencrypt --env production --tenant "acme"');
      // --compare says what sync kept on the host on purpose, and does not fail for it (it listed it as missing before).
      const compared = await inproc(['sync', ...rbase, '--compare', '--json'], s3env);
      expect(compared.code, compared.stdout + compared.stderr).toBe(0);
      const comparison = JSON.parse(compared.stdout) as { keptOnHost: { kind: string; id: string }[]; missingRemotely: unknown[] };
      expect(comparison.keptOnHost).toContainEqual({ kind: 'tenants/acme/exports', id: plainExportId });
      expect(comparison.missingRemotely).toEqual([]);
      const comparedText = await inproc(['sync', ...rbase, '--compare'], s3env);
      expect(comparedText.stdout).toMatch(new RegExp(`kept on host +tenants/acme/exports/${plainExportId} \\(plaintext`));
      expect(comparedText.stdout).not.toContain(`missing remotely     tenants/acme/exports/${plainExportId}`);
      // Also with --kinds tenants: no plaintext row leaves the host.
      const named = await inproc(['sync', ...rbase, '--kinds', 'tenants', '--json'], s3env);
      expect(named.code, named.stderr).toBe(0);
      expect(named.stderr).toContain(`tenants/acme/exports/${plainExportId} is not copied off the host`);
      // reencrypt --tenant encrypts the old export (no identity needed: it was plaintext); then it syncs too.
      const rewrite = await inproc(['reencrypt', '--tenant', 'acme', ...rbase, '--json'], s3env);
      expect(rewrite.code, rewrite.stderr).toBe(0);
      expect((JSON.parse(rewrite.stdout).entries as { action: string }[]).map((e) => e.action).sort()).toEqual(['rewritten', 'skipped']);
      const oldEntry = join(store, 'production', 'tenants', 'acme', 'exports', plainExportId);
      expect(readdirSync(oldEntry).sort()).toEqual(['SHA256SUMS', 'export.json', 'tenant_notes.ndjson.age']);
      execFileSync('sha256sum', ['-c', 'SHA256SUMS'], { cwd: oldEntry, stdio: 'pipe' });
      const reverified = await inproc(['tenant', 'verify', '--tenant', 'acme', '--export', plainExportId, ...rbase, '--json'], { ...s3env, LIFELINE_AGE_IDENTITY_FILE: a.file });
      expect(reverified.code, reverified.stdout).toBe(0);
      expect(JSON.parse(reverified.stdout)).toMatchObject({ ok: true, contentsChecked: true });
      for (const file of filesUnder(store)) expect(readFileSync(file).includes(TENANT_MARKER), `${file} holds a tenant row`).toBe(false);
      const after = await inproc(['sync', ...rbase, '--json'], s3env);
      expect(after.code, after.stderr).toBe(0);
      expect(after.stderr).not.toContain('is not copied off the host');
      const bucketRoot = dirname(s3.objectPath('zz'));
      const objects = filesUnder(bucketRoot);
      expect(objects.some((f) => f.includes('tenant_notes.ndjson.age'))).toBe(true);
      for (const file of objects) expect(readFileSync(file).includes(TENANT_MARKER), `${file} in the bucket holds a tenant row`).toBe(false);
      const object = readFileSync(s3.objectPath(`age/production/backups/${id}/redis.rdb.age`));
      expect(object.includes(MARKER)).toBe(false);
      expect(object.subarray(0, 21).toString()).toBe('age-encryption.org/v1');
      execFileSync('rm', ['-rf', join(store, 'production', 'backups', id)]);
      const target = await createDatabase('age_remote');
      created.push(target.name);
      const none = await run(['restore', ...rbase, '--backup', id, '--from-remote', '--target-env', 'TARGET_URL'], { ...s3env, TARGET_URL: target.url });
      expect(none.code, none.stderr).toBe(2);
      const restore = await run(['restore', ...rbase, '--backup', id, '--from-remote', '--target-env', 'TARGET_URL'], { ...s3env, TARGET_URL: target.url, LIFELINE_AGE_IDENTITY_FILE: a.file });
      expect(restore.code, restore.stderr).toBe(0);
      expect(await tableCounts(target.name)).toEqual(await tableCounts(source.name));
    } finally {
      await s3.close();
    }
  }, 200_000);

  it('never prints the identity', () => {
    expect(outputs.length).toBeGreaterThan(5);
    for (const out of outputs) {
      for (const key of [a.key, b.key]) {
        expect(out.stdout).not.toContain(key);
        expect(out.stderr).not.toContain(key);
      }
    }
  });
});
