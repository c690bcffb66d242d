import { chmodSync, chownSync, cpSync, existsSync, mkdirSync, readdirSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { cliArgv, REPO, runProcess, type CliRun } from '../helpers/cli';
import { createSampleDatabase, dropDatabase, tempDir } from '../helpers/db';

const CLI = cliArgv();
const baseEnv = { DATABASE_URL: undefined, REDIS_URL: undefined, LIFELINE_STORE: undefined, LIFELINE_ENV: undefined, LIFELINE_CONFIG: undefined, LIFELINE_DEBUG: undefined };

/** The CLI as root under umask 022, the way a cron job runs it. */
function lifeline(args: string[], env: Record<string, string | undefined> = {}): Promise<CliRun> {
  return runProcess('sh', ['-c', 'umask 022; exec "$0" "$@"', process.execPath, ...CLI, ...args], { env: { ...baseEnv, ...env } });
}

const nobody = { uid: Number(execFileSync('id', ['-u', 'nobody'], { encoding: 'utf8' }).trim()), gid: Number(execFileSync('id', ['-g', 'nobody'], { encoding: 'utf8' }).trim()) };

/** chown -R to nobody, the way the other user would own what it planted. */
function giveToNobody(path: string): void {
  chownSync(path, nobody.uid, nobody.gid);
  if (statSync(path).isDirectory()) for (const name of readdirSync(path)) giveToNobody(join(path, name));
}

/** Every file name under `dir`, recursively (what a write through the link would have left). */
function tree(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { recursive: true }) as string[];
}

describe('directories under the store root are real directories of the user Lifeline runs as (#15)', { timeout: 900_000 }, () => {
  const dir = tempDir('lifeline-catalog-paths-');
  const store = join(dir.path, 'store');
  const outside = join(dir.path, 'x');
  let db: Awaited<ReturnType<typeof createSampleDatabase>>;
  let config: string;
  let env: Record<string, string | undefined>;
  let backupId: string;
  const args = (name: string) => ['--config', config, '--env', name];

  beforeAll(async () => {
    expect(process.getuid?.()).toBe(0); // the attack needs a second user; the suite runs as root
    db = await createSampleDatabase(2, 'cpath');
    chmodSync(dir.path, 0o755);
    mkdirSync(outside, { mode: 0o777 });
    chmodSync(outside, 0o777);
    config = join(dir.path, 'lifeline.yml');
    const envBlock = (name: string) => [
      `  ${name}:`,
      `    store: ${store}`,
      '    postgres: { urlEnv: CP_DATABASE_URL }',
      '    redis: { urlEnv: CP_REDIS_URL }',
      '    tenants:',
      '      collections:',
      '        - { table: tenants, column: id }',
      '        - { table: orders, column: tenant_id }',
    ];
    writeFileSync(config, ['version: 1', 'environments:', ...envBlock('production'), ...envBlock('staging'), ''].join('\n'));
    env = { CP_DATABASE_URL: db.url, CP_REDIS_URL: inject('redisUrl') };
    const backup = await lifeline(['backup', ...args('production'), '--no-verify', '--json'], env);
    expect(backup.code, backup.stderr).toBe(0);
    backupId = (JSON.parse(backup.stdout) as { id: string }).id;
  });
  afterAll(async () => {
    await Promise.allSettled([dropDatabase(db.name)]);
    dir.cleanup();
  });

  it("refuses an environment symlinked into another user's 0777 directory: backup writes nothing there, backups and verify read nothing through it", async () => {
    chmodSync(store, 0o1777); // a tmpfs mount point: anyone may create a name in it
    const nd = join(outside, 'nd');
    mkdirSync(nd);
    chmodSync(nd, 0o777);
    giveToNobody(nd);
    execFileSync('runuser', ['-u', 'nobody', '--', 'ln', '-s', nd, join(store, 'staging')]);
    try {
      const backup = await lifeline(['backup', ...args('staging'), '--no-verify'], env);
      expect(backup.code, backup.stderr).toBe(1);
      expect(backup.stderr).toContain(`${join(store, 'staging')} is a symbolic link`);
      expect(backup.stderr).toContain('nothing was read or written');
      expect(tree(nd)).toEqual([]);

      // The other user plants a forged entry (a copy of a real one) where the link points.
      cpSync(join(store, 'production', 'backups', backupId), join(nd, 'backups', backupId), { recursive: true });
      giveToNobody(nd);
      const listed = await lifeline(['backups', ...args('staging'), '--json'], env);
      expect(listed.code, listed.stdout).toBe(1);
      expect(listed.stdout).not.toContain(backupId);
      expect(listed.stdout + listed.stderr).toContain(`${join(store, 'staging')} is a symbolic link`);
      const verify = await lifeline(['verify', 'latest', ...args('staging')], env);
      expect(verify.code, verify.stdout).toBe(1);
      expect(verify.stderr).toContain(`${join(store, 'staging')} is a symbolic link`);
      expect(verify.stdout + verify.stderr).not.toMatch(/verified/i);

      // Not a link but a real directory the other user created in the 1777 root: refused too.
      rmSync(join(store, 'staging'));
      execFileSync('runuser', ['-u', 'nobody', '--', 'mkdir', '-m', '0777', join(store, 'staging')]);
      const intoForeign = await lifeline(['backup', ...args('staging'), '--no-verify'], env);
      expect(intoForeign.code, intoForeign.stderr).toBe(1);
      expect(intoForeign.stderr).toContain(`${join(store, 'staging')} is owned by uid ${nobody.uid}`);
      expect(tree(join(store, 'staging'))).toEqual([]);

      // A symlinked kind directory under a real environment of ours: refused the same way.
      rmSync(join(store, 'staging'), { recursive: true });
      mkdirSync(join(store, 'staging'), { mode: 0o700 });
      symlinkSync(join(nd, 'backups'), join(store, 'staging', 'backups'));
      const kindLink = await lifeline(['backups', ...args('staging'), '--json'], env);
      expect(kindLink.code).toBe(1);
      expect(kindLink.stdout + kindLink.stderr).toContain(`${join(store, 'staging', 'backups')} is a symbolic link`);
      const before = tree(join(nd, 'backups')).sort();
      const kindWrite = await lifeline(['backup', ...args('staging'), '--no-verify'], env);
      expect(kindWrite.code).toBe(1);
      expect(kindWrite.stderr).toContain(`${join(store, 'staging', 'backups')} is a symbolic link`);
      expect(tree(join(nd, 'backups')).sort()).toEqual(before);

      // The check can pass: our own production environment still backs up and lists.
      const fine = await lifeline(['backups', ...args('production'), '--json'], env);
      expect(fine.code, fine.stderr).toBe(0);
      expect(fine.stdout).toContain(backupId);
    } finally {
      rmSync(join(store, 'staging'), { recursive: true, force: true });
      chmodSync(store, 0o700);
    }
  });

  it('tenant verify refuses a symlinked tenant directory and a foreign entry directory, reading nothing from outside', async () => {
    const exported = await lifeline(['tenant', 'export', ...args('production'), '--tenant', 'tenant-001', '--json'], env);
    expect(exported.code, exported.stderr).toBe(0);
    const exportId = (JSON.parse(exported.stdout) as { id: string }).id;
    const verify = () => lifeline(['tenant', 'verify', ...args('production'), '--tenant', 'tenant-001', '--export', exportId], env);
    const good = await verify();
    expect(good.code, good.stderr).toBe(0); // the check can pass

    const tenantDir = join(store, 'production', 'tenants', 'tenant-001');
    const moved = join(outside, 't2');
    renameSync(tenantDir, moved);
    symlinkSync(moved, tenantDir);
    try {
      const linked = await verify();
      expect(linked.code, linked.stdout).toBe(1);
      expect(linked.stderr).toContain(`${tenantDir} is a symbolic link`);
      expect(linked.stdout + linked.stderr).not.toContain('verified');
    } finally {
      rmSync(tenantDir);
      renameSync(moved, tenantDir);
    }

    // An entry directory of another user (swapped in under our own kind directory).
    const entry = join(tenantDir, 'exports', exportId);
    chownSync(entry, nobody.uid, nobody.gid);
    try {
      const foreign = await verify();
      expect(foreign.code, foreign.stdout).toBe(1);
      expect(foreign.stderr).toContain(`${entry} is owned by uid ${nobody.uid}`);
    } finally {
      chownSync(entry, 0, 0);
    }
    expect((await verify()).code).toBe(0);
  });

  for (const mode of [0o755, 0o1777]) {
    it(`a store root of mode ${mode.toString(8)} warns on write and fails preflight's catalog-private check, with chmod 700`, async () => {
      chmodSync(store, mode);
      // One private level below no longer hides a shared root.
      chmodSync(join(store, 'production'), 0o700);
      try {
        const backup = await lifeline(['backup', ...args('production'), '--no-verify'], env);
        expect(backup.code, backup.stderr).toBe(0);
        expect(backup.stderr).toContain(`the catalog ${store} is readable`);
        expect(backup.stderr).toContain(`mode ${mode.toString(8).padStart(4, '0')}`);
        expect(backup.stderr).toContain(`chmod 700 ${store}`);
        const preflight = await lifeline(['preflight', ...args('production'), '--json'], env);
        const finding = (JSON.parse(preflight.stdout) as { findings: { check: string; status: string; fix?: string }[] }).findings.find((f) => f.check === 'backups.catalog-private');
        expect(finding).toMatchObject({ status: 'fail', fix: `chmod 700 ${store}` });
        expect(preflight.code).not.toBe(0);
      } finally {
        chmodSync(store, 0o700);
      }
    });
  }

  it('a private root owned by another user warns with chown; a private root of ours is quiet and passes', async () => {
    chownSync(store, nobody.uid, nobody.gid);
    try {
      const preflight = await lifeline(['preflight', ...args('production'), '--json'], env);
      const finding = (JSON.parse(preflight.stdout) as { findings: { check: string; status: string; fix?: string; message: string }[] }).findings.find((f) => f.check === 'backups.catalog-private');
      expect(finding?.status).toBe('fail');
      expect(finding?.message).toContain(`owned by uid ${nobody.uid}`);
      expect(finding?.fix).toContain(`chown root ${store} && chmod 700 ${store}`);
    } finally {
      chownSync(store, 0, 0);
    }
    const quiet = await lifeline(['backup', ...args('production'), '--no-verify'], env);
    expect(quiet.code, quiet.stderr).toBe(0);
    expect(quiet.stderr).not.toContain('by other local users');
    const preflight = await lifeline(['preflight', ...args('production'), '--json'], env);
    const finding = (JSON.parse(preflight.stdout) as { findings: { check: string; status: string }[] }).findings.find((f) => f.check === 'backups.catalog-private');
    expect(finding?.status).toBe('pass');
  });
});
