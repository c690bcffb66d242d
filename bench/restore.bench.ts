// Restore wall time against bare `pg_restore -j2` into a new database plus an exact row count of
// every table (target 1.10x). Lifeline also verifies the checksums first, restores into a scratch
// database, checks the schema fingerprint, runs ANALYZE and renames it into place.
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { SAMPLE_TABLES } from '../test/helpers/sample-dataset';
import { formatPgUrl, pgEnv } from '../src/runner/postgres-env';
import { cliMeasure } from './drivers/cli';
import { checkpoint, compareInterleaved, measure, type BenchContext, type BenchRow } from './lib';

export default async function restoreBench(ctx: BenchContext): Promise<BenchRow[]> {
  const store = join(ctx.workDir, 'restore-store');
  const cli = (args: string[]) => cliMeasure(ctx, [...args, '--store', store]);
  await cli(['backup', '--database-url', formatPgUrl(ctx.db)]);
  const backupsDir = join(store, 'default', 'backups');
  const id = readdirSync(backupsDir).find((n) => !n.startsWith('.'))!;
  const archive = join(backupsDir, id, 'postgres.dump');
  const env = { ...process.env, ...(pgEnv({ ...ctx.db, database: 'postgres' }) as NodeJS.ProcessEnv) };
  let n = 0;
  const counts = SAMPLE_TABLES.map((t) => `SELECT count(*) FROM public.${t}`).join(' UNION ALL ');
  const bare = async () => {
    const db = `bare_${n++}`;
    const m = await measure('sh', ['-c', `createdb ${db} && pg_restore -j2 --exit-on-error -d ${db} "$0" && psql -X -q -d ${db} -c "${counts}"`, archive], { env });
    await measure('dropdb', [db], { env });
    return m;
  };
  const lifeline = async () => {
    const db = `lifeline_${n++}`;
    const m = await cli(['restore', '--backup', id, '--jobs', '2', '--target', formatPgUrl({ ...ctx.db, database: db })]);
    await measure('dropdb', [db], { env });
    return m;
  };
  const { bare: bareRun, lifeline: lifelineRun } = await compareInterleaved(3, bare, lifeline, checkpoint(env));
  return [
    {
      name: `restore -j2 into a new database + row counts (~${ctx.sizeMb} MB dataset)`,
      lifeline: lifelineRun,
      bare: bareRun,
      maxRatio: 1.1,
      maxPeakRssMb: 150,
      note: 'the shipped CLI bundle, start-up included; lifeline adds checksum verification, fingerprint, ANALYZE and the rename',
    },
  ];
}
