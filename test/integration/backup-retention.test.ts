import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Catalog } from '../../src/catalog/store';
import { createMemoryLogger } from '../../src/logger';
import { createBackup } from '../../src/backup/create';
import { listBackups, type BackupEntry, type BackupMetadata } from '../../src/backup/metadata';
import { isoWeek, planRetention } from '../../src/backup/retention';
import { recordVerification } from '../../src/backup/verify';
import { LocalRunner } from '../../src/runner/runner';
import { lifeline } from '../helpers/cli';
import { createSampleDatabase, dropDatabase, tempDir } from '../helpers/db';

const noEnv = { DATABASE_URL: undefined, REDIS_URL: undefined, LIFELINE_STORE: undefined, LIFELINE_ENV: undefined, LIFELINE_CONFIG: undefined };

const NO_PRE_RESTORE = { keepLast: 0, keepDays: 0 };

function fakeEntry(id: string, createdAt: string, verified?: boolean): BackupEntry {
  return {
    id,
    dir: `/nowhere/${id}`,
    metadata: {
      schemaVersion: 1,
      id,
      createdAt,
      label: 'scheduled',
      database: 'shop',
      ...(verified !== undefined ? { verified: { at: createdAt, ok: verified, checks: [] } } : {}),
    } as unknown as BackupMetadata,
  };
}

describe('retention plan', () => {
  // Two backups a day for ten days, newest first after sorting.
  const backups = Array.from({ length: 20 }, (_, i) => {
    const day = 1 + Math.floor(i / 2);
    return fakeEntry(`b${String(i).padStart(2, '0')}`, `2026-11-${String(day).padStart(2, '0')}T${i % 2 ? '18' : '06'}:00:00.000Z`);
  });

  it('keeps the last N, the newest of each recent day and ISO week, and nothing else', () => {
    const plan = planRetention(backups, { keepLast: 3, keepDaily: 4, keepWeekly: 3, preRestore: NO_PRE_RESTORE }, { referenced: new Map() });
    const kept = plan.filter((d) => d.keep).map((d) => d.id);
    // last 3: b19 b18 b17; daily (days 10, 9, 8, 7): b19 b17 b15 b13; weekly (W46, W45, W44): b19 b15 b01.
    expect(isoWeek(new Date('2026-11-10T00:00:00Z'))).toBe('2026-W46');
    expect(isoWeek(new Date('2026-11-08T00:00:00Z'))).toBe('2026-W45');
    expect(isoWeek(new Date('2026-11-01T00:00:00Z'))).toBe('2026-W44');
    expect(kept).toEqual(['b19', 'b18', 'b17', 'b15', 'b13', 'b01']);
    expect(plan.find((d) => d.id === 'b15')!.reasons).toEqual(['daily 2026-11-08', 'weekly 2026-W45']);
    expect(plan.find((d) => d.id === 'b01')!.reasons).toEqual(['weekly 2026-W44']);
    expect(plan.find((d) => d.id === 'b10')!).toMatchObject({ keep: false, reasons: ['outside every retention rule'] });
  });

  it('never lets go of the newest verified backup or one a release references', () => {
    const withVerified = backups.map((b) => (b.id === 'b04' ? fakeEntry('b04', b.metadata.createdAt, true) : b.id === 'b18' ? fakeEntry('b18', b.metadata.createdAt, false) : b));
    const plan = planRetention(withVerified, { keepLast: 1, keepDaily: 0, keepWeekly: 0, preRestore: NO_PRE_RESTORE }, { referenced: new Map([['b02', ['v1.0.0']]]) });
    expect(plan.filter((d) => d.keep).map((d) => d.id)).toEqual(['b19', 'b04', 'b02']);
    expect(plan.find((d) => d.id === 'b04')!.reasons).toEqual(['newest verified backup of database shop']);
    expect(plan.find((d) => d.id === 'b02')!.reasons).toEqual(['referenced by release v1.0.0']);
  });
});

describe('lifeline prune', () => {
  let db: Awaited<ReturnType<typeof createSampleDatabase>>;
  const store = tempDir('lifeline-prune-');
  const ids: string[] = [];

  beforeAll(async () => {
    db = await createSampleDatabase(1, 'prune');
    const catalog = new Catalog(store.path);
    // Five backups on five days (oldest first), through the real backup path.
    for (let day = 1; day <= 5; day++) {
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
    const second = (await listBackups(catalog, 'default')).find((b) => b.id === ids[1])!;
    await recordVerification(catalog, 'default', second, { backupId: second.id, ok: true, checks: [] });
    // A release manifest (in-toto statement) that references the oldest backup.
    mkdirSync(join(store.path, 'default', 'releases', 'v1.0.0'), { recursive: true });
    writeFileSync(join(store.path, 'default', 'releases', 'v1.0.0', 'manifest.json'), JSON.stringify({ _type: 'https://in-toto.io/Statement/v1', predicate: { backup: { id: ids[0], sha256: 'x' } } }));
    writeFileSync(join(store.path, 'lifeline.yml'), 'version: 1\nenvironments:\n  default:\n    retention:\n      keepLast: 1\n      keepDaily: 0\n      keepWeekly: 0\n');
  });
  afterAll(async () => {
    await dropDatabase(db.name);
    store.cleanup();
  });

  const prune = (extra: string[]) => lifeline(['prune', '--config', join(store.path, 'lifeline.yml'), '--store', store.path, '--json', ...extra], { env: noEnv });

  it('is a dry run by default: says what would go and deletes nothing', async () => {
    const run = await prune([]);
    expect(run.code, run.stderr).toBe(0);
    const result = JSON.parse(run.stdout);
    expect(result.applied).toBe(false);
    expect(result.decisions.filter((d: { keep: boolean }) => !d.keep).map((d: { id: string }) => d.id)).toEqual([ids[3], ids[2]]);
    expect((await listBackups(new Catalog(store.path), 'default')).length).toBe(5);
  });

  it('with --apply deletes only what no rule, verification or release protects', async () => {
    const run = await prune(['--apply']);
    expect(run.code, run.stderr).toBe(0);
    expect(JSON.parse(run.stdout).deleted).toEqual([ids[3], ids[2]]);
    expect((await listBackups(new Catalog(store.path), 'default')).map((b) => b.id)).toEqual([ids[4], ids[1], ids[0]]);
  });

  it('an unreadable release manifest blocks --apply (it might protect a backup)', async () => {
    writeFileSync(join(store.path, 'default', 'releases', 'v1.0.0', 'manifest.json'), '{ torn');
    const run = await prune(['--apply']);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('manifest');
    expect((await listBackups(new Catalog(store.path), 'default')).length).toBe(3);
  });
});
