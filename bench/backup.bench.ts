// Backup wall time against bare `pg_dump -Fc` to a file at the same compression (target 1.05x),
// and the peak memory of Lifeline's Node process (target < 150 MB whatever the size).
import { join } from 'node:path';
import { formatPgUrl, pgEnv } from '../src/runner/postgres-env';
import { cliMeasure } from './drivers/cli';
import { bestOf, measure, type BenchContext, type BenchRow } from './lib';

export default async function backupBench(ctx: BenchContext): Promise<BenchRow[]> {
  const url = formatPgUrl(ctx.db);
  let run = 0;
  const lifeline = () => cliMeasure(ctx, ['backup', '--no-verify', '--store', join(ctx.workDir, `backup-store-${run++}`), '--database-url', url]);
  const bare = () => measure('pg_dump', ['--format=custom', '--compress=6', '--no-sync'], { env: { ...process.env, ...(pgEnv(ctx.db) as NodeJS.ProcessEnv) }, stdout: join(ctx.workDir, `bare-${run++}.dump`) });
  const bareRun = await bestOf(2, bare);
  const lifelineRun = await bestOf(2, lifeline);
  return [
    {
      name: `backup (pg_dump -Fc -Z6 + sha256 + snapshot row counts + globals), ~${ctx.sizeMb} MB dataset`,
      lifeline: lifelineRun,
      bare: bareRun,
      maxRatio: 1.05,
      maxPeakRssMb: 150,
      note: 'the shipped CLI bundle, start-up included; includes exact counts of every table',
    },
  ];
}
