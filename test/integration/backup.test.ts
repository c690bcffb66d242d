import { execFileSync } from 'node:child_process';
import { chmodSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { Catalog } from '../../src/catalog/store';
import { createMemoryLogger } from '../../src/logger';
import { progressReporter } from '../../src/postgres/progress';
import { BACKUP_METADATA_FILE, listBackups, type BackupMetadata } from '../../src/backup/metadata';
import { formatPgUrl } from '../../src/runner/postgres-env';
import { SAMPLE_MIGRATION_HEAD } from '../helpers/sample-dataset';
import { lifeline } from '../helpers/cli';
import { createSampleDatabase, dropDatabase, tableCounts, tempDir } from '../helpers/db';

describe('backup progress', () => {
  it('logs bytes and rate at intervals without a sink, and leaves the display to a sink when there is one', () => {
    const logger = createMemoryLogger();
    const seen: number[] = [];
    const report = progressReporter(logger, 'pg_dump', { onBytes: (_what, bytes) => seen.push(bytes) }, 0);
    report(1_500_000);
    report(3_000_000);
    expect(seen).toEqual([1_500_000, 3_000_000]);
    // The sink (src/report/progress.ts) prints the lines itself, at its own cadence.
    expect(logger.lines).toEqual([]);
    const plain = progressReporter(logger, 'pg_dump', {}, 0);
    plain(1_500_000);
    plain(3_000_000);
    expect(logger.lines).toHaveLength(2);
    expect(logger.lines[1]).toMatch(/^pg_dump: 3\.0 MB at [\d.]+ [KMGT]?B\/s$/);
    const quiet = createMemoryLogger();
    const hourly = progressReporter(quiet, 'pg_dump', {}, 3_600_000);
    hourly(10);
    expect(quiet.lines).toEqual([]);
  });
});

const noEnv = { DATABASE_URL: undefined, REDIS_URL: undefined, LIFELINE_STORE: undefined, LIFELINE_ENV: undefined, LIFELINE_CONFIG: undefined };

describe('lifeline backup, backups and verify', () => {
  let db: Awaited<ReturnType<typeof createSampleDatabase>>;
  const store = tempDir('lifeline-backup-');
  const args = () => ['--store', store.path, '--database-url', db.url];

  beforeAll(async () => {
    db = await createSampleDatabase(2);
  });
  afterAll(async () => {
    await dropDatabase(db.name);
    store.cleanup();
  });

  let backup: { id: string; sha256: string; bytes: number; path: string };

  it('streams a custom-format dump into the catalog with checksums, counts from the same snapshot and a verification', async () => {
    const run = await lifeline(['backup', ...args(), '--label', 'pre-migration', '--release', 'v1.2.3', '--git-sha', 'abc123', '--json'], { env: noEnv });
    expect(run.stderr).not.toContain(db.conn.password!);
    expect(run.code, run.stderr).toBe(0);
    backup = JSON.parse(run.stdout);
    expect(backup.id).toMatch(/^\d{8}T\d+Z-[0-9a-f]{6}$/);
    expect(backup.bytes).toBeGreaterThan(10_000);
    // sha256sum -c from inside the directory accepts SHA256SUMS, and its hash is the reported one.
    execFileSync('sha256sum', ['-c', 'SHA256SUMS'], { cwd: backup.path });
    expect(readFileSync(join(backup.path, 'SHA256SUMS'), 'utf8')).toContain(`${backup.sha256}  postgres.dump`);
    const metadata = JSON.parse(readFileSync(join(backup.path, BACKUP_METADATA_FILE), 'utf8')) as BackupMetadata;
    expect(metadata).toMatchObject({ schemaVersion: 1, label: 'pre-migration', release: 'v1.2.3', gitSha: 'abc123', format: 'custom', database: db.name, migrationHead: SAMPLE_MIGRATION_HEAD });
    expect(metadata.rowCounts).toEqual(Object.fromEntries(Object.entries(await tableCounts(db.name))));
    expect(metadata.rowCounts['public.orders']).toBeGreaterThan(100);
    expect(metadata.schemaFingerprint).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(metadata.serverVersion).toMatch(/^15\./);
    expect(metadata.files.globals?.bytes).toBeGreaterThan(0);
    expect(metadata.verified?.ok).toBe(true);
    expect(metadata.verified?.checks.map((c) => c.name)).toEqual(expect.arrayContaining(['postgres.dump checksum', 'archive table of contents', 'archive decompresses end to end']));
  });

  it('lists backups newest first', async () => {
    // Off a terminal (a pipe here) with --json: progress lines on stderr only, percent and ETA
    // against the first backup's size, never a \r; stdout is the one JSON value.
    const second = await lifeline(['backup', ...args(), '--no-verify', '--json'], { env: { ...noEnv, LIFELINE_PROGRESS_INTERVAL_MS: '0' } });
    expect(second.code, second.stderr).toBe(0);
    expect(second.stderr).toMatch(/^pg_dump: [\d.]+ [KM]?B of ~[\d.]+ [KM]?B \(\d+%\) at [\d.]+ [KMG]?B\/s/m);
    expect(second.stderr).toMatch(/^pg_dump: .* \(done\)$/m);
    expect(second.stderr + second.stdout).not.toContain('\r');
    expect(second.stdout).not.toContain('pg_dump');
    expect(second.stdout.trim().split('\n')).toHaveLength(1);
    const run = await lifeline(['backups', ...args(), '--json'], { env: noEnv });
    expect(run.code, run.stderr).toBe(0);
    const rows = JSON.parse(run.stdout) as { id: string; label: string; createdAt: string; bytes: number; verified: boolean | null }[];
    expect(rows.map((r) => r.id)).toEqual([JSON.parse(second.stdout).id, backup.id]);
    expect(rows[0]).toMatchObject({ label: 'manual', verified: null });
    expect(rows[1]).toMatchObject({ label: 'pre-migration', verified: true, bytes: backup.bytes });
  });

  it('verify prints each check and exits 0 on an intact backup', async () => {
    const run = await lifeline(['verify', backup.id, ...args()], { env: noEnv });
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toMatch(/ok\s+archive decompresses end to end/);
  });

  it('an unknown backup id is a usage error that names it and says how to list backups', async () => {
    const run = await lifeline(['verify', '20990101T000000000Z-abcdef', ...args()], { env: noEnv });
    expect(run.code).toBe(2);
    expect(run.stderr).toContain('20990101T000000000Z-abcdef');
    expect(run.stderr).toContain('lifeline backups');
  });

  it('refuses (exit 3) before dumping when the server is newer than pg_dump, with the fix', async () => {
    const bin = tempDir('lifeline-oldtools-');
    const empty = tempDir('lifeline-backup-old-');
    try {
      for (const tool of ['psql', 'pg_dumpall']) symlinkSync(join(inject('pgBinDir'), tool), join(bin.path, tool));
      writeFileSync(join(bin.path, 'pg_dump'), '#!/bin/sh\necho "pg_dump (PostgreSQL) 14.11"\n');
      chmodSync(join(bin.path, 'pg_dump'), 0o755);
      writeFileSync(join(empty.path, 'lifeline.yml'), `version: 1\nenvironments:\n  default:\n    postgres:\n      binDir: ${bin.path}\n`);
      const run = await lifeline(['backup', '--config', join(empty.path, 'lifeline.yml'), '--store', empty.path, '--database-url', db.url], { env: noEnv });
      expect(run.code).toBe(3);
      expect(run.stderr).toContain('PostgreSQL 15');
      expect(run.stderr).toContain('postgresql-client-15');
      expect(await listBackups(new Catalog(empty.path), 'default')).toEqual([]);
    } finally {
      bin.cleanup();
      empty.cleanup();
    }
  });

  it('progress of a first backup without compression: percent from the table sizes (one catalog query), stderr only', async () => {
    const fresh = tempDir('lifeline-backup-progress-');
    try {
      const first = await lifeline(['backup', '--store', fresh.path, '--database-url', db.url, '--compress', 'none', '--no-verify', '--json'], {
        env: { ...noEnv, LIFELINE_PROGRESS_INTERVAL_MS: '0' },
      });
      expect(first.code, first.stderr).toBe(0);
      expect(first.stderr).toMatch(/^pg_dump: [\d.]+ [KM]?B of ~[\d.]+ [KM]?B \(\d+%\)/m);
      expect(first.stderr).not.toContain(db.conn.password!);
      expect(first.stdout).not.toContain('pg_dump');
      expect(JSON.parse(first.stdout).id).toMatch(/^\d{8}T/);
    } finally {
      fresh.cleanup();
    }
  });

  it('a wrong password fails with the URL masked, and nothing lists', async () => {
    const badUrl = formatPgUrl({ ...db.conn, password: 'not-the-password-42' });
    const empty = tempDir('lifeline-backup-badpw-');
    try {
      const run = await lifeline(['backup', '--store', empty.path, '--database-url', badUrl], { env: noEnv });
      expect(run.code).toBe(1);
      expect(run.stderr).toContain('password authentication failed');
      expect(run.stderr).toContain(`postgres://${db.conn.user}:***@`);
      expect(run.stderr + run.stdout).not.toContain('not-the-password-42');
      expect(await listBackups(new Catalog(empty.path), 'default')).toEqual([]);
    } finally {
      empty.cleanup();
    }
  });
});
