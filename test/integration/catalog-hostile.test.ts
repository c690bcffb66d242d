import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, cpSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Catalog } from '../../src/catalog/store';
import { createMemoryLogger } from '../../src/logger';
import { createBackup } from '../../src/backup/create';
import { BACKUP_METADATA_FILE, type BackupEntry, type BackupMetadata } from '../../src/backup/metadata';
import { LocalRunner } from '../../src/runner/runner';
import { cliArgv, REPO, type CliRun } from '../helpers/cli';
import { createSampleDatabase, dropDatabase, tempDir } from '../helpers/db';

const noEnv = { DATABASE_URL: undefined, REDIS_URL: undefined, LIFELINE_STORE: undefined, LIFELINE_ENV: undefined, LIFELINE_CONFIG: undefined };

/** The CLI with a hard limit: a hang is killed (by its pid) and reported as such, never waited on. */
function lifelineWithin(seconds: number, args: string[]): Promise<CliRun & { ms: number; timedOut: boolean }> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const env: NodeJS.ProcessEnv = { ...process.env };
    for (const k of Object.keys(noEnv)) delete env[k];
    const child = spawn(process.execPath, [...cliArgv(), ...args], { cwd: REPO, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    const timer = setTimeout(() => {
      timedOut = true;
      if (child.pid) process.kill(child.pid, 'SIGKILL');
    }, seconds * 1000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr, ms: Date.now() - started, timedOut });
    });
  });
}

function fingerprint(path: string): { bytes: string; mtimeMs: number } {
  return { bytes: readFileSync(path).toString('base64'), mtimeMs: statSync(path).mtimeMs };
}

describe('hostile entries in the backup catalog', () => {
  let db: Awaited<ReturnType<typeof createSampleDatabase>>;
  const store = tempDir('lifeline-hostile-');
  const outside = tempDir('lifeline-outside-');
  const ids: string[] = [];
  const B = () => join(store.path, 'default', 'backups');
  const config = () => join(store.path, 'lifeline.yml');
  const cli = (args: string[], seconds = 60) => lifelineWithin(seconds, [...args, '--config', config(), '--store', store.path, '--json']);
  const realIds = () =>
    readdirSync(B())
      .filter((n) => ids.includes(n))
      .sort();

  beforeAll(async () => {
    chmodSync(store.path, 0o700);
    db = await createSampleDatabase(1, 'hostile');
    const catalog = new Catalog(store.path);
    for (let day = 1; day <= 2; day++) {
      const entry = await createBackup({
        catalog,
        environment: 'default',
        runner: new LocalRunner(),
        conn: db.conn,
        label: 'scheduled',
        logger: createMemoryLogger(),
        now: () => new Date(`2026-11-0${day}T03:00:00.000Z`),
      });
      ids.push(entry.id);
    }
    // keepLast 2: two real backups are both kept, unless a planted entry takes one of the two places.
    writeFileSync(config(), 'version: 1\nenvironments:\n  default:\n    retention:\n      keepLast: 2\n      keepDaily: 0\n      keepWeekly: 0\n');
  });
  afterAll(async () => {
    await dropDatabase(db.name);
    store.cleanup();
    outside.cleanup();
  });

  describe('A: a symlinked entry directory', () => {
    const evilId = '20261202T090000000Z-evil';
    const E = () => join(outside.path, 'E');
    let before: { bytes: string; mtimeMs: number };

    beforeAll(() => {
      mkdirSync(E(), { recursive: true });
      cpSync(join(B(), ids[0]), E(), { recursive: true });
      const meta = JSON.parse(readFileSync(join(E(), BACKUP_METADATA_FILE), 'utf8')) as BackupMetadata;
      // In the future and claiming a passed verification: it would be "newest" and "newest verified".
      writeFileSync(
        join(E(), BACKUP_METADATA_FILE),
        JSON.stringify({ ...meta, id: evilId, createdAt: '2030-01-01T00:00:00.000Z', verified: { at: '2030-01-01T00:00:00.000Z', ok: true, checks: [] } }, null, 2),
      );
      symlinkSync(E(), join(B(), evilId));
      before = fingerprint(join(E(), BACKUP_METADATA_FILE));
    });
    afterAll(() => unlinkSync(join(B(), evilId)));

    it('is not listed: backups names the link as skipped and lists only the real entries', async () => {
      const run = await cli(['backups']);
      expect(run.code, run.stderr).toBe(0);
      expect(JSON.parse(run.stdout).map((r: { id: string }) => r.id)).toEqual([ids[1], ids[0]]);
      expect(run.stderr).toContain(`skipped ${join(B(), evilId)}`);
      expect(run.stderr).toContain('symbolic link');
    });

    it('verify latest verifies a real backup and never writes through the link', async () => {
      const run = await cli(['verify', 'latest']);
      expect(run.code, run.stderr).toBe(0);
      expect(JSON.parse(run.stdout).backupId).toBe(ids[1]);
      expect(fingerprint(join(E(), BACKUP_METADATA_FILE))).toEqual(before);
    });

    it('verify of the planted id by name is refused and writes nothing outside', async () => {
      const run = await cli(['verify', evilId]);
      expect(run.code).not.toBe(0);
      expect(run.stdout + run.stderr).toMatch(/symbolic link/);
      expect(fingerprint(join(E(), BACKUP_METADATA_FILE))).toEqual(before);
    });

    it('prune --apply does not count it and deletes no real backup', async () => {
      const dry = await cli(['prune']);
      expect(dry.code, dry.stderr).toBe(0);
      const plan = JSON.parse(dry.stdout);
      expect(plan.decisions.map((d: { id: string }) => d.id)).not.toContain(evilId);
      expect(JSON.stringify(plan)).not.toContain('evil');
      const run = await cli(['prune', '--apply']);
      expect(run.code, run.stderr).toBe(0);
      expect(JSON.parse(run.stdout).deleted).toEqual([]);
      expect(realIds()).toEqual([...ids].sort());
      expect(fingerprint(join(E(), BACKUP_METADATA_FILE))).toEqual(before);
      expect(existsSync(join(E(), BACKUP_METADATA_FILE))).toBe(true);
    });

    it('the metadata rewrite refuses a symlinked entry directory and a symlinked backup.json', async () => {
      const catalog = new Catalog(store.path);
      const meta = JSON.parse(readFileSync(join(E(), BACKUP_METADATA_FILE), 'utf8')) as BackupMetadata;
      const linked: BackupEntry = { id: evilId, dir: join(B(), evilId), metadata: meta };
      await expect(catalog.rewriteExistingMetadata(linked, BACKUP_METADATA_FILE, { ...meta, verified: { at: meta.createdAt, ok: false, checks: [] } })).rejects.toThrow(/symbolic link/);
      await expect(catalog.updateMetadata(linked, BACKUP_METADATA_FILE, meta)).rejects.toThrow(/symbolic link/);
      // A real entry directory whose backup.json is a link to a file outside the catalog.
      const real = join(B(), ids[0]);
      const saved = readFileSync(join(real, BACKUP_METADATA_FILE));
      const target = join(outside.path, 'target.json');
      writeFileSync(target, '{"outside":true}\n');
      const targetBefore = fingerprint(target);
      unlinkSync(join(real, BACKUP_METADATA_FILE));
      symlinkSync(target, join(real, BACKUP_METADATA_FILE));
      try {
        const entry: BackupEntry = { id: ids[0], dir: real, metadata: meta };
        await expect(catalog.rewriteExistingMetadata(entry, BACKUP_METADATA_FILE, meta)).rejects.toThrow(/symbolic link/);
        expect(fingerprint(target)).toEqual(targetBefore);
        // And the listing reports it as damaged instead of reading through it.
        const run = await cli(['backups']);
        expect(run.code, run.stderr).toBe(0);
        expect(JSON.parse(run.stdout).map((r: { id: string }) => r.id)).toEqual([ids[1]]);
        expect(run.stderr).toContain(`skipped ${join(real, BACKUP_METADATA_FILE)}`);
        expect(fingerprint(target)).toEqual(targetBefore);
      } finally {
        unlinkSync(join(real, BACKUP_METADATA_FILE));
        writeFileSync(join(real, BACKUP_METADATA_FILE), saved, { mode: 0o600 });
      }
      expect(fingerprint(join(E(), BACKUP_METADATA_FILE))).toEqual(before);
    });
  });

  describe('B: a FIFO named backup.json', () => {
    const fifoId = '20261202T100000000Z-fifo';
    beforeAll(() => {
      mkdirSync(join(B(), fifoId), { mode: 0o700 });
      const made = spawnSync('mkfifo', [join(B(), fifoId, BACKUP_METADATA_FILE)]);
      expect(made.status).toBe(0);
      // A FIFO and a plain file where entry directories belong.
      spawnSync('mkfifo', [join(B(), '20261202T110000000Z-pipe')]);
      writeFileSync(join(B(), '20261202T120000000Z-file'), 'not an entry');
    });
    afterAll(() => {
      rmSync(join(B(), fifoId), { recursive: true, force: true });
      rmSync(join(B(), '20261202T110000000Z-pipe'), { force: true });
      rmSync(join(B(), '20261202T120000000Z-file'), { force: true });
    });

    it('backups returns within seconds, lists the good entries and names the FIFO', async () => {
      const run = await cli(['backups'], 20);
      expect(run.timedOut, 'lifeline backups hung on a FIFO').toBe(false);
      expect(run.ms).toBeLessThan(15_000);
      expect(run.code, run.stderr).toBe(0);
      expect(JSON.parse(run.stdout).map((r: { id: string }) => r.id)).toEqual([ids[1], ids[0]]);
      expect(run.stderr).toContain(`skipped ${join(B(), fifoId, BACKUP_METADATA_FILE)}`);
      expect(run.stderr).toContain('FIFO');
      expect(run.stderr).toContain(`skipped ${join(B(), '20261202T110000000Z-pipe')}`);
      expect(run.stderr).toContain(`skipped ${join(B(), '20261202T120000000Z-file')}`);
    });

    it('prune --apply returns, deletes nothing real and leaves no lock behind', async () => {
      const run = await cli(['prune', '--apply'], 20);
      expect(run.timedOut, 'prune --apply hung on a FIFO while holding the lock').toBe(false);
      expect(run.code, run.stderr).toBe(0);
      expect(JSON.parse(run.stdout).deleted).toEqual([]);
      expect(realIds()).toEqual([...ids].sort());
      expect(existsSync(join(store.path, 'default', '.lock'))).toBe(false);
    });

    it('verify latest returns and picks a real backup', async () => {
      const run = await cli(['verify', 'latest'], 30);
      expect(run.timedOut).toBe(false);
      expect(run.code, run.stderr).toBe(0);
      expect(JSON.parse(run.stdout).backupId).toBe(ids[1]);
    });

    it('the backup named by id is damage (exit 1), not a hang', async () => {
      const run = await cli(['verify', fifoId], 20);
      expect(run.timedOut).toBe(false);
      expect(run.code).toBe(1);
      expect(run.stdout + run.stderr).toContain('FIFO');
    });
  });

  describe('C: doctor and the lock left by a killed run', () => {
    const lockFile = () => join(store.path, 'default', '.lock');

    it('a live holder is not a leftover; after kill -9 doctor lists it with lock break, exit 1', async () => {
      const holderScript = `const { acquireLock } = await import(${JSON.stringify(join(REPO, 'src/catalog/lock.ts'))}); await acquireLock(${JSON.stringify(join(store.path, 'default'))}, 'default', { command: 'restore' }); console.log('locked'); setInterval(() => {}, 1000);`;
      const holder = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', holderScript], { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] });
      try {
        await new Promise<void>((resolve, reject) => {
          holder.stdout.setEncoding('utf8').on('data', (c: string) => c.includes('locked') && resolve());
          holder.on('close', (code) => reject(new Error(`holder exited ${code}`)));
        });
        expect(existsSync(lockFile())).toBe(true);
        const live = await cli(['doctor']);
        const liveReport = JSON.parse(live.stdout);
        expect(liveReport.lockHeld).toBe(true);
        expect(liveReport.staleLock).toBeUndefined();
        // Only host-wide drill leftovers of other runs on this machine may make it exit 1.
        expect(live.code, live.stderr).toBe(liveReport.drills.length ? 1 : 0);
        expect(live.stdout).not.toContain('lock break');
      } finally {
        const closed = new Promise((r) => holder.on('close', r));
        if (holder.pid) process.kill(holder.pid, 'SIGKILL');
        await closed;
      }
      // The killed run's lock stays; every locked command is refused until it is broken.
      expect(existsSync(lockFile())).toBe(true);
      const refused = await cli(['prune', '--apply']);
      expect(refused.code).toBe(3);
      expect(refused.stdout + refused.stderr).toContain('that process is gone');

      const doctor = await cli(['doctor']);
      expect(doctor.code).toBe(1);
      const report = JSON.parse(doctor.stdout);
      expect(report.clean).toBe(false);
      expect(report.staleLock).toMatchObject({ remove: 'lifeline lock break --env default', holder: { pid: holder.pid, command: 'restore' } });
      // The text a person reads names the lock and the command that fixes it.
      const text = await lifelineWithin(60, ['doctor', '--config', config(), '--store', store.path]);
      expect(text.code).toBe(1);
      expect(text.stdout + text.stderr).toContain('lifeline lock break --env default');
      expect(text.stdout + text.stderr).toContain(`pid ${holder.pid}`);
      expect(text.stdout).not.toContain('no leftovers');

      const broken = await cli(['lock', 'break', '--env', 'default']);
      expect(broken.code, broken.stderr).toBe(0);
      const clean = await cli(['doctor']);
      const cleanReport = JSON.parse(clean.stdout);
      expect(cleanReport.staleLock).toBeUndefined();
      expect(clean.code, clean.stderr).toBe(cleanReport.drills.length ? 1 : 0);
      expect(realIds()).toEqual([...ids].sort());
    });
  });
});
