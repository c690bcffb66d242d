import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { lineOf, makeCertificates, only, preflight, problems, stageStack, STACK_ENV, type StagedStack } from '../fixtures/preflight/harness';

// Each case here passed before as a clean preflight although it is a problem. Real docker-compose
// (config needs no engine) and nginx -t; DOCKER_HOST points nowhere, so docker.engine always fails.
describe('preflight finds what it claims to check', () => {
  let certificates: ReturnType<typeof makeCertificates>;
  const staged: StagedStack[] = [];
  const stack = () => {
    const s = stageStack(certificates.dir);
    staged.push(s);
    return s;
  };
  const run = (s: StagedStack, args: string[] = [], env: Record<string, string | undefined> = {}) =>
    preflight(['--env', 'production', '--database-url', inject('pgUrl'), ...args], { cwd: s.dir, env: { ...STACK_ENV, ...env } });
  const over = (file: string) => ['--compose-file', 'docker-compose.yml', '--compose-file', file];
  /** The checks that do not pass, besides the unreachable engine. */
  const failingChecks = (findings: Awaited<ReturnType<typeof run>>['findings']) =>
    new Set(
      problems(findings)
        .map((f) => `${f.check}:${f.status}`)
        .filter((c) => !c.startsWith('docker.engine')),
    );

  beforeAll(() => {
    certificates = makeCertificates();
  });
  afterAll(() => {
    for (const s of staged) s.cleanup();
    certificates?.cleanup();
  });

  it('the passing stack still passes every new check, and lists every file it read', async () => {
    const s = stack();
    const { findings, files } = await run(s);
    expect(failingChecks(findings)).toEqual(new Set());
    for (const check of ['compose.command-secret', 'compose.debug', 'compose.env-file', 'edge.tls-protocols']) expect(only(findings, check)[0]?.status, check).toBe('pass');
    expect(files.map((f) => [f.status, f.path, f.role])).toEqual(
      expect.arrayContaining([
        ['read', 'docker-compose.yml', 'Compose file'],
        ['read', '.env.production', 'environment file'],
        ['read', '.env.production', 'env_file of api, web, worker'],
        ['read', '.env.example', 'required keys (.env.example)'],
        ['read', 'scripts/deploy.sh', 'shell script'],
        ['read', 'scripts/healthcheck.sh', 'shell script'],
        ['read', 'nginx/nginx.conf', 'nginx configuration'],
      ]),
    );
    expect(files.every((f) => f.status === 'read')).toBe(true);
  });

  const hostNetwork = [
    { fixture: 'compose-db-host-network.yml', service: 'db', what: 'database' },
    { fixture: 'compose-redis-host-network.yml', service: 'redis', what: 'Redis' },
  ];
  for (const { fixture, service, what } of hostNetwork) {
    it(`fails compose.host-network for the ${what} service on the host network (${fixture})`, async () => {
      const s = stack();
      const file = `failures/${fixture}`;
      const { findings, code } = await run(s, over(file));
      expect(code).toBe(1);
      expect(only(findings, 'compose.host-network')).toEqual([
        expect.objectContaining({
          status: 'fail',
          file,
          line: lineOf(join(s.dir, file), 'network_mode: host'),
          message: expect.stringMatching(new RegExp(`^${what} service ${service} uses network_mode: host`)),
        }),
      ]);
      expect(failingChecks(findings)).toEqual(new Set(['compose.host-network:fail']));
    });
  }

  it('lets preflight.allowHostNetwork name a data service on purpose', async () => {
    const s = stack();
    writeFileSync(
      join(s.dir, 'lifeline.yml'),
      'version: 1\nenvironments:\n  production:\n    compose: { files: [docker-compose.yml, failures/compose-db-host-network.yml] }\n    preflight: { allowHostNetwork: [db] }\n',
    );
    const { findings } = await run(s);
    expect(only(findings, 'compose.host-network')).toEqual([expect.objectContaining({ status: 'pass' })]);
  });

  const commandCases = [
    { fixture: 'compose-command-password.yml', marker: '--requirepass', how: '--requirepass', secret: 'redis-literal-pw-0042', service: 'redis', label: 'command' },
    { fixture: 'compose-command-url.yml', marker: 'postgresql://', how: 'a URL with a password', secret: 'url-literal-pw-0042', service: 'worker', label: 'command' },
  ];
  for (const { fixture, marker, how, secret, service, label } of commandCases) {
    it(`fails compose.command-secret on ${fixture}, at the line, never printing the password`, async () => {
      const s = stack();
      const file = `failures/${fixture}`;
      const json = await run(s, over(file));
      expect(only(json.findings, 'compose.command-secret')).toEqual([
        expect.objectContaining({ status: 'fail', file, line: lineOf(join(s.dir, file), marker), message: expect.stringContaining(`service ${service} writes a password into its ${label} (${how})`) }),
      ]);
      expect(failingChecks(json.findings)).toEqual(new Set(['compose.command-secret:fail']));
      const text = await preflight(['--env', 'production', ...over(file)], { cwd: s.dir, env: STACK_ENV, json: false });
      for (const output of [json.stdout, json.stderr, text.stdout, text.stderr]) expect(output).not.toContain(secret);
    });
  }

  it('finds passwords in healthcheck tests too: PGPASSWORD=... and redis-cli -a split over list items', async () => {
    const s = stack();
    const file = 'failures/compose-healthcheck-password.yml';
    const { findings, stdout } = await run(s, over(file));
    expect(only(findings, 'compose.command-secret').map((f) => [f.status, f.line, f.message.replace(/:.*/, '')])).toEqual([
      ['fail', lineOf(join(s.dir, file), 'PGPASSWORD='), 'service db writes a password into its healthcheck test (PGPASSWORD=)'],
      ['fail', lineOf(join(s.dir, file), 'redis-cli'), 'service redis writes a password into its healthcheck test (-a)'],
    ]);
    expect(stdout).not.toContain('pg-literal-pw-0042');
    expect(stdout).not.toContain('cli-literal-pw-0042');
  });

  it('warns (does not fail) when the password comes from a variable, and ignores lookalikes', async () => {
    const s = stack();
    writeFileSync(
      join(s.dir, 'commands.yml'),
      [
        'services:',
        '  redis:',
        '    command: ["sh", "-c", "exec redis-server --requirepass \\"$${REDIS_PASSWORD}\\""]',
        '    healthcheck: { test: ["CMD", "redis-cli", "--no-auth-warning", "-a", "${REDIS_PASSWORD}", "ping"] }',
        '  db:',
        '    command: ["postgres", "-c", "password_encryption=scram-sha-256", "-c", "ssl_passphrase_command_supports_reload=on"]',
        '  worker:',
        '    command: ["python", "-m", "shop.worker", "--password-file", "/run/secrets/db", "--auth", "--token-ttl", "60"]',
        '',
      ].join('\n'),
    );
    const { findings, code } = await run(s, over('commands.yml'), { REDIS_PASSWORD: 'exported-redis-pw-0042' });
    expect(only(findings, 'compose.command-secret').map((f) => [f.status, f.line, f.message.replace(/:.*/, '')])).toEqual([
      ['warn', 3, 'service redis passes a password from a variable on its command (--requirepass)'],
      ['warn', 4, 'service redis passes a password from a variable on its healthcheck test (-a)'],
    ]);
    expect(failingChecks(findings)).toEqual(new Set(['compose.command-secret:warn']));
    expect(code).toBe(1); // the unreachable engine only
  });

  const truthy = ['True', 'true', 'TRUE', '1', 'yes', 'Yes', 'on', 'ON'];
  it('fails compose.debug for DEBUG=True in an environment list, at its line', async () => {
    const s = stack();
    const file = 'failures/compose-debug-list.yml';
    const { findings } = await run(s, over(file));
    expect(only(findings, 'compose.debug')).toEqual([
      expect.objectContaining({ status: 'fail', file, line: lineOf(join(s.dir, file), 'DEBUG=True'), message: expect.stringContaining('service web sets DEBUG on in production') }),
    ]);
    expect(failingChecks(findings)).toEqual(new Set(['compose.debug:fail']));
  });

  it(`fails compose.debug for every truthy spelling (${truthy.join(', ')}), list or map, and not for false ones`, async () => {
    const s = stack();
    const lines = [
      'services:',
      '  api:',
      '    environment:',
      ...truthy.map((v, i) => `      - APP${i}_DEBUG=${v}`),
      '      - OFF_DEBUG=false',
      '      - ZERO_DEBUG=0',
      '      - DEBUG_TOOLBAR=yes',
      '  web:',
      '    environment:',
      '      FLASK_DEBUG: "true"',
      '      DJANGO_DEBUG: "on"',
      '      CELERY_DEBUG: 1',
      '      NEXT_DEBUG: "no"',
      '      FROM_CI_DEBUG: ${CI_DEBUG_FLAG}',
      '',
    ];
    writeFileSync(join(s.dir, 'debug.yml'), lines.join('\n'));
    const { findings } = await run(s, over('debug.yml'), { CI_DEBUG_FLAG: 'Yes' });
    const found = only(findings, 'compose.debug');
    expect(found.every((f) => f.status === 'fail' && f.file === 'debug.yml')).toBe(true);
    expect(found.map((f) => f.message.split(' ')[3]).sort()).toEqual([...truthy.map((_, i) => `APP${i}_DEBUG`), 'CELERY_DEBUG', 'DJANGO_DEBUG', 'FLASK_DEBUG', 'FROM_CI_DEBUG'].sort());
    expect(found.find((f) => f.message.includes('FROM_CI_DEBUG'))!.line).toBe(lines.indexOf('      FROM_CI_DEBUG: ${CI_DEBUG_FLAG}') + 1);
  });

  const envFileKeys = ['APP_DEBUG=1', 'FLASK_DEBUG=true', 'DJANGO_DEBUG=yes'];
  for (const assignment of envFileKeys) {
    it(`reads the files named by env_file: ${assignment} in one fails env.debug at its line there`, async () => {
      const s = stack();
      const file = 'failures/compose-env-file.yml';
      // Compose resolves env_file paths from the first Compose file's directory, not the override's.
      writeFileSync(join(s.dir, 'worker.env'), `# Worker settings\nWORKER_CONCURRENCY=4\n${assignment}\n`);
      const { findings, files } = await run(s, over(file));
      const key = assignment.split('=')[0]!;
      expect(only(findings, 'env.debug')).toEqual([expect.objectContaining({ status: 'fail', file: 'worker.env', line: 3, message: expect.stringContaining(`${key} is on in production`) })]);
      expect(failingChecks(findings)).toEqual(new Set(['env.debug:fail']));
      expect(files).toContainEqual({ path: 'worker.env', role: 'env_file of worker', status: 'read', by: 'compose.env-file' });
    });
  }

  it('fails compose.env-file when a named env_file does not exist, and lists it as missing', async () => {
    const s = stack();
    const file = 'failures/compose-env-file.yml';
    const { findings, files, code } = await run(s, over(file));
    expect(code).toBe(1);
    expect(only(findings, 'compose.env-file').filter((f) => f.status === 'fail')).toEqual([
      expect.objectContaining({
        file,
        line: lineOf(join(s.dir, file), '- worker.env'),
        message: expect.stringContaining('env_file worker.env of worker does not exist'),
        fix: expect.stringContaining('paths are relative to the working directory'),
      }),
    ]);
    expect(files).toContainEqual(expect.objectContaining({ path: 'worker.env', status: 'missing' }));
    // Compose v1 refuses the file too; its own message says why.
    expect(only(findings, 'compose.config')[0]!.status).toBe('fail');
  });

  it('applies every env value check to env_files, not only debug flags', async () => {
    const s = stack();
    writeFileSync(join(s.dir, 'worker.env'), 'WORKER_SECRET_KEY=tiny-pw-1\nWORKER_CORS_ORIGINS=*\nQUEUE_TOKEN=changeme\n');
    const { findings, stdout } = await run(s, over('failures/compose-env-file.yml'));
    expect(failingChecks(findings)).toEqual(new Set(['env.secret-length:fail', 'env.cors:fail', 'env.placeholder:fail']));
    expect(
      problems(findings)
        .filter((f) => f.check.startsWith('env.'))
        .every((f) => f.file === 'worker.env'),
    ).toBe(true);
    expect(stdout).not.toContain('tiny-pw-1');
  });

  const protocolCases = [
    {
      name: 'TLSv1 and TLSv1.1 in the server block',
      edit: (t: string) => t.replace('ssl_protocols TLSv1.2 TLSv1.3;', 'ssl_protocols TLSv1 TLSv1.1 TLSv1.2;'),
      marker: 'ssl_protocols TLSv1 TLSv1.1',
      accepts: 'TLSv1 TLSv1.1',
    },
    {
      name: 'SSLv3 inherited from the http block',
      edit: (t: string) => t.replace('    ssl_protocols TLSv1.2 TLSv1.3;\n', '').replace('http {\n', 'http {\n  ssl_protocols SSLv3 TLSv1.2;\n'),
      marker: 'ssl_protocols SSLv3',
      accepts: 'SSLv3',
    },
    { name: 'tlsv1.1 in lower case', edit: (t: string) => t.replace('ssl_protocols TLSv1.2 TLSv1.3;', 'ssl_protocols tlsv1.1 TLSv1.2;'), marker: 'ssl_protocols tlsv1.1', accepts: 'tlsv1.1' },
  ];
  for (const { name, edit, marker, accepts } of protocolCases) {
    it(`fails edge.tls-protocols on ${name}, at the directive`, async () => {
      const s = stack();
      const conf = join(s.dir, 'nginx/nginx.conf');
      writeFileSync(conf, edit(readFileSync(conf, 'utf8')));
      const { findings } = await run(s);
      expect(only(findings, 'edge.tls-protocols')).toEqual([
        expect.objectContaining({ status: 'fail', file: 'nginx/nginx.conf', line: lineOf(conf, marker), message: expect.stringContaining(`ssl_protocols accepts ${accepts}`) }),
      ]);
    });
  }

  it('the static nginx-old-tls fixture fails, a server-level TLSv1.2 overrides an old http default, and an unset ssl_protocols warns', async () => {
    const s = stack();
    s.use('nginx-old-tls.conf', 'nginx/nginx.conf');
    expect(only((await run(s)).findings, 'edge.tls-protocols')[0]!.status).toBe('fail');
    const conf = join(s.dir, 'nginx/nginx.conf');
    const passing = readFileSync(conf, 'utf8').replace('ssl_protocols TLSv1 TLSv1.1 TLSv1.2;', 'ssl_protocols TLSv1.2 TLSv1.3;');
    writeFileSync(conf, passing.replace('http {\n', 'http {\n  ssl_protocols TLSv1 TLSv1.2;\n'));
    expect(only((await run(s)).findings, 'edge.tls-protocols')).toEqual([expect.objectContaining({ status: 'pass', message: 'TLS protocols: TLSv1.2 TLSv1.3' })]);
    writeFileSync(conf, passing.replace('    ssl_protocols TLSv1.2 TLSv1.3;\n', ''));
    expect(only((await run(s)).findings, 'edge.tls-protocols')).toEqual([
      expect.objectContaining({ status: 'warn', message: expect.stringContaining('nginx before 1.23.4 then accepts TLSv1 and TLSv1.1') }),
    ]);
  });

  it('the text report and the summary list the files, and name what was not examined', async () => {
    const s = stack();
    writeFileSync(join(s.dir, 'nginx/nginx.conf'), readFileSync(join(s.dir, 'nginx/nginx.conf'), 'utf8').replace('http {\n', 'http {\n  include conf.d/*.conf;\n'));
    const text = await preflight(['--env', 'production', ...over('failures/compose-env-file.yml')], { cwd: s.dir, env: STACK_ENV, json: false });
    expect(text.stdout).toMatch(/files read: \d+, named but not examined: 2/);
    expect(text.stdout).toMatch(/missing\s+worker\.env  \(env_file of worker; compose\.env-file\)/);
    expect(text.stdout).toMatch(/no match\s+nginx\/conf\.d\/\*\.conf\s+\(nginx include/);
    expect(text.stdout).toMatch(/read\s+failures\/compose-env-file\.yml\s+\(Compose file; compose\.\*\)/);
  });

  it('fails compose.host-network for PostGIS and TimescaleDB images on the host network, and finds them as PostgreSQL', async () => {
    const s = stack();
    writeFileSync(
      join(s.dir, 'pg-images.yml'),
      'services:\n  db:\n    image: postgis/postgis:15-3.4\n    network_mode: host\n    restart: always\n  db2:\n    image: timescale/timescaledb:latest-pg15\n    network_mode: host\n    restart: always\n',
    );
    const { findings, code } = await run(s, ['--compose-file', 'pg-images.yml']);
    expect(code).toBe(1);
    const lines = readFileSync(join(s.dir, 'pg-images.yml'), 'utf8').split('\n');
    const hostLines = lines.flatMap((l, i) => (l.includes('network_mode: host') ? [i + 1] : []));
    expect(only(findings, 'compose.host-network')).toEqual([
      expect.objectContaining({ status: 'fail', file: 'pg-images.yml', line: hostLines[0], message: expect.stringMatching(/^database service db uses network_mode: host/) }),
      expect.objectContaining({ status: 'fail', file: 'pg-images.yml', line: hostLines[1], message: expect.stringMatching(/^database service db2 uses network_mode: host/) }),
    ]);
    // Found as PostgreSQL: no volume is a failure for each, not "no PostgreSQL service found".
    expect(only(findings, 'compose.postgres-volume').map((f) => [f.status, f.message.split(' ')[1]])).toEqual([
      ['fail', 'db'],
      ['fail', 'db2'],
    ]);
  });

  it('resolves extends from another file: debug, command secret and env_file of the base fail, and both files and the env_file are listed', async () => {
    const s = stack();
    mkdirSync(join(s.dir, 'x'));
    writeFileSync(
      join(s.dir, 'x/common.yml'),
      'services:\n  base:\n    image: shop/api:1\n    env_file: common.env\n    environment: [DEBUG=True]\n    command: ["gunicorn", "--db", "postgres://shop:hunter2hunter2@127.0.0.1/shop"]\n',
    );
    writeFileSync(join(s.dir, 'x/common.env'), 'APP_DEBUG=1\n');
    writeFileSync(join(s.dir, 'x/main.yml'), 'services:\n  api:\n    extends: {file: common.yml, service: base}\n');
    const { findings, files, code } = await run(s, ['--compose-file', 'x/main.yml']);
    expect(code).toBe(1);
    expect(only(findings, 'compose.extends')).toEqual([]);
    expect(only(findings, 'compose.debug')).toEqual([
      expect.objectContaining({ status: 'fail', file: 'x/common.yml', line: 5, message: expect.stringContaining('service api sets DEBUG on in production') }),
    ]);
    expect(only(findings, 'compose.command-secret')).toEqual([
      expect.objectContaining({ status: 'fail', file: 'x/common.yml', line: 6, message: expect.stringContaining('service api writes a password into its command') }),
    ]);
    expect(only(findings, 'compose.env-file')).toEqual([expect.objectContaining({ status: 'pass', file: 'x/common.yml', line: 4, message: expect.stringContaining('env_file x/common.env of api') })]);
    expect(only(findings, 'env.debug')).toEqual([expect.objectContaining({ status: 'fail', file: 'x/common.env', line: 1, message: expect.stringContaining('APP_DEBUG is on in production') })]);
    expect(files.map((f) => [f.status, f.path])).toEqual(
      expect.arrayContaining([
        ['read', 'x/main.yml'],
        ['read', 'x/common.yml'],
        ['read', 'x/common.env'],
      ]),
    );
  });

  it('fails compose.extends when the extended file is missing, at the extends line, instead of passing what it never read', async () => {
    const s = stack();
    mkdirSync(join(s.dir, 'x'));
    writeFileSync(join(s.dir, 'x/main.yml'), 'services:\n  api:\n    extends: {file: common.yml, service: base}\n');
    const { findings, files, code } = await run(s, ['--compose-file', 'x/main.yml']);
    expect(code).toBe(1);
    expect(only(findings, 'compose.extends')).toEqual([
      expect.objectContaining({
        status: 'fail',
        file: 'x/main.yml',
        line: 3,
        message: expect.stringMatching(/^service api extends base from common\.yml, which preflight does not resolve \(.*\): its settings were not examined$/),
      }),
    ]);
    expect(files).toContainEqual(expect.objectContaining({ path: 'x/common.yml', status: 'missing' }));
  });
});
