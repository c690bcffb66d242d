// Compose v2 (`docker compose`) cannot be installed on these machines: every Compose command
// Lifeline issues is checked here by its argv, through a stand-in `docker` that records what it is
// asked. v1 runs for real in the integration tests.
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { COMPOSE_V2, ComposeDriver } from '../../src/deploy/compose';
import { ComposeRunner, ContainerRunner, LocalRunner, runText } from '../../src/runner/runner';
import { tempDir } from '../helpers/db';

const dir = tempDir('lifeline-compose-v2-');
afterAll(() => dir.cleanup());
const log = join(dir.path, 'calls.log');
const docker = join(dir.path, 'docker');
// One line per call, arguments separated by a unit separator; `ps` answers no containers.
writeFileSync(docker, `#!/bin/sh\nprintf '%s\\037' "$@" >> '${log}'\nprintf '\\n' >> '${log}'\nexit 0\n`);
chmodSync(docker, 0o755);
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
  return text.split('\n').filter(Boolean).map((line) => line.split('\x1f').slice(0, -1));
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
});
