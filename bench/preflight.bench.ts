// The whole preflight on the sample stack against the bare tools it wraps, run one after another:
// `docker-compose config -q`, `shellcheck`, `nginx -t` and `docker version`. Target: under 5 s.
import { cpSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { formatPgUrl } from '../src/runner/postgres-env';
import { startDockerEnvironment } from '../test/helpers/docker';
import { bestOf, measure, type BenchContext, type BenchRow } from './lib';

const TARGET_SECONDS = 5;

export default async function preflightBench(ctx: BenchContext): Promise<BenchRow[]> {
  const stack = join(ctx.workDir, 'preflight-stack');
  cpSync(join(ctx.repo, 'test/fixtures/preflight/pass'), stack, { recursive: true });
  mkdirSync(join(stack, 'nginx/certs'));
  const cert = spawnSync('openssl', [
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:prime256v1',
    '-nodes',
    '-keyout',
    join(stack, 'nginx/certs/tls.key'),
    '-out',
    join(stack, 'nginx/certs/tls.crt'),
    '-days',
    '2',
    '-subj',
    '/CN=shop.example.com',
  ]);
  if (cert.status !== 0) throw new Error('openssl could not make the test certificate');
  const docker = await startDockerEnvironment();
  try {
    const env = { ...docker.env, SECRET_KEY: 'bench-secret-key-0123456789abcdef0123', POSTGRES_PASSWORD: 'bench-postgres-password-0123456789', DATABASE_URL: undefined };
    const cli = ['--import', join(ctx.repo, 'node_modules/tsx/dist/esm/index.mjs'), join(ctx.repo, 'src/cli/index.ts')];
    const lifeline = await bestOf(3, () => measure(process.execPath, [...cli, 'preflight', '--env', 'production', '--strict', '--database-url', formatPgUrl(ctx.db)], { cwd: stack, env }));
    // The CLI's own start-up (tsx compiling every command) is not preflight work: measured apart.
    const startup = await bestOf(3, () => measure(process.execPath, [...cli, '--help'], { cwd: stack, env }));
    const bareScript = [
      'docker-compose -f docker-compose.yml config -q',
      'shellcheck -S style scripts/*.sh',
      `nginx -t -q -p "$PWD/" -c "$PWD/nginx/nginx.conf" -g "pid $PWD/nginx.pid; error_log stderr;"`,
      "docker version --format '{{.Server.Version}}'",
    ].join(' && ');
    const bare = await bestOf(3, () => measure('sh', ['-c', bareScript], { cwd: stack, env }));
    const met = lifeline.seconds < TARGET_SECONDS;
    return [
      {
        name: 'preflight (sample stack, every check)',
        lifeline,
        bare,
        note: `absolute target < ${TARGET_SECONDS} s: ${met ? 'met' : 'MISSED'}; of which CLI start-up (lifeline --help) ${startup.seconds.toFixed(2)} s`,
      },
    ];
  } finally {
    await docker.stop();
  }
}
