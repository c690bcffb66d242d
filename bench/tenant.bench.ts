// Tenant export throughput against bare `psql -c "\copy (select ...) to FILE"` producing the same
// NDJSON rows, and the peak memory of Lifeline's Node process (it must stay flat as tenants grow).
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { formatPgUrl, pgEnv } from '../src/runner/postgres-env';
import { cliArgv } from './drivers/cli';
import { bestOf, measure, type BenchContext, type BenchRow } from './lib';

const TENANT = 'tenant-001';

const ORDERS = `SELECT t0.* FROM public.orders AS t0 WHERE t0.tenant_id = '${TENANT}' ORDER BY t0.id`;
const BY_ORDER = (table: string) => `SELECT t0.* FROM public.${table} AS t0 WHERE t0.order_id IN (SELECT t1.id FROM public.orders AS t1 WHERE t1.tenant_id = '${TENANT}') ORDER BY t0.id`;

export default async function tenantBench(ctx: BenchContext): Promise<BenchRow[]> {
  const store = join(ctx.workDir, 'tenant-store');
  const bareDir = join(ctx.workDir, 'tenant-bare');
  const url = formatPgUrl(ctx.db);
  const entry = cliArgv(ctx.repo);
  const lifeline = () =>
    measure(
      process.execPath,
      [
        ...entry,
        'tenant',
        'export',
        '--tenant',
        TENANT,
        '--store',
        store,
        '--database-url',
        url,
        '--row-cap',
        '1000000000',
        '--collection',
        'orders:tenant_id',
        '--collection',
        'order_items:order_id->orders.id',
        '--collection',
        'payments:order_id->orders.id',
      ],
      { cwd: ctx.repo, env: { ...process.env, LIFELINE_DEBUG: '1' } },
    );
  const copies = [
    ['orders', ORDERS],
    ['order_items', BY_ORDER('order_items')],
    ['payments', BY_ORDER('payments')],
  ].flatMap(([name, select]) => ['-c', `\\copy (SELECT row_to_json(r) FROM (${select}) AS r) TO '${join(bareDir, `${name}-${Date.now()}.ndjson`)}'`]);
  const bare = () =>
    measure('sh', ['-c', `mkdir -p ${bareDir} && rm -f ${bareDir}/* && exec psql -X -q -v ON_ERROR_STOP=1 "$@"`, 'psql', ...copies], {
      env: { ...process.env, ...(pgEnv(ctx.db) as NodeJS.ProcessEnv) },
    });

  const bareRun = await bestOf(2, bare);
  const lifelineRun = await bestOf(2, lifeline);
  const exports = readdirSync(join(store, 'default', 'tenants', TENANT, 'exports')).filter((n) => !n.startsWith('.'));
  return [
    {
      name: `tenant export ${TENANT} (orders, order_items, payments; ~${ctx.sizeMb} MB dataset, ${exports.length} exports kept)`,
      lifeline: lifelineRun,
      bare: bareRun,
      minRatio: 0.8,
      maxPeakRssMb: 250,
      note: `${entry.length === 1 ? 'dist/cli bundle' : 'tsx from source'}; lifeline time includes start-up, fsyncs and the verification pass`,
    },
  ];
}
