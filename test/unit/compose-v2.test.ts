// Compose v2 (`docker compose`) cannot be installed on these machines: every Compose command
// Lifeline issues is checked here by its argv, through a stand-in `docker` that records what it is
// asked. v1 runs for real in the integration tests.
import { chmodSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { COMPOSE_V1, COMPOSE_V2, ComposeDriver, ComposeRunner } from '../../src/runner/compose';
import { migrationHeadProbe } from '../../src/deploy/database';
import { composeRunner } from '../../src/runner/factory';
import { serviceContainer } from '../../src/backup/redis-live-restore';
import { ContainerRunner, LocalRunner, runText } from '../../src/runner/runner';
import { tempDir } from '../helpers/db';

const dir = tempDir('lifeline-compose-v2-');
afterAll(() => dir.cleanup());
const log = join(dir.path, 'calls.log');
const docker = join(dir.path, 'docker');
const DB_ID = 'd'.repeat(64);
const REDIS_ID = 'e'.repeat(64);
// One line per call, arguments separated by a unit separator. It answers like Compose v2 for a
// stack whose db runs and whose redis is stopped: `compose ps -q db` lists db, `compose ps -q redis`
// lists nothing (v2 lists running containers only), `compose ps -a -q redis` lists the stopped one,
// and `inspect --type container` describes it as exited. Everything else answers nothing.
writeFileSync(
  docker,
  [
    '#!/bin/sh',
    `printf '%s\\037' "$@" >> '${log}'`,
    `printf '\\n' >> '${log}'`,
    'all=no; last=',
    'for a in "$@"; do [ "$a" = "-a" ] && all=yes; last="$a"; done',
    'case " $* " in',
    `  *" ps -q --no-trunc "*"label=com.docker.compose.service=db "*) echo ${DB_ID} ;;`,
    `  *" compose "*" ps "*) [ "$last" = db ] && echo ${DB_ID}; [ "$last" = redis ] && [ $all = yes ] && echo ${REDIS_ID} ;;`,
    `  *" inspect --type container "*) echo '[{"Id":"${REDIS_ID}","Image":"sha256:${'f'.repeat(64)}","Config":{"Image":"redis:7","Labels":{"com.docker.compose.service":"redis"}},"State":{"Running":false,"ExitCode":137,"Status":"exited","StartedAt":"2026-12-02T10:00:00Z"}}]' ;;`,
    'esac',
    'exit 0',
    '',
  ].join('\n'),
);
chmodSync(docker, 0o755);
// The same recorder as docker-compose (v1): it answers nothing there, so only the argv counts.
symlinkSync(docker, join(dir.path, 'docker-compose'));
const baseEnv = { PATH: `${dir.path}:/usr/bin:/bin` };

function calls(): string[][] {
  const text = (() => {
    try {
      return readFileSync(log, 'utf8');
    } catch {
      return '';
    }
  })();
  writeFileSync(log, '');
  return text
    .split('\n')
    .filter(Boolean)
    .map((line) => line.split('\x1f').slice(0, -1));
}

describe('every Compose command, as Compose v2 argv', () => {
  const files = ['/srv/shop/docker-compose.yml', '/srv/shop/prod.yml'];
  const prefix = ['compose', '-f', files[0]!, '-f', files[1]!, '-p', 'shop'];
  const driver = new ComposeDriver(new LocalRunner({ baseEnv }), { command: COMPOSE_V2, files, projectName: 'shop' });

  it('pull, up (recreate only the three services, never their dependencies) and logs, the override last', async () => {
    calls();
    await driver.pull(['api', 'web', 'worker'], '/store/o.yml');
    await driver.up(['api', 'web', 'worker'], '/store/o.yml');
    await driver.logsTail('api', 40, '/store/o.yml');
    const withOverride = ['compose', '-f', files[0]!, '-f', files[1]!, '-f', '/store/o.yml', '-p', 'shop'];
    expect(calls()).toEqual([
      [...withOverride, 'pull', 'api', 'web', 'worker'],
      [...withOverride, 'up', '-d', '--no-deps', '--force-recreate', 'api', 'web', 'worker'],
      [...withOverride, 'logs', '--no-color', '--tail', '40', 'api'],
    ]);
  });

  it('lists the project by its label when it has a name, through Compose when it has none', async () => {
    calls();
    expect(await driver.projectContainers()).toEqual([]);
    const unnamed = new ComposeDriver(new LocalRunner({ baseEnv }), { command: COMPOSE_V2, files });
    expect(await unnamed.projectContainers()).toEqual([]);
    expect(calls()).toEqual([
      ['ps', '-aq', '--no-trunc', '--filter', 'label=com.docker.compose.project=shop', '--filter', 'label=com.docker.compose.oneoff=False'],
      ['compose', '-f', files[0]!, '-f', files[1]!, 'ps', '-q'],
    ]);
  });

  it('runs a tool in a service with exec -T, secrets by name only', async () => {
    calls();
    const runner = new ComposeRunner({ composeCommand: [...COMPOSE_V2], files, projectName: 'shop', service: 'db', baseEnv });
    const result = await runText(runner, { tool: 'pg_dump', args: ['--version'], env: { PGPASSWORD: 'hunter2-secret' } });
    expect(result.exitCode).toBe(0);
    const [call] = calls();
    expect(call).toEqual([...prefix, 'exec', '-T', '-e', 'PGPASSWORD', 'db', 'pg_dump', '--version']);
    expect(call!.join(' ')).not.toContain('hunter2-secret');
  });

  it('runs a tool in a container by id with docker exec (the same with either Compose)', async () => {
    calls();
    const runner = new ContainerRunner({ container: 'a'.repeat(64), where: 'compose service db', execOptions: ['--user', 'postgres'], baseEnv });
    await runText(runner, { tool: 'psql', args: ['-c', 'SELECT 1'], env: { PGPASSWORD: 'hunter2-secret' } });
    expect(calls()).toEqual([['exec', '-e', 'PGPASSWORD', '--user', 'postgres', 'a'.repeat(64), 'psql', '-c', 'SELECT 1']]);
  });

  it("redis-restore finds a stopped Redis service's container with ps -a (v2 lists running containers only)", async () => {
    calls();
    const runner = new LocalRunner({ baseEnv });
    const project = { command: COMPOSE_V2, files, projectName: 'shop' };
    const found = await serviceContainer(runner, new ComposeDriver(runner, project), project, 'redis');
    expect(found).toEqual({ id: REDIS_ID, running: false, status: 'exited', imageId: `sha256:${'f'.repeat(64)}` });
    expect(calls()).toEqual([
      [...prefix, 'ps', '-a', '-q', 'redis'],
      ['inspect', '--type', 'container', REDIS_ID],
    ]);
    // Compose v1 lists stopped containers without -a (its -a adds one-off `run` containers): no -a there.
    const v1 = { command: COMPOSE_V1, files, projectName: 'shop' };
    await expect(serviceContainer(runner, new ComposeDriver(runner, v1), v1, 'redis')).rejects.toThrow(/service redis has no container; nothing was changed/);
    expect(calls()).toEqual([['-f', files[0]!, '-f', files[1]!, '-p', 'shop', 'ps', '-q', 'redis']]);
  });

  it("the deploy's migration-head probe runs psql by docker exec on the db container's id, found by Compose's labels", async () => {
    calls();
    const savedPath = process.env.PATH;
    // The service lookup runs the docker CLI from PATH, as on an operator's host.
    process.env.PATH = baseEnv.PATH;
    try {
      const probe = migrationHeadProbe(
        () => composeRunner({ command: 'docker compose', files, projectName: 'shop', services: {} as never, healthTimeoutSeconds: 60, settleSeconds: 0, requireOwnedHealth: false }, 'db'),
        {
          url: 'postgres://app:hunter2-secret@127.0.0.1:5432/shop',
          migrationHeadQuery: 'SELECT version_num FROM alembic_version',
        },
      );
      // The stand-in psql prints nothing: the probe fails, after the calls it made are recorded.
      await probe.migrationHead().catch(() => undefined);
    } finally {
      process.env.PATH = savedPath;
    }
    const made = calls();
    // Found by Compose's labels on the engine (no Compose start-up), then used by id.
    expect(made[0]).toEqual([
      'ps',
      '-q',
      '--no-trunc',
      '--filter',
      'label=com.docker.compose.project=shop',
      '--filter',
      'label=com.docker.compose.service=db',
      '--filter',
      'label=com.docker.compose.oneoff=False',
    ]);
    expect(made).toHaveLength(2);
    expect(made[1]!.slice(0, 2)).toEqual(['exec', '-i']);
    expect(made[1]).toContain(DB_ID);
    expect(made[1]).toContain('psql');
    expect(made[1]).toContain('PGPASSWORD');
    expect(made.flat().join(' ')).not.toContain('hunter2-secret');
    // Never a Compose exec (2-10 s per call with v1).
    expect(made.some((call) => call.includes('compose') && call.includes('exec'))).toBe(false);

    // A service the labels do not find goes to Compose, whose answer makes the error message.
    process.env.PATH = baseEnv.PATH;
    try {
      await expect(
        composeRunner({ command: 'docker compose', files, projectName: 'shop', services: {} as never, healthTimeoutSeconds: 60, settleSeconds: 0, requireOwnedHealth: false }, 'cache'),
      ).rejects.toThrow(/Compose service cache has no container in project shop/);
    } finally {
      process.env.PATH = savedPath;
    }
    const fallback = calls();
    expect(fallback).toHaveLength(2);
    expect(fallback[0]).toContain('label=com.docker.compose.service=cache');
    expect(fallback[1]).toEqual([...prefix, 'ps', '-q', 'cache']);
  });
});
