import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { lineOf, makeCertificates, only, preflight, problems, stageStack, STACK_ENV, type StagedStack } from '../fixtures/preflight/harness';

// Real docker-compose (config needs no engine), shellcheck, bash, nginx -t and pg_dump. The
// engine itself is checked in preflight-docker.test.ts; here DOCKER_HOST points nowhere.
describe('lifeline preflight on the fixture stacks', () => {
  let certificates: ReturnType<typeof makeCertificates>;
  const staged: StagedStack[] = [];
  const stack = () => {
    const s = stageStack(certificates.dir);
    staged.push(s);
    return s;
  };
  const run = (s: StagedStack, args: string[] = [], env: Record<string, string | undefined> = {}) =>
    preflight(['--env', 'production', '--database-url', inject('pgUrl'), ...args], { cwd: s.dir, env: { ...STACK_ENV, ...env } });

  beforeAll(() => {
    certificates = makeCertificates();
  });
  afterAll(() => {
    for (const s of staged) s.cleanup();
    certificates?.cleanup();
  });

  it('passes every check on the passing stack, apart from the unreachable engine', async () => {
    const s = stack();
    const { findings, code } = await run(s);
    expect(problems(findings)).toEqual([expect.objectContaining({ check: 'docker.engine', status: 'fail' })]);
    expect(code).toBe(1);
    const checks = new Set(findings.map((f) => f.check));
    for (const check of [
      'compose.cli',
      'compose.config',
      'compose.privileged',
      'compose.host-network',
      'compose.docker-socket',
      'compose.data-ports',
      'compose.postgres-volume',
      'compose.image-pinned',
      'compose.healthcheck',
      'compose.restart',
      'compose.inline-secret',
      'scripts.syntax',
      'scripts.shellcheck',
      'env.file',
      'env.required',
      'env.values',
      'edge.nginx-syntax',
      'edge.tls',
      'edge.hsts',
      'edge.https-redirect',
      'tools.pg_dump',
      'tools.pgbackrest',
      'backups.catalog',
      'backups.free-space',
    ]) {
      expect(checks, check).toContain(check);
    }
    expect(only(findings, 'env.required')[0]!.message).toContain('.env.example');
    for (const finding of findings) expect(Object.keys(finding)).toEqual(['check', 'status', 'file', 'line', 'message', 'fix']);
    expect(only(findings, 'compose.healthcheck').map((f) => f.message)).toEqual(['service api has a healthcheck', 'service web has a healthcheck', 'service worker has a healthcheck']);
    expect(only(findings, 'edge.tls')[0]).toMatchObject({ file: 'nginx/nginx.conf', line: lineOf(join(s.dir, 'nginx/nginx.conf'), 'listen 443 ssl') });
  });

  // Most fixtures are overrides merged over the passing stack; `alone` ones replace it.
  const composeCases: { fixture: string; check: string; marker: string; alone?: boolean }[] = [
    { fixture: 'compose-privileged.yml', check: 'compose.privileged', marker: 'privileged: true' },
    { fixture: 'compose-host-network.yml', check: 'compose.host-network', marker: 'network_mode: host' },
    { fixture: 'compose-docker-socket.yml', check: 'compose.docker-socket', marker: 'docker.sock' },
    { fixture: 'compose-db-port.yml', check: 'compose.data-ports', marker: '5433:5432' },
    { fixture: 'compose-anonymous-volume.yml', check: 'compose.postgres-volume', marker: '- /var/lib/postgresql/data' },
    { fixture: 'compose-latest.yml', check: 'compose.image-pinned', marker: 'web:latest' },
    { fixture: 'compose-bare-tag.yml', check: 'compose.image-pinned', marker: 'api:1.4.2' },
    { fixture: 'compose-no-healthcheck.yml', check: 'compose.healthcheck', marker: '  worker:', alone: true },
    { fixture: 'compose-no-restart.yml', check: 'compose.restart', marker: 'restart: "no"' },
    { fixture: 'compose-inline-secret.yml', check: 'compose.inline-secret', marker: 'STRIPE_API_TOKEN' },
  ];
  for (const { fixture, check, marker, alone } of composeCases) {
    it(`fails ${check} on ${fixture}, at the file and line`, async () => {
      const s = stack();
      const file = `failures/${fixture}`;
      const { findings, code } = await run(s, [...(alone ? [] : ['--compose-file', 'docker-compose.yml']), '--compose-file', file]);
      expect(code).toBe(1);
      const failing = only(findings, check).filter((f) => f.status === 'fail');
      expect(failing).toEqual([expect.objectContaining({ file, line: lineOf(join(s.dir, file), marker) })]);
      // Only this gate (and the unreachable engine) fail: each fixture breaks one thing.
      expect(new Set(problems(findings).map((f) => f.check))).toEqual(new Set(['docker.engine', check]));
    });
  }

  it('fails compose.postgres-volume when PostgreSQL keeps its data in the container', async () => {
    const s = stack();
    const file = 'failures/compose-db-no-volume.yml';
    const { findings } = await run(s, ['--compose-file', file]);
    expect(only(findings, 'compose.postgres-volume')).toEqual([expect.objectContaining({ status: 'fail', file, line: lineOf(join(s.dir, file), '  db:') })]);
  });

  it('fails compose.config on invalid YAML and points at the line Compose reports', async () => {
    const s = stack();
    const file = 'failures/compose-invalid.yml';
    const { findings } = await run(s, ['--compose-file', file]);
    const [finding] = only(findings, 'compose.config');
    expect(finding).toMatchObject({ status: 'fail', file });
    expect(finding!.line).toBe(lineOf(join(s.dir, file), '- "127.0.0.1:8000:8000"'));
  });

  it('warns about Compose variables that are not set', async () => {
    const s = stack();
    const { findings } = await run(s, [], { SECRET_KEY: undefined });
    expect(only(findings, 'compose.variables')).toEqual([expect.objectContaining({ status: 'warn', message: expect.stringContaining('SECRET_KEY is not set') })]);
  });

  it('downgrades the production gates to warnings outside production', async () => {
    const s = stack();
    const file = 'failures/compose-privileged.yml';
    writeFileSync(join(s.dir, 'lifeline.yml'), 'version: 1\nenvironments:\n  staging:\n    compose: { files: [docker-compose.yml, failures/compose-privileged.yml] }\n');
    const { findings } = await preflight(['--env', 'staging'], { cwd: s.dir, env: STACK_ENV });
    expect(only(findings, 'compose.privileged')).toEqual([expect.objectContaining({ status: 'warn', file })]);
  });

  const envCases: { fixture: string; check: string; marker: string }[] = [
    { fixture: 'env-placeholder.env', check: 'env.placeholder', marker: 'SECRET_KEY=' },
    { fixture: 'env-empty.env', check: 'env.placeholder', marker: 'REDIS_URL=' },
    { fixture: 'env-short-secret.env', check: 'env.secret-length', marker: 'SECRET_KEY=' },
    { fixture: 'env-debug.env', check: 'env.debug', marker: 'DEBUG=' },
    { fixture: 'env-bad-url.env', check: 'env.url', marker: 'DATABASE_URL=' },
    { fixture: 'env-cors.env', check: 'env.cors', marker: 'CORS_ORIGINS=' },
  ];
  for (const { fixture, check, marker } of envCases) {
    it(`fails ${check} on ${fixture}, naming the key and never the value`, async () => {
      const s = stack();
      s.use(fixture, '.env.production');
      const result = await run(s);
      const failing = only(result.findings, check);
      expect(failing).toEqual([expect.objectContaining({ status: 'fail', file: '.env.production', line: lineOf(join(s.dir, '.env.production'), marker) })]);
      expect(new Set(problems(result.findings).map((f) => f.check))).toEqual(new Set(['docker.engine', check]));
      const key = marker.replace('=', '');
      expect(failing[0]!.message).toContain(key);
    });
  }

  it('fails env.required for a key of .env.example missing from the file', async () => {
    const s = stack();
    s.use('env-missing-key.env', '.env.production');
    const { findings } = await run(s);
    expect(only(findings, 'env.required')).toEqual([
      expect.objectContaining({ status: 'fail', file: '.env.production', message: expect.stringMatching(/^REDIS_URL is missing \(required by \.env\.example\)/) }),
    ]);
  });

  it('takes required keys from --required-env instead of .env.example', async () => {
    const s = stack();
    const { findings } = await run(s, ['--required-env', 'SENTRY_DSN']);
    expect(only(findings, 'env.required')).toEqual([expect.objectContaining({ status: 'fail', message: expect.stringContaining('SENTRY_DSN is missing') })]);
  });

  it('never prints a value from the env file or an inline Compose secret, in text or JSON', async () => {
    const s = stack();
    s.use('env-bad-url.env', '.env.production');
    const args = ['--compose-file', 'docker-compose.yml', '--compose-file', 'failures/compose-inline-secret.yml'];
    const asJson = await run(s, args);
    const asText = await preflight(['--env', 'production', ...args], { cwd: s.dir, env: STACK_ENV, json: false });
    expect(asText.stdout).toContain('FAIL  env.url');
    for (const output of [asJson.stdout, asJson.stderr, asText.stdout, asText.stderr]) {
      for (const secret of ['pw-that-must-not-leak', 'sk_live_inline_value', 'Kq8pW2vN7xR4tY6u', '3f9a6c1e8b2d4f7a', STACK_ENV.SECRET_KEY, STACK_ENV.POSTGRES_PASSWORD]) {
        expect(output).not.toContain(secret);
      }
    }
  });

  it("fails scripts.shellcheck with shellcheck's own file, line and code", async () => {
    const s = stack();
    s.use('script-unquoted.sh', 'scripts/restore-uploads.sh');
    const { findings } = await run(s);
    const found = only(findings, 'scripts.shellcheck');
    const line = lineOf(join(s.dir, 'scripts/restore-uploads.sh'), 'cd $1');
    expect(found.map((f) => [f.status, f.file, f.line, f.message.slice(0, 6)])).toEqual([
      ['fail', 'scripts/restore-uploads.sh', line, 'SC2164'],
      ['fail', 'scripts/restore-uploads.sh', line, 'SC2086'],
    ]);
    // At severity warning, the info-level SC2086 is not reported.
    const atWarning = await run(s, ['--shellcheck-severity', 'warning']);
    expect(only(atWarning.findings, 'scripts.shellcheck').map((f) => f.message.slice(0, 6))).toEqual(['SC2164']);
  });

  it('fails scripts.syntax where bash -n stops', async () => {
    const s = stack();
    s.use('script-syntax.sh', 'scripts/restore.sh');
    const { findings } = await run(s);
    expect(only(findings, 'scripts.syntax')).toEqual([expect.objectContaining({ status: 'fail', file: 'scripts/restore.sh', line: 6 })]);
  });

  it('fails scripts.glob when a configured pattern matches nothing', async () => {
    const s = stack();
    const { findings } = await run(s, ['--script', 'deploy/*.sh']);
    expect(only(findings, 'scripts.glob')).toEqual([expect.objectContaining({ status: 'fail', message: expect.stringContaining('deploy/*.sh matches no file') })]);
  });

  const nginxCases: { fixture: string; check: string; marker: string }[] = [
    { fixture: 'nginx-invalid.conf', check: 'edge.nginx-syntax', marker: 'proxy_passs' },
    { fixture: 'nginx-no-tls.conf', check: 'edge.tls', marker: 'listen 80' },
    { fixture: 'nginx-no-redirect.conf', check: 'edge.https-redirect', marker: 'listen 80' },
    { fixture: 'nginx-no-hsts.conf', check: 'edge.hsts', marker: 'listen 443 ssl' },
  ];
  for (const { fixture, check, marker } of nginxCases) {
    it(`fails ${check} on ${fixture}, at the file and line`, async () => {
      const s = stack();
      s.use(fixture, 'nginx/nginx.conf');
      const { findings } = await run(s);
      const failing = only(findings, check).filter((f) => f.status === 'fail');
      const line = lineOf(join(s.dir, 'nginx/nginx.conf'), marker) - (check === 'edge.hsts' ? 1 : 0);
      expect(failing).toEqual([expect.objectContaining({ file: 'nginx/nginx.conf', line })]);
    });
  }

  it('warns that Caddy cannot be validated when caddy is not installed', async () => {
    const s = stack();
    writeFileSync(join(s.dir, 'Caddyfile'), 'shop.example.com {\n  header Strict-Transport-Security "max-age=31536000"\n  reverse_proxy 127.0.0.1:3000\n}\n');
    const { findings } = await run(s, ['--caddy-config', 'Caddyfile']);
    expect(only(findings, 'edge.caddy-syntax')).toEqual([expect.objectContaining({ status: 'warn', message: expect.stringContaining('caddy is not installed') })]);
    expect(only(findings, 'edge.hsts')).toEqual([expect.objectContaining({ status: 'pass', line: 2 })]);
  });

  it('refuses --nginx-config together with --caddy-config as bad usage (exit 2)', async () => {
    const s = stack();
    const result = await run(s, ['--nginx-config', 'nginx/nginx.conf', '--caddy-config', 'Caddyfile']);
    expect(result.code).toBe(2);
    expect(JSON.parse(result.stdout).error.code).toBe('BAD_INPUT');
  });

  it('fails backups.free-space when the disk holds less than twice the last backup', async () => {
    const s = stack();
    const entry = join(s.dir, '.lifeline', 'production', 'backups', '20260101T000000000Z-abcdef');
    mkdirSync(entry, { recursive: true });
    writeFileSync(
      join(entry, 'backup.json'),
      JSON.stringify({ schemaVersion: 1, id: '20260101T000000000Z-abcdef', createdAt: '2026-01-01T00:00:00.000Z', files: { postgres: { name: 'postgres.dump', bytes: 2 ** 52, sha256: 'x' } } }),
    );
    const { findings } = await run(s);
    expect(only(findings, 'backups.free-space')).toEqual([expect.objectContaining({ status: 'fail', message: expect.stringContaining('20260101T000000000Z-abcdef') })]);
  });

  it('fails tools.pgbackrest when the configured stanza does not check out', async () => {
    const s = stack();
    const config = join(s.dir, 'pgbackrest.conf');
    writeFileSync(config, `[global]\nrepo1-path=${join(s.dir, 'repo')}\n\n[shop]\npg1-path=${join(s.dir, 'no-such-cluster')}\n`);
    writeFileSync(join(s.dir, 'lifeline.yml'), `version: 1\nenvironments:\n  production:\n    postgres:\n      physical: { stanza: shop, configFile: pgbackrest.conf }\n`);
    const { findings } = await run(s);
    expect(only(findings, 'tools.pgbackrest')).toEqual([expect.objectContaining({ status: 'fail', file: 'pgbackrest.conf', message: expect.stringContaining('stanza shop failed') })]);
  });

  it('with no configuration at all, says what it could not check instead of failing', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'lifeline-pf-empty-'));
    try {
      const { findings, code } = await preflight([], { cwd: dir, env: { PATH: '/usr/bin:/bin' } });
      expect(code).toBe(0);
      expect(findings.filter((f) => f.status === 'fail')).toEqual([]);
      for (const check of ['compose.config', 'scripts.shellcheck', 'env.file', 'edge.config', 'tools.pg_dump']) {
        expect(only(findings, check)).toEqual([expect.objectContaining({ status: 'warn', message: expect.stringMatching(/^not checked: /), fix: expect.any(String) })]);
      }
      const strict = await preflight(['--strict'], { cwd: dir, env: { PATH: '/usr/bin:/bin' } });
      expect(strict.code).toBe(1);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
