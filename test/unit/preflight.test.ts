import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ComposeSources } from '../../src/preflight/compose-source';
import { checkComposeGates, dataServiceRole } from '../../src/preflight/compose-gates';
import { checkComposeDebug, checkEnvFiles } from '../../src/preflight/compose-env';
import { FilesRead } from '../../src/preflight/findings';
import { checkCommandSecrets, commandSecrets, shellWords } from '../../src/preflight/compose-secrets';
import { compareVersions } from '../../src/preflight/docker';
import { nginxGates } from '../../src/preflight/edge';
import { parseEnvFile } from '../../src/preflight/env-values';
import { formatFindingsMarkdown, findingAnnotations } from '../../src/preflight/report';
import { parseNginxConfig } from '../../src/preflight/nginx-config';

const dir = mkdtempSync(join(tmpdir(), 'lifeline-pf-unit-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const write = (name: string, text: string) => {
  const path = join(dir, name);
  mkdirSync(join(path, '..'), { recursive: true });
  writeFileSync(path, text);
  return path;
};

describe('parseEnvFile', () => {
  it('reads keys with their lines, quotes, export and comments', () => {
    const entries = parseEnvFile('# comment\nexport A=1\nB="two words" \n\nC=\'x # not a comment\'\nD=plain # trailing\nE="multi\nline"\nF=\n');
    expect(entries).toEqual([
      { key: 'A', value: '1', line: 2 },
      { key: 'B', value: 'two words', line: 3 },
      { key: 'C', value: 'x # not a comment', line: 5 },
      { key: 'D', value: 'plain', line: 6 },
      { key: 'E', value: 'multi\nline', line: 7 },
      { key: 'F', value: '', line: 9 },
    ]);
  });
});

describe('compareVersions', () => {
  it('compares numerically and ignores suffixes', () => {
    expect(compareVersions('20.10.24+dfsg1', '20.10.0')).toBeGreaterThan(0);
    expect(compareVersions('9.3', '20.10')).toBeLessThan(0);
    expect(compareVersions('24.0', '24.0.0')).toBe(0);
  });
});

describe('Compose source locations', () => {
  it('points at the anchor that a service merges a key from, and at list items by value', () => {
    const file = write(
      'anchors.yml',
      'x-app: &app\n  network_mode: host\n  restart: always\nservices:\n  api:\n    <<: *app\n    image: api:1\n    ports:\n      - "8000:8000"\n      - "5432:5432"\n',
    );
    const sources = ComposeSources.load([file]);
    expect(sources.locate(['services', 'api', 'network_mode'])).toEqual({ file, line: 2 });
    expect(sources.locate(['services', 'api', 'image'])).toEqual({ file, line: 7 });
    expect(sources.locate(['services', 'api', 'missing'])).toEqual({ file, line: 5 });
    expect(sources.locateItem(['services', 'api', 'ports'], (p) => String(p).startsWith('5432'))).toEqual({ file, line: 10 });
  });

  it('runs the gates on the naive merge when Compose cannot, and the later file wins', () => {
    const base = write('base.yml', 'services:\n  api:\n    image: api@sha256:' + 'a'.repeat(64) + '\n    restart: always\n    healthcheck: { test: ["CMD", "true"] }\n');
    const override = write('override.yml', 'services:\n  api:\n    image: api:latest\n');
    const sources = ComposeSources.load([base, override]);
    const findings = checkComposeGates(sources.mergedModel(), sources, { production: true, cwd: dir }, { appServices: ['api'], allowPrivileged: [], allowHostNetwork: [] });
    expect(findings.filter((f) => f.status === 'fail')).toEqual([expect.objectContaining({ check: 'compose.image-pinned', file: 'override.yml', line: 3 })]);
  });

  it('accepts ${VAR} references for secret-looking names and flags literals only', () => {
    const file = write(
      'secrets.yml',
      'services:\n  api:\n    environment:\n      - DB_PASSWORD=${DB_PASSWORD}\n      - API_TOKEN=literal-token\n      - EMPTY_SECRET=\n      - LOG_LEVEL=debug\n      - REDIS_PASSWORD=${REDIS_PASSWORD:-fallback-literal}\n',
    );
    const sources = ComposeSources.load([file]);
    const findings = checkComposeGates(sources.mergedModel(), sources, { production: true, cwd: dir }, { appServices: [], allowPrivileged: [], allowHostNetwork: [] });
    expect(findings.filter((f) => f.check === 'compose.inline-secret')).toEqual([
      expect.objectContaining({ status: 'fail', line: 5, message: 'service api sets API_TOKEN to a literal value in the Compose file' }),
      // A fallback is a literal committed with the file, used whenever the variable is unset.
      expect.objectContaining({ status: 'fail', line: 8, message: 'service api sets REDIS_PASSWORD to a literal value in the Compose file' }),
    ]);
  });
});

describe('which service is the database or Redis', () => {
  const none = {};
  const postgres = [
    'postgres:15',
    'postgres',
    'docker.io/library/postgres:16-alpine',
    'postgres@sha256:' + 'a'.repeat(64),
    'bitnami/postgresql:15',
    'postgis/postgis:15-3.4',
    'timescale/timescaledb:latest-pg15',
    'timescale/timescaledb-ha:pg16',
    'pgvector/pgvector:pg16',
    'ankane/pgvector',
    'supabase/postgres:15.1.0.147',
    'cimg/postgres:15.4',
    'registry.example.com:5000/team/postgres:15',
    'ghcr.io/acme/pg15:1',
    'POSTGRES:15',
  ];
  for (const image of postgres) it(`${image} is PostgreSQL`, () => expect(dataServiceRole('x', image, none)).toBe('postgres'));
  const redis = ['redis:7', 'bitnami/redis:7.2', 'valkey/valkey:8', 'eqalpha/keydb', 'docker.dragonflydb.io/dragonflydb/dragonfly', 'redis/redis-stack-server:latest'];
  for (const image of redis) it(`${image} is Redis`, () => expect(dataServiceRole('x', image, none)).toBe('redis'));
  // Companions named after the database hold none of its data: they are neither.
  const neither = [
    'prometheuscommunity/postgres-exporter',
    'wrouesnel/postgres_exporter',
    'oliver006/redis_exporter',
    'dpage/pgadmin4',
    'edoburu/pgbouncer',
    'bitnami/pgpool',
    'postgrest/postgrest:v12',
    'rediscommander/redis-commander',
    'redis/redisinsight',
    'bitnami/redis-sentinel',
    'prodrigestivill/postgres-backup-local',
    'nginx:1.27',
    'myapp/api:1',
    'pgadmin',
    undefined,
  ];
  for (const image of neither) it(`${image} is neither`, () => expect(dataServiceRole('x', image, none)).toBeUndefined());
  it('the service lifeline.yml names wins over the image', () => {
    expect(dataServiceRole('db', 'acme/custom-db:1', { postgresService: 'db' })).toBe('postgres');
    expect(dataServiceRole('cache', 'acme/cache:1', { redisService: 'cache' })).toBe('redis');
    expect(dataServiceRole('other', 'acme/custom-db:1', { postgresService: 'db' })).toBeUndefined();
  });
});

describe('Compose extends', () => {
  const gates = (sources: ComposeSources) => checkComposeGates(sources.mergedModel(), sources, { production: true, cwd: dir }, { appServices: [], allowPrivileged: [], allowHostNetwork: [] });

  it('follows extends into another file (relative to the file naming it), recursively, and every gate sees the merged service', () => {
    write('ext/lib/root.yml', 'services:\n  root:\n    image: postgis/postgis:15-3.4\n    network_mode: host\n');
    write(
      'ext/lib/common.yml',
      'services:\n  base:\n    extends: { file: root.yml, service: root }\n    env_file: common.env\n    environment: [DEBUG=True]\n    command: ["gunicorn", "--db", "postgres://shop:hunter2hunter2@127.0.0.1/shop"]\n',
    );
    write('ext/lib/common.env', 'APP_DEBUG=1\n');
    const main = write('ext/main.yml', 'services:\n  api:\n    extends:\n      file: lib/common.yml\n      service: base\n    restart: always\n');
    const sources = ComposeSources.load([main]);
    expect(sources.unresolvedExtends).toEqual([]);
    expect(sources.extendedFiles.map((f) => [f.path, f.status])).toEqual([
      [join(dir, 'ext/lib/common.yml'), 'read'],
      [join(dir, 'ext/lib/root.yml'), 'read'],
    ]);
    const model = sources.mergedModel();
    expect(Object.keys(model.services)).toEqual(['api']);
    expect(
      gates(sources)
        .filter((f) => f.status === 'fail')
        .map((f) => [f.check, f.file, f.line]),
    ).toEqual([
      ['compose.host-network', 'ext/lib/root.yml', 4],
      ['compose.postgres-volume', 'ext/main.yml', 2], // the service itself, which has no volume
    ]);
    expect(checkComposeDebug(model, sources, { production: true, cwd: dir })).toEqual([expect.objectContaining({ status: 'fail', file: 'ext/lib/common.yml', line: 5 })]);
    expect(checkCommandSecrets(sources, { production: true, cwd: dir })).toEqual([
      expect.objectContaining({ status: 'fail', file: 'ext/lib/common.yml', line: 6, message: expect.stringContaining('service api') }),
    ]);
    const files = new FilesRead({ cwd: dir });
    const envFindings = checkEnvFiles(sources, { production: true, cwd: dir, files }, { projectDir: join(dir, 'ext') });
    expect(envFindings).toEqual(expect.arrayContaining([expect.objectContaining({ check: 'env.debug', status: 'fail', file: 'ext/lib/common.env', line: 1 })]));
    expect(files.list()).toContainEqual(expect.objectContaining({ path: 'ext/lib/common.env', status: 'read' }));
  });

  it('the extending service overrides what it extends, and environment merges key by key', () => {
    const file = write('ext/same.yml', 'services:\n  base:\n    image: api:1\n    environment: { DEBUG: "true", A: "1" }\n  api:\n    extends: base\n    environment: { DEBUG: "false" }\n');
    const model = ComposeSources.load([file]).mergedModel();
    expect(model.services.api!.environment).toEqual({ DEBUG: 'false', A: '1' });
    expect(model.services.api!.image).toBe('api:1');
  });

  const broken = [
    { name: 'a missing file', files: { 'ext/m1.yml': 'services:\n  api:\n    extends: { file: nowhere.yml, service: base }\n' }, reason: 'cannot be read' },
    { name: 'a missing service', files: { 'ext/m2.yml': 'services:\n  api:\n    extends: { file: lib/common.yml, service: nope }\n' }, reason: 'has no service nope' },
    {
      name: 'a cycle across files',
      files: { 'ext/c1.yml': 'services:\n  api:\n    extends: { file: c2.yml, service: b }\n', 'ext/c2.yml': 'services:\n  b:\n    extends: { file: c1.yml, service: api }\n' },
      reason: 'a cycle',
    },
    { name: 'a cycle in one file', files: { 'ext/c3.yml': 'services:\n  api:\n    extends: api\n' }, reason: 'a cycle' },
  ];
  for (const { name, files, reason } of broken) {
    it(`records ${name} as unresolved, at the extends line`, () => {
      const paths = Object.entries(files).map(([n, text]) => write(n, text));
      const sources = ComposeSources.load([paths[0]!]);
      expect(sources.unresolvedExtends).toEqual([expect.objectContaining({ service: 'api', reason: expect.stringContaining(reason) })]);
      expect(sources.unresolvedExtends[0]!.line).toBeGreaterThan(2);
    });
  }

  it('stops a chain deeper than the limit', () => {
    const chain = Array.from({ length: 13 }, (_, i) => `  s${i}:\n    extends: s${i + 1}\n`).join('') + '  s13:\n    image: x\n';
    const sources = ComposeSources.load([write('ext/deep.yml', `services:\n${chain}`)]);
    expect(sources.unresolvedExtends.find((u) => u.service === 's0')?.reason).toMatch(/deeper than 10/);
    expect(sources.unresolvedExtends.find((u) => u.service === 's5')).toBeUndefined();
  });
});

describe('passwords on command lines', () => {
  const kinds = (line: string) => commandSecrets(shellWords(line)).map((s) => `${s.how}:${s.kind}`);
  it('finds options, assignments and URLs with a password, literal or from a variable', () => {
    expect(kinds('redis-server --requirepass s3cret')).toEqual(['--requirepass:literal']);
    expect(kinds('redis-server --masterauth=${MASTER_PW}')).toEqual(['--masterauth=:reference']);
    expect(kinds('postgres -c password=x')).toEqual(['password=:literal']);
    expect(kinds('PGPASSWORD=pw psql -h db')).toEqual(['PGPASSWORD=:literal']);
    expect(kinds('REDISCLI_AUTH=$$PW redis-cli ping')).toEqual(['REDISCLI_AUTH=:reference']);
    expect(kinds('app --db "postgres://u:p%40ss@db/shop"')).toEqual(['a URL with a password:literal']);
    expect(kinds('app --db-password ${DB_PASSWORD:-fallback}')).toEqual(['--db-password:literal']);
    expect(kinds('/usr/bin/redis-cli -h r -a pw ping')).toEqual(['-a:literal']);
  });
  it('ignores lookalikes: password files, settings that only mention a password, flags, other -a', () => {
    for (const line of [
      'app --password-file /run/secrets/pw',
      'postgres -c password_encryption=scram-sha-256',
      'redis-cli --no-auth-warning ping',
      'cp -a src dst',
      'wget -q -O- http://127.0.0.1:8000/health',
      'app --token-ttl 60 --auth',
      'app --password',
      'app --password --verbose',
      'app --password=',
    ]) {
      expect(kinds(line), line).toEqual([]);
    }
  });
  it('reports an anchor merged into several services once, at the line of the value', () => {
    const file = write('anchored-command.yml', 'x-app: &app\n  command:\n    - app\n    - --api-token\n    - tok-123\nservices:\n  api:\n    <<: *app\n  worker:\n    <<: *app\n');
    const findings = checkCommandSecrets(ComposeSources.load([file]), { production: true, cwd: dir });
    expect(findings.map((f) => [f.status, f.line, f.message.includes('tok-123')])).toEqual([['fail', 5, false]]);
  });
});

describe('nginx gates', () => {
  it('follows includes and reports the included file and line', () => {
    const main = write('nginx/main.conf', 'events {}\nhttp {\n  include sites/*.conf;\n}\n');
    write(
      'nginx/sites/shop.conf',
      'server {\n  listen 443 ssl;\n  ssl_certificate a.crt;\n  ssl_certificate_key a.key;\n}\nserver {\n  listen 80;\n  rewrite ^ https://$host$request_uri permanent;\n}\n',
    );
    const findings = nginxGates({ production: true, cwd: dir }, parseNginxConfig(main), 'nginx/main.conf');
    expect(findings.map((f) => [f.check, f.status, f.file, f.line])).toEqual([
      ['edge.tls', 'pass', 'nginx/sites/shop.conf', 2],
      ['edge.tls-protocols', 'warn', 'nginx/sites/shop.conf', 2],
      ['edge.hsts', 'fail', 'nginx/sites/shop.conf', 1],
      ['edge.https-redirect', 'pass', 'nginx/sites/shop.conf', 7],
    ]);
  });

  it('keeps quoted braces and semicolons inside arguments', () => {
    const main = write('nginx/quoted.conf', 'http {\n  server {\n    listen 443 ssl;\n    add_header Strict-Transport-Security "max-age=1; {x}" always;\n  }\n}\n');
    const server = parseNginxConfig(main)[0]!.children![0]!;
    expect(server.children!.map((d) => [d.name, d.args, d.line])).toEqual([
      ['listen', ['443', 'ssl'], 3],
      ['add_header', ['Strict-Transport-Security', 'max-age=1; {x}', 'always'], 4],
    ]);
  });
});

describe('preflight report', () => {
  it('annotates warnings and failures only, and escapes table cells', () => {
    const findings = [
      { check: 'a', status: 'pass' as const, message: 'ok' },
      { check: 'b', status: 'warn' as const, message: 'x | y', file: 'f', line: 2, fix: 'do it' },
      { check: 'c', status: 'fail' as const, message: 'bad' },
    ];
    expect(findingAnnotations(findings)).toEqual([
      { level: 'warning', title: 'preflight b', message: 'x | y. Fix: do it', file: 'f', line: 2 },
      { level: 'error', title: 'preflight c', message: 'bad', file: undefined, line: undefined },
    ]);
    expect(formatFindingsMarkdown(findings, 'v', 'prod')).toContain('| ⚠️ warn | `b` | `f:2` | x \\| y | do it |');
  });
});
