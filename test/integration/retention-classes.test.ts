import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Catalog } from '../../src/catalog/store';
import { createMemoryLogger } from '../../src/logger';
import { createBackup } from '../../src/backup/create';
import { listBackups, type BackupEntry, type BackupLabel, type BackupMetadata } from '../../src/backup/metadata';
import { planRetention, type RetentionPolicy } from '../../src/backup/retention';
import { recordVerification } from '../../src/backup/verify';
import { LocalRunner } from '../../src/runner/runner';
import { lifeline } from '../helpers/cli';
import { createSampleDatabase, dropDatabase, tempDir } from '../helpers/db';

const noEnv = { DATABASE_URL: undefined, REDIS_URL: undefined, LIFELINE_STORE: undefined, LIFELINE_ENV: undefined, LIFELINE_CONFIG: undefined };

function entry(id: string, createdAt: string, database: string, label: BackupLabel = 'scheduled', verified?: boolean): BackupEntry {
  return {
    id,
    dir: `/nowhere/${id}`,
    metadata: { schemaVersion: 1, id, createdAt, label, database, ...(verified !== undefined ? { verified: { at: createdAt, ok: verified, checks: [] } } : {}) } as unknown as BackupMetadata,
  };
}

const day = (n: number) => `2026-11-${String(n).padStart(2, '0')}T03:00:00.000Z`;
const policy = (over: Partial<RetentionPolicy> = {}): RetentionPolicy => ({ keepLast: 2, keepDaily: 0, keepWeekly: 0, preRestore: { keepLast: 1, keepDays: 0 }, ...over });
const kept = (plan: ReturnType<typeof planRetention>) => plan.filter((d) => d.keep).map((d) => d.id);

describe('retention classes (plan)', () => {
  const own = [entry('own1', day(1), 'shop'), entry('own2', day(2), 'shop'), entry('own3', day(3), 'shop')];
  // A pile of pre-restore backups of another database, all newer than the environment's own.
  const pile = Array.from({ length: 8 }, (_, i) => entry(`pre${i + 1}`, day(10 + i), 'scratch', 'pre-restore'));

  it("a pile of newer pre-restore backups never pushes out the environment's own backups", () => {
    const plan = planRetention([...own, ...pile], policy(), { referenced: new Map() });
    expect(kept(plan)).toEqual(['pre8', 'own3', 'own2']);
    expect(plan.find((d) => d.id === 'own3')!.reasons).toEqual(['last 1 of 2']);
    expect(plan.find((d) => d.id === 'pre8')!.reasons).toEqual(['pre-restore: last 1 of 1']);
    // Pre-restore backups never count in the daily and weekly buckets either.
    const buckets = planRetention([...own, ...pile], policy({ keepLast: 1, keepDaily: 2, keepWeekly: 1 }), { referenced: new Map() });
    expect(kept(buckets)).toEqual(['pre8', 'own3', 'own2']);
  });

  it('keeps pre-restore backups younger than keepDays, counted from now', () => {
    const now = new Date(day(17));
    const plan = planRetention([...own, ...pile], policy({ preRestore: { keepLast: 0, keepDays: 3 } }), { referenced: new Map() }, now);
    // day 17 minus 3 days: younger are days 15, 16, 17 (pre6..pre8); day 14 is exactly 3 days old.
    expect(kept(plan)).toEqual(['pre8', 'pre7', 'pre6', 'own3', 'own2']);
  });

  it('keeps the newest verified backup of each database, in each class, and a failed verification is not one', () => {
    const backups = [
      entry('shop-old-verified', day(1), 'shop', 'manual', true),
      entry('shop-newer-failed', day(2), 'shop', 'manual', false),
      entry('billing-verified', day(3), 'billing', 'manual', true),
      entry('shop-a', day(4), 'shop'),
      entry('shop-b', day(5), 'shop'),
      entry('pre-verified', day(6), 'scratch', 'pre-restore', true),
      entry('pre-newer', day(7), 'scratch', 'pre-restore'),
    ];
    const plan = planRetention(backups, policy({ keepLast: 1, preRestore: { keepLast: 0, keepDays: 0 } }), { referenced: new Map() });
    expect(kept(plan)).toEqual(['pre-verified', 'shop-b', 'billing-verified', 'shop-old-verified']);
    expect(plan.find((d) => d.id === 'billing-verified')!.reasons).toEqual(['newest verified backup of database billing']);
    expect(plan.find((d) => d.id === 'pre-verified')!.reasons).toEqual(['newest verified pre-restore backup of database scratch']);
  });

  it('keeps what a release references and the backup of the newest passing drill (a drilled backup counts as verified)', () => {
    const backups = [entry('a', day(1), 'shop'), entry('b', day(2), 'shop'), entry('c', day(3), 'shop'), entry('d', day(4), 'shop'), entry('e', day(5), 'shop')];
    const plan = planRetention(backups, policy({ keepLast: 1 }), {
      referenced: new Map([['a', ['v1.0.0', 'v1.0.1']]]),
      passingDrills: [
        { id: 'drill-new', backupId: 'c' },
        { id: 'drill-old', backupId: 'b' },
      ],
    });
    expect(kept(plan)).toEqual(['e', 'c', 'a']);
    expect(plan.find((d) => d.id === 'c')!.reasons).toEqual(['newest verified backup of database shop', 'restored by the newest passing drill drill-new']);
    expect(plan.find((d) => d.id === 'a')!.reasons).toEqual(['referenced by release v1.0.0, v1.0.1']);
  });
});

describe('lifeline prune with pre-restore backups of another database (real backups)', () => {
  let shop: Awaited<ReturnType<typeof createSampleDatabase>>;
  let scratch: Awaited<ReturnType<typeof createSampleDatabase>>;
  const store = tempDir('lifeline-prune-classes-');
  const own: string[] = [];
  const pre: string[] = [];

  beforeAll(async () => {
    shop = await createSampleDatabase(1, 'rshop');
    scratch = await createSampleDatabase(1, 'rscratch');
    const catalog = new Catalog(store.path);
    const backup = (conn: typeof shop.conn, label: BackupLabel, at: Date) =>
      createBackup({ catalog, environment: 'default', runner: new LocalRunner(), conn, label, logger: createMemoryLogger(), now: () => at });
    for (let d = 1; d <= 3; d++) own.push((await backup(shop.conn, 'scheduled', new Date(day(d)))).id);
    // Restores into another database, each taking a pre-restore backup of it: newer than the env's own.
    for (let d = 4; d <= 7; d++) pre.push((await backup(scratch.conn, 'pre-restore', new Date(day(d)))).id);
    const hoursAgo = (h: number) => new Date(Date.now() - h * 3600 * 1000);
    pre.push((await backup(scratch.conn, 'pre-restore', hoursAgo(48))).id);
    pre.push((await backup(scratch.conn, 'pre-restore', hoursAgo(1))).id);
    const oldest = (await listBackups(catalog, 'default')).find((b) => b.id === pre[0])!;
    await recordVerification(catalog, 'default', oldest, { backupId: oldest.id, ok: true, checks: [] });
    // A release (the record beside the manifest) that a rollback may return to references the oldest own backup.
    mkdirSync(join(store.path, 'default', 'releases', 'v1.0.0'), { recursive: true });
    writeFileSync(
      join(store.path, 'default', 'releases', 'v1.0.0', 'release.json'),
      JSON.stringify({ schemaVersion: 1, id: 'v1.0.0', createdAt: day(1), backup: { id: own[0], sha256: 'a'.repeat(64) } }),
    );
    writeFileSync(
      join(store.path, 'lifeline.yml'),
      ['version: 1', 'environments:', '  default:', '    retention:', '      keepLast: 2', '      keepDaily: 0', '      keepWeekly: 0', '      preRestore: { keepLast: 1, keepDays: 7 }', ''].join(
        '\n',
      ),
    );
  }, 180_000);
  afterAll(async () => {
    await dropDatabase(shop.name);
    await dropDatabase(scratch.name);
    store.cleanup();
  });

  const cli = (args: string[]) => lifeline([...args, '--config', join(store.path, 'lifeline.yml'), '--store', store.path, '--json'], { env: noEnv });

  it("deletes only old pre-restore backups: the env's own, the referenced, the verified and the recent ones stay", async () => {
    const run = await cli(['prune', '--apply']);
    expect(run.code, run.stderr).toBe(0);
    const result = JSON.parse(run.stdout);
    // pre[0] is the newest verified backup of its database; pre[4] is younger than 7 days; pre[5] is the newest.
    expect([...result.deleted].sort()).toEqual([pre[1], pre[2], pre[3]].sort());
    const listing = await cli(['backups']);
    expect(listing.code, listing.stderr).toBe(0);
    const ids = JSON.parse(listing.stdout).map((b: { id: string }) => b.id);
    expect(ids.sort()).toEqual([...own, pre[0], pre[4], pre[5]].sort());
    const reasons = Object.fromEntries(result.decisions.map((d: { id: string; reasons: string[] }) => [d.id, d.reasons.join('; ')]));
    expect(reasons[own[0]]).toBe('referenced by release v1.0.0');
    expect(reasons[pre[0]]).toBe(`newest verified pre-restore backup of database ${scratch.name}`);
    expect(reasons[pre[4]]).toBe('pre-restore: younger than 7 days');
  });

  it('a damaged release record blocks --apply (it might protect a backup), and nothing is deleted', async () => {
    writeFileSync(join(store.path, 'default', 'releases', 'v1.0.0', 'release.json'), '{ torn');
    const before = (await listBackups(new Catalog(store.path), 'default')).length;
    const run = await cli(['prune', '--apply']);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('release.json');
    expect((await listBackups(new Catalog(store.path), 'default')).length).toBe(before);
  });
});
