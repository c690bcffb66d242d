// Off-host sync throughput against a bare `curl -T` of the same file to the same S3-compatible
// server (s3rver, one process on 127.0.0.1), and the peak memory of Lifeline's Node process,
// which must stay near one part (8 MiB) however large the backup is.
import { spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Catalog } from '../src/catalog/store';
import { freePort, stopPid, waitFor } from '../src/runner/ports';
import { writeTestEntry } from '../test/helpers/s3';
import { cliArgv } from './drivers/cli';
import { bestOf, measure, type BenchContext, type BenchRow } from './lib';

const BUCKET = 'bench';

export default async function syncBench(ctx: BenchContext): Promise<BenchRow[]> {
  const store = join(ctx.workDir, 'sync-store');
  const bytes = ctx.sizeMb * 1024 * 1024;
  await writeTestEntry(new Catalog(store), 'production', 'backups', '20261121T000000000Z-bench0', 'backup.json', { 'postgres.dump': bytes });
  const dump = join(store, 'production', 'backups', '20261121T000000000Z-bench0', 'postgres.dump');

  const port = await freePort();
  const dataDir = join(ctx.workDir, 's3rver');
  mkdirSync(dataDir, { recursive: true });
  const server = spawn(process.execPath, [join(ctx.repo, 'node_modules/s3rver/bin/s3rver.js'), '-d', dataDir, '-a', '127.0.0.1', '-p', String(port), '-s', '--configure-bucket', BUCKET], {
    stdio: 'ignore',
  });
  try {
    const endpoint = `http://127.0.0.1:${port}`;
    await waitFor(async () => (await fetch(`${endpoint}/${BUCKET}?list-type=2`)).ok, { timeoutMs: 15000, what: 's3rver' });
    let run = 0;
    const lifeline = () => {
      // A fresh prefix each run, so every run uploads the whole entry.
      const config = join(ctx.workDir, `sync-${++run}.yml`);
      writeFileSync(
        config,
        `version: 1\nenvironments:\n  production:\n    store: ${store}\n    storage: { provider: s3, endpoint: "${endpoint}", region: us-east-1, bucket: ${BUCKET}, prefix: run-${run}, reviewed: { provider: s3rver, by: bench, date: 2026-11-21 } }\n`,
      );
      return measure(process.execPath, [...cliArgv(ctx.repo), 'sync', '--config', config, '--env', 'production'], {
        cwd: ctx.repo,
        env: { AWS_ACCESS_KEY_ID: 'S3RVER', AWS_SECRET_ACCESS_KEY: 'S3RVER' },
      });
    };
    const bare = () => measure('curl', ['-sS', '--fail', '-T', dump, `${endpoint}/${BUCKET}/bare-${Date.now()}`]);
    const bareRun = await bestOf(2, bare);
    const lifelineRun = await bestOf(2, lifeline);
    return [
      {
        name: `sync ${ctx.sizeMb} MB backup to S3 (multipart 8 MiB, re-hash + read-back check)`,
        lifeline: lifelineRun,
        bare: bareRun,
        maxRatio: 3,
        maxPeakRssMb: 200,
        note: 'bare is one unsigned PUT with no checksum; both limited by s3rver writing to disk',
      },
    ];
  } finally {
    if (server.pid) await stopPid(server.pid);
  }
}
