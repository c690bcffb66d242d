// The demo: a throwaway platform (PostgreSQL + Redis on loopback, the sample restaurant data),
// then Lifeline's release cycle step by step through the real CLI (bin/lifeline.js, i.e. dist/).
// Everything it starts is stopped by pid and removed at the end, even on failure.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startThrowawayCluster } from '../src/postgres/cluster';
import { startThrowawayRedis } from '../src/redis/server';
import { LocalRunner } from '../src/runner/runner';
import { loadSampleDataset } from '../src/sample/dataset';
import { formatPgUrl } from '../src/runner/postgres-env';
import { PsqlSession } from '../src/runner/psql';

const root = join(import.meta.dirname, '..');
const sizeMb = Number(process.env.DEMO_SIZE_MB ?? 20);

interface Step {
  title: string;
  args: string[];
  /** Exit codes that count as the expected outcome of this step (e.g. 3 for a refused restore). */
  expect?: number[];
}

function say(text: string) {
  process.stdout.write(`${text}\n`);
}

function lifeline(args: string[], env: NodeJS.ProcessEnv): Promise<number> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [join(root, 'bin/lifeline.js'), ...args], { env, stdio: ['ignore', 'inherit', 'inherit'] });
    child.on('close', (code) => resolve(code ?? 1));
  });
}

async function main(): Promise<number> {
  const work = mkdtempSync(join(tmpdir(), 'lifeline-demo-'));
  say(`Lifeline demo (sample dataset ~${sizeMb} MB; set DEMO_SIZE_MB to change)`);
  const cluster = await startThrowawayCluster({ fast: true });
  const redis = await startThrowawayRedis({ password: 'demo-redis-password' });
  try {
    const runner = new LocalRunner();
    const setup = PsqlSession.open(runner, cluster.conn);
    await setup.exec('CREATE DATABASE shop');
    await setup.close();
    const shop = { ...cluster.conn, database: 'shop' };
    say(`started PostgreSQL on 127.0.0.1:${cluster.port} and Redis on 127.0.0.1:${redis.port}`);
    const t0 = Date.now();
    await loadSampleDataset(runner, shop, { sizeMb });
    say(`loaded the sample restaurant dataset into "shop" in ${((Date.now() - t0) / 1000).toFixed(1)}s`);

    const env: NodeJS.ProcessEnv = {
      ...process.env,
      DATABASE_URL: formatPgUrl(shop),
      REDIS_URL: redis.url,
      LIFELINE_STORE: join(work, 'catalog'),
    };
    const steps: Step[] = [
      { title: 'config check: the settings Lifeline resolved (secrets masked)', args: ['config', 'check'] },
      { title: 'preflight', args: ['preflight'] },
      { title: 'backup (pre-migration)', args: ['backup', '--label', 'pre-migration', '--release', 'v1'] },
      { title: 'verify the newest backup', args: ['verify', '--backup', 'latest'] },
      { title: 'manifest', args: ['manifest', 'create', '--release', 'v1'] },
      { title: 'deploy', args: ['deploy', '--release', 'v1'] },
      { title: 'drill', args: ['drill'] },
      { title: 'rollback', args: ['rollback', '--to', 'previous'] },
    ];
    let failed = 0;
    for (const [index, step] of steps.entries()) {
      say(`\n── step ${index + 1}/${steps.length}: ${step.title}\n$ lifeline ${step.args.join(' ')}`);
      const code = await lifeline(step.args, env);
      const ok = (step.expect ?? [0]).includes(code);
      say(ok ? `   → done (exit ${code})` : `   → exit ${code}`);
      if (!ok) failed++;
    }
    say(`\n${steps.length - failed} of ${steps.length} steps done; ${failed} did not succeed (see above: commands not built yet say so).`);
    return failed ? 1 : 0;
  } finally {
    await Promise.allSettled([cluster.stop(), redis.stop()]);
    rmSync(work, { recursive: true, force: true });
    say('stopped PostgreSQL and Redis, removed the temporary files');
  }
}

main().then(
  (code) => (process.exitCode = code),
  (error: Error) => {
    process.stderr.write(`demo failed: ${error.message}\n`);
    process.exitCode = 1;
  },
);
