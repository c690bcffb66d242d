// The demo: a throwaway platform (PostgreSQL + Redis on loopback with the sample restaurant data,
// a private Docker engine and registry running busybox stand-ins for api, web and worker), then
// Lifeline's release cycle step by step through the real CLI (bin/lifeline.js, i.e. dist/).
// Everything it starts is stopped by pid and removed at the end, even on failure.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startThrowawayCluster, type ThrowawayCluster } from '../src/postgres/cluster';
import { startThrowawayRedis, type ThrowawayRedis } from '../src/redis/server';
import { LocalRunner } from '../src/runner/runner';
import { loadSampleDataset, SAMPLE_MIGRATION_HEAD } from '../test/helpers/sample-dataset';
import { formatPgUrl } from '../src/runner/postgres-env';
import { PsqlSession } from '../src/runner/psql';
import { dockerAvailable, startDockerEnvironment, type DockerEnvironment } from '../test/helpers/docker';
import { buildReleaseImages, createStack, type TestStack } from '../test/fixtures/stack/stack';

const root = join(import.meta.dirname, '..');
const sizeMb = Number(process.env.DEMO_SIZE_MB ?? 20);

function say(text: string) {
  process.stdout.write(`${text}\n`);
}

interface Outcome {
  code: number;
  stdout: string;
}

/** Runs the bundled CLI; its human output is shown as it comes, `--json` output is captured. */
function lifeline(args: string[], env: NodeJS.ProcessEnv): Promise<Outcome> {
  return new Promise((resolve) => {
    const json = args.includes('--json');
    const child = spawn(process.execPath, [join(root, 'bin/lifeline.js'), ...args], { env, stdio: ['ignore', json ? 'pipe' : 'inherit', 'inherit'] });
    let stdout = '';
    child.stdout?.setEncoding('utf8').on('data', (c: string) => (stdout += c));
    child.on('close', (code) => resolve({ code: code ?? 1, stdout }));
  });
}

async function main(): Promise<number> {
  const work = mkdtempSync(join(tmpdir(), 'lifeline-demo-'));
  let cluster: ThrowawayCluster | undefined;
  let redis: ThrowawayRedis | undefined;
  let docker: DockerEnvironment | undefined;
  let stack: TestStack | undefined;
  let step = 0;
  let failed = 0;
  try {
    say(`Lifeline demo: the release cycle on a throwaway platform (sample data ~${sizeMb} MB; DEMO_SIZE_MB changes it)\n`);
    cluster = await startThrowawayCluster({ fast: true });
    redis = await startThrowawayRedis({ password: 'demo-redis-password' });
    const setup = PsqlSession.open(new LocalRunner(), cluster.conn);
    await setup.exec('CREATE DATABASE shop');
    await setup.close();
    const shop = { ...cluster.conn, database: 'shop' };
    say(`started PostgreSQL on 127.0.0.1:${cluster.port} and Redis on 127.0.0.1:${redis.port}`);
    const t0 = Date.now();
    await loadSampleDataset(new LocalRunner(), shop, { sizeMb });
    say(`loaded the sample restaurant dataset into "shop" in ${((Date.now() - t0) / 1000).toFixed(1)}s`);

    if (!dockerAvailable()) throw new Error('dockerd, docker and busybox are needed for the deploy steps: run scripts/setup.sh as root');
    docker = await startDockerEnvironment();
    stack = await createStack(docker, 'lifeline-demo');
    say(`started a private Docker engine and a registry on ${docker.registry}; building v1 and v2 of api, web and worker...`);
    const images = { v1: buildReleaseImages(docker, 'v1'), v2: buildReleaseImages(docker, 'v2') };

    const config = join(work, 'lifeline.yml');
    writeFileSync(
      config,
      [
        'version: 1',
        'environments:',
        '  demo:',
        `    store: ${join(work, 'catalog')}`,
        '    rpo: 1h',
        '    rto: 15m',
        '    owner: the demo operator',
        '    postgres:',
        '      urlEnv: SHOP_DATABASE_URL',
        '      migrationHeadQuery: SELECT version_num FROM alembic_version',
        '    redis: { urlEnv: SHOP_REDIS_URL }',
        '    compose:',
        `      files: [${stack.composeFile}]`,
        `      projectName: ${stack.projectName}`,
        '      command: docker-compose',
        '      healthTimeout: 60s',
        '    manifest:',
        `      publicKey: ${join(work, 'keys', 'release-signing.pub')}`,
        '    drill: { maxAge: 1d }',
        '    preflight:',
        '      allowHostNetwork: [api, web, worker]',
        '    tenants:',
        '      rowCap: 100000',
        '      collections:',
        '        - { table: orders, column: tenant_id }',
        '        - { table: order_items, via: ["order_id -> orders.id"] }',
        '        - { table: payments, via: ["order_id -> orders.id"] }',
        '',
      ].join('\n'),
    );
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      ...docker.env,
      SHOP_DATABASE_URL: formatPgUrl(shop),
      SHOP_REDIS_URL: redis.url,
      DATABASE_URL: undefined,
      REDIS_URL: undefined,
      LIFELINE_STORE: undefined,
    };
    const g = ['--config', config, '--env', 'demo'];
    const run = async (title: string, args: string[], options: { globals?: boolean } = {}): Promise<Outcome> => {
      step++;
      say(`\n── ${step}. ${title}\n$ lifeline ${args.join(' ')}`);
      const outcome = await lifeline([...args, ...(options.globals === false ? [] : g)], env);
      if (outcome.stdout) say(outcome.stdout.trim().slice(0, 2000));
      const ok = outcome.code === 0;
      say(ok ? `   → ok (exit ${outcome.code})` : `   → FAILED (exit ${outcome.code})`);
      if (!ok) failed++;
      return outcome;
    };
    const release = async (version: 'v1' | 'v2') => {
      const backup = await run(`pre-migration backup for ${version} (PostgreSQL + Redis, verified)`, ['backup', '--label', 'pre-migration', '--release', version, '--json']);
      const id = backup.code === 0 ? (JSON.parse(backup.stdout) as { id: string }).id : undefined;
      const imageFlags = (['api', 'web', 'worker'] as const).flatMap((role) => ['--image', `${role}=${images[version][role]}`]);
      await run(`sign the ${version} release manifest (images by digest)`, [
        'manifest',
        'create',
        '--release',
        version,
        ...imageFlags,
        ...(id ? ['--backup', id] : []),
        '--migration-head',
        SAMPLE_MIGRATION_HEAD,
        '--signing-key',
        join(work, 'keys', 'release-signing.key'),
      ]);
      await run(`deploy ${version}: verify the manifest, pin the digests, wait for health`, ['deploy', '--release', version]);
    };

    await run('config check: the settings Lifeline resolved (secrets masked)', ['config', 'check']);
    await run('preflight: Docker, Compose, gates, tools and backup room', ['preflight']);
    await run('make a release signing key pair', ['manifest', 'keygen', '--out', join(work, 'keys')], { globals: false });
    await release('v1');
    await release('v2');
    await run('verify the newest backup (checksums, pg_restore --list, full decompression, redis-check-rdb)', ['verify', '--backup', 'latest']);
    await run('restore drill into an isolated throwaway cluster (RTO/RPO against targets), report signed with the release key', ['drill', '--signing-key', join(work, 'keys', 'release-signing.key')]);
    await run('release gate: fresh backups, a passing, recent, signed drill whose backup is intact', ['gate']);
    await run('tenant export with checksums and caps', ['tenant', 'export', '--tenant', 'tenant-002']);
    await run('rollback to the previous release (api, web and worker together)', ['rollback', '--to', 'previous']);
    await run('history', ['history']);
    const health = await stack.health();
    say(`\nhealth endpoints after the rollback: ${JSON.stringify(health)}`);
    if (Object.values(health).some((h) => !h.endsWith('v1'))) failed++;
    say(`\n${step - failed} of ${step} steps ok${failed ? `; ${failed} FAILED (see above)` : ''}.`);
    return failed ? 1 : 0;
  } finally {
    stack?.remove();
    await Promise.allSettled([docker?.stop(), cluster?.stop(), redis?.stop()]);
    rmSync(work, { recursive: true, force: true });
    say('stopped the Docker engine, registry, PostgreSQL and Redis; removed the temporary files');
  }
}

main().then(
  (code) => (process.exitCode = code),
  (error: Error) => {
    process.stderr.write(`demo failed: ${error.stack ?? error.message}\n`);
    process.exitCode = 1;
  },
);
