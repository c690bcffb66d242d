// Runs the benchmarks: `npm run bench [-- NAME ...]` (names: the bench/*.bench.ts files without
// the suffix). BENCH_SIZE_MB sets the sample dataset size (default 1000, about 1 GB as the issues ask).
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startThrowawayCluster } from '../src/postgres/cluster';
import { LocalRunner } from '../src/runner/runner';
import { PsqlSession } from '../src/runner/psql';
import { loadSampleDataset } from '../test/helpers/sample-dataset';
import { formatRows, type BenchContext, type BenchRow } from './lib';

const repo = join(import.meta.dirname, '..');
const sizeMb = Number(process.env.BENCH_SIZE_MB ?? 1000);
const wanted = process.argv.slice(2);
const files = readdirSync(join(repo, 'bench'))
  .filter((f) => f.endsWith('.bench.ts'))
  .filter((f) => wanted.length === 0 || wanted.includes(f.replace(/\.bench\.ts$/, '')));

const cluster = await startThrowawayCluster({ settings: { shared_buffers: "'512MB'", max_wal_size: "'4GB'" } });
const workDir = mkdtempSync(join(tmpdir(), 'lifeline-bench-'));
const rows: BenchRow[] = [];
try {
  const admin = PsqlSession.open(new LocalRunner(), cluster.conn);
  await admin.exec('CREATE DATABASE shop');
  await admin.close();
  const db = { ...cluster.conn, database: 'shop' };
  const t0 = Date.now();
  // The realistic profile (jsonb, free text) compresses like production data; the compact one flatters compression.
  await loadSampleDataset(new LocalRunner(), db, { sizeMb, profile: 'realistic' });
  const sizing = PsqlSession.open(new LocalRunner(), db);
  // Freshly loaded rows carry no hint bits and no visibility map, and autovacuum starts on them
  // within a minute: the first runs would set hint bits (dirtying every page they read) and compete
  // with autovacuum, whichever side runs first. Settled once here, every run reads the same pages.
  await sizing.exec('VACUUM (ANALYZE)');
  await sizing.exec('CHECKPOINT');
  const dbBytes = Number(await sizing.queryValue<string>(`SELECT pg_database_size(current_database())`));
  await sizing.close();
  process.stderr.write(`loaded ~${sizeMb} MB sample dataset (realistic profile; database ${(dbBytes / 1e6).toFixed(0)} MB) in ${((Date.now() - t0) / 1000).toFixed(0)}s\n`);
  const ctx: BenchContext = { cluster, db, sizeMb, workDir, repo };
  for (const file of files) {
    process.stderr.write(`== ${file}\n`);
    const mod = (await import(join(repo, 'bench', file))) as { default: (ctx: BenchContext) => Promise<BenchRow[]> };
    rows.push(...(await mod.default(ctx)));
  }
} finally {
  await cluster.stop();
  rmSync(workDir, { recursive: true, force: true });
}
process.stdout.write(`${formatRows(rows)}\n`);
