// Drill wall time against the bare tools.
// Logical: `lifeline drill` into a new database against its bare equivalent (target 1.10x): a
// sha256 of the archive, `pg_restore -j2`, exact counts of every table and amcheck on every B-tree
// index in one psql session. Lifeline also checks the schema fingerprint and migration head and
// writes the report; it overlaps counts and amcheck with the restore.
// PITR: `lifeline drill --pitr` against bare `pgbackrest restore --type=time` plus PostgreSQL
// start-up, WAL replay and promotion (target 1.15x); Lifeline also runs amcheck and writes the report.
import { mkdtempSync, readdirSync, rmSync, chownSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runPgBackRest, runPhysicalBackup, stanzaInfo } from '../src/postgres/pgbackrest';
import { createMemoryLogger } from '../src/logger';
import { formatPgUrl, pgEnv } from '../src/runner/postgres-env';
import { PsqlSession } from '../src/runner/psql';
import { LocalRunner } from '../src/runner/runner';
import { loadSampleDataset, SAMPLE_TABLES } from '../test/helpers/sample-dataset';
import { resolveEnvironment } from '../src/settings/resolve';
import { startArchivingCluster } from '../test/helpers/pgbackrest-stanza';
import { cliArgv } from './drivers/cli';
import { checkpoint, compareInterleaved, measure, type BenchContext, type BenchRow } from './lib';

async function logicalDrill(ctx: BenchContext): Promise<BenchRow> {
  const store = join(ctx.workDir, 'drill-store');
  const live = formatPgUrl(ctx.db);
  const cli = (args: string[]) => measure(process.execPath, [...cliArgv(ctx.repo), ...args, '--store', store, '--database-url', live], { cwd: ctx.repo });
  await cli(['backup']);
  const backupsDir = join(store, 'default', 'backups');
  const id = readdirSync(backupsDir).find((n) => !n.startsWith('.'))!;
  const archive = join(backupsDir, id, 'postgres.dump');
  const env = { ...process.env, ...(pgEnv({ ...ctx.db, database: 'postgres' }) as NodeJS.ProcessEnv) };
  let n = 0;
  // What the drill checks, done bare: exact counts, then amcheck on every B-tree index, one session.
  const counts = SAMPLE_TABLES.map((t) => `SELECT count(*) FROM public.${t}`).join(' UNION ALL ');
  const amcheck = `CREATE EXTENSION IF NOT EXISTS amcheck; SELECT count(bt_index_check(c.oid)) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam WHERE a.amname = 'btree' AND i.indisvalid`;
  const bare = async () => {
    const db = `bare_drill_${n++}`;
    const m = await measure(
      'sh',
      ['-c', `openssl dgst -sha256 "$0" >/dev/null && createdb ${db} && pg_restore -j2 --exit-on-error -d ${db} "$0" && psql -X -q -d ${db} -c "${counts}" -c "${amcheck}"`, archive],
      { env },
    );
    await measure('dropdb', [db], { env });
    return m;
  };
  // The drill drops the database it created, so each run starts from the same state.
  const lifeline = () => cli(['drill', '--backup', id, '--jobs', '2', '--rto', '1d', '--rpo', '1d', '--target', formatPgUrl({ ...ctx.db, database: `lifeline_drill_${n++}` })]);
  const { bare: bareRun, lifeline: lifelineRun } = await compareInterleaved(3, bare, lifeline, checkpoint(env));
  return {
    name: `logical drill: verify + restore -j2 + checks (~${ctx.sizeMb} MB dataset)`,
    lifeline: lifelineRun,
    bare: bareRun,
    maxRatio: 1.1,
    maxPeakRssMb: 150,
    note: 'the shipped CLI bundle; lifeline adds start-up, exact counts, fingerprint, migration head, amcheck and the report',
  };
}

async function pitrDrill(ctx: BenchContext): Promise<BenchRow> {
  const archiving = await startArchivingCluster('bench');
  const work = mkdtempSync(join(tmpdir(), 'lifeline-bench-pitr-'));
  try {
    const admin = PsqlSession.open(new LocalRunner(), archiving.cluster.conn);
    await admin.exec('CREATE DATABASE shop');
    await admin.close();
    const shop = { ...archiving.cluster.conn, database: 'shop' };
    await loadSampleDataset(new LocalRunner(), shop, { sizeMb: ctx.sizeMb, profile: 'realistic' });
    const configPath = join(work, 'lifeline.yml');
    writeFileSync(
      configPath,
      [
        'version: 1',
        'environments:',
        '  default:',
        '    postgres:',
        '      database: shop',
        '      physical:',
        '        stanza: bench',
        `        configFile: ${archiving.physical.configFile}`,
        '',
      ].join('\n'),
    );
    const settings = resolveEnvironment({ config: configPath, store: join(work, 'store') }, { env: {}, cwd: work });
    await runPhysicalBackup(settings, createMemoryLogger());
    const session = PsqlSession.open(new LocalRunner(), shop);
    await session.exec('CREATE TABLE after_backup (id int)');
    await session.exec('INSERT INTO after_backup SELECT generate_series(1, 1000)');
    await new Promise((r) => setTimeout(r, 1100));
    const target = String(await session.queryValue(`SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US"+00"')`));
    // Recovery stops at the first commit after the target, so some must follow it.
    await session.exec('INSERT INTO after_backup SELECT generate_series(1001, 2000)');
    await session.close();
    await runPgBackRest(archiving.physical, 'check', [], 'pgbackrest check');
    const label = (await stanzaInfo(archiving.physical)).backups.at(-1)!.label;

    const [, , uid, gid] = readFileSync('/etc/passwd', 'utf8')
      .split('\n')
      .find((l) => l.startsWith('postgres:'))!
      .split(':');
    // The bare restore runs as postgres, which must be able to create its data directory here.
    chownSync(work, Number(uid), Number(gid));
    let n = 0;
    const bare = async () => {
      const dir = join(work, `bare-${n++}`);
      const data = join(dir, 'data');
      const script = [
        'set -e',
        `mkdir -m 700 -p ${data}`,
        `pgbackrest --config=${archiving.physical.configFile} --stanza=bench --pg1-path=${data} --set=${label} --type=time "--target=${target}" --target-action=promote restore`,
        `${archiving.cluster.binDir}/pg_ctl -D ${data} -l ${dir}/log -w -t 600 -o "-c port=${archiving.cluster.port + 1000} -c listen_addresses='' -c unix_socket_directories=${dir} -c archive_mode=off -c hot_standby=off" start`,
        // pg_ctl returns once the server is consistent; the restore is done only when recovery reached the target and promoted.
        `until [ "$(psql -h ${dir} -p ${archiving.cluster.port + 1000} -d postgres -XAtc 'SELECT pg_is_in_recovery()' 2>/dev/null)" = f ]; do sleep 0.1; done`,
        `${archiving.cluster.binDir}/pg_ctl -D ${data} -m fast stop`,
      ].join('\n');
      const m = await measure('runuser', ['-u', 'postgres', '--', 'sh', '-c', script]);
      rmSync(dir, { recursive: true, force: true });
      return m;
    };
    const lifeline = () => measure(process.execPath, [...cliArgv(ctx.repo), 'drill', '--pitr', target, '--config', configPath, '--store', join(work, 'store')], { cwd: ctx.repo });
    const { bare: bareRun, lifeline: lifelineRun } = await compareInterleaved(3, bare, lifeline);
    return {
      name: `PITR drill: pgbackrest restore --type=time + start-up (~${ctx.sizeMb} MB dataset)`,
      lifeline: lifelineRun,
      bare: bareRun,
      maxRatio: 1.15,
      maxPeakRssMb: 150,
      note: 'the shipped CLI bundle; lifeline adds start-up, pgbackrest info, amcheck and the report',
    };
  } finally {
    await archiving.stop();
    rmSync(work, { recursive: true, force: true });
  }
}

export default async function drillBench(ctx: BenchContext): Promise<BenchRow[]> {
  // BENCH_SKIP_PITR=1 skips the point-in-time drill (it loads its own copy of the dataset).
  return [await logicalDrill(ctx), ...(process.env.BENCH_SKIP_PITR === '1' ? [] : [await pitrDrill(ctx)])];
}
