import { spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parse } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSampleDatabase, dropDatabase, sql, tableCounts, tempDir } from '../helpers/db';
import { REPO, runProcess } from '../helpers/cli';
import { startDockerEnvironment, type DockerEnvironment } from '../helpers/docker';

interface Step {
  id?: string;
  uses?: string;
  run?: string;
  if?: string;
  with?: Record<string, string | boolean>;
  env?: Record<string, string>;
}

const migrateJob = (parse(readFileSync(join(REPO, '.github/workflows/deploy.yml'), 'utf8')) as { jobs: Record<string, { steps: Step[] }> }).jobs.migrate!;
const stepById = (id: string) => migrateJob.steps.find((s) => s.id === id)!;
const explainStep = migrateJob.steps.find((s) => s.if === 'failure()')!;

/** The CLI from source, run in the application repository's directory (where tsx does not resolve by name). */
function lifeline(args: string[], options: { cwd: string; env?: Record<string, string | undefined> }) {
  const tsx = pathToFileURL(join(REPO, 'node_modules/tsx/dist/loader.mjs')).href;
  return runProcess(process.execPath, ['--import', tsx, join(REPO, 'src/cli/index.ts'), ...args], options);
}

/** Substitutes the `${{ ... }}` expressions of a step the way the runner would, from known values only. */
function evaluate(template: string, values: Record<string, string>): string {
  return template.replace(/\$\{\{\s*([^}]+?)\s*\}\}/g, (_, expression: string) => {
    if (!(expression in values)) throw new Error(`the test has no value for \${{ ${expression} }}`);
    return values[expression]!;
  });
}

/** Runs a step that uses a Lifeline action through the CLI, which runs the same CommandSpec with the same input names. */
async function runActionStep(step: Step, values: Record<string, string>, cwd: string) {
  const command = /actions\/([\w-]+)$/.exec(step.uses!)![1]!;
  const args = [command];
  for (const [name, value] of Object.entries(step.with ?? {})) {
    const evaluated = evaluate(String(value), values);
    // Boolean inputs are bare CLI flags; this job passes only `true` ones.
    if (typeof value === 'boolean') {
      if (!value) throw new Error(`the test cannot pass ${name}: false as a CLI flag`);
      args.push(`--${name}`);
    } else if (evaluated !== '') args.push(`--${name}`, evaluated);
  }
  return lifeline([...args, '--json'], { cwd, env: { DATABASE_URL: undefined } });
}

function runScriptStep(step: Step, values: Record<string, string>, extraEnv: Record<string, string>, cwd = REPO) {
  const env: Record<string, string> = { PATH: process.env.PATH!, ...extraEnv };
  for (const [name, value] of Object.entries(step.env ?? {})) env[name] = evaluate(value, values);
  return spawnSync('bash', ['--noprofile', '--norc', '-eo', 'pipefail', '-c', step.run!], { env, encoding: 'utf8', cwd });
}

describe('deploy.yml migrate job, run for real: pre-migration backup, failed migration, the summary restore command', () => {
  let docker: DockerEnvironment;
  let work: ReturnType<typeof tempDir>;
  let db: Awaited<ReturnType<typeof createSampleDatabase>>;
  let apiImage: string;

  beforeAll(async () => {
    docker = await startDockerEnvironment();
    work = tempDir('lifeline-workflow-');
    db = await createSampleDatabase(2, 'wfshop');
    const tag = `${docker.registry}/shop-api:v2`;
    expect(docker.docker(['tag', docker.baseImage, tag]).status).toBe(0);
    const push = docker.docker(['push', tag]);
    expect(push.status, push.stderr).toBe(0);
    apiImage = docker.docker(['inspect', '--format', '{{index .RepoDigests 0}}', tag]).stdout.trim();
    // The application repository's lifeline.yml: the workflow passes only --config and --env.
    mkdirSync(join(work.path, 'store'));
    writeFileSync(join(work.path, 'lifeline.yml'), `version: 1\nstore: ${join(work.path, 'store')}\nenvironments:\n  production:\n    production: true\n    postgres:\n      urlEnv: DATABASE_URL\n`);
  });

  afterAll(async () => {
    await docker?.stop();
    if (db) await dropDatabase(db.name);
    work?.cleanup();
  });

  function values(extra: Record<string, string> = {}): Record<string, string> {
    return {
      'inputs.config': 'lifeline.yml',
      'inputs.environment': 'production',
      'inputs.release': 'v2',
      'inputs.images': `api=${apiImage}\nweb=${apiImage}\nworker=${apiImage}`,
      'inputs.migrate-command': 'alembic upgrade head',
      'secrets.DATABASE_URL': db.url,
      'secrets.REDIS_URL': '',
      'github.sha': '0123456789abcdef0123456789abcdef01234567',
      ...extra,
    };
  }

  it('a migration that fails after changing the schema is undone by the restore command the summary prints', async () => {
    const before = await tableCounts(db.name);

    const backup = await runActionStep(stepById('backup'), values(), work.path);
    expect(backup.code, backup.stderr).toBe(0);
    // `--json` prints what the action sets as outputs: `id` here is the action's backup-id.
    const backupId = (JSON.parse(backup.stdout) as { id: string }).id;
    expect(backupId).toMatch(/\S/);
    expect(JSON.parse(backup.stdout)).toMatchObject({ label: 'pre-migration', verified: expect.anything() });

    // A migration that got halfway: it dropped a table, then failed.
    await sql('DROP TABLE payments', db.name);
    const migrate = runScriptStep(stepById('migrate'), values({ 'inputs.migrate-command': 'test -n "$DATABASE_URL" && echo "half-applied" && exit 7' }), {
      ...docker.env,
      GITHUB_OUTPUT: join(work.path, 'failed-migrate-output'),
    });
    expect(migrate.status).toBe(7);
    expect(migrate.stdout).toContain('half-applied');

    const summaryFile = join(work.path, 'summary.md');
    writeFileSync(summaryFile, '');
    const explain = runScriptStep(explainStep, values({ 'steps.backup.outputs.backup-id': backupId!, 'steps.backup.outcome': 'success', 'steps.migrate.outcome': 'failure' }), {
      GITHUB_STEP_SUMMARY: summaryFile,
    });
    expect(explain.status, explain.stderr).toBe(0);
    const summary = readFileSync(summaryFile, 'utf8');
    const password = new URL(db.url).password;
    if (password) expect(summary).not.toContain(password);
    const command = /^DATABASE_URL=\.\.\. lifeline (restore .*)$/m.exec(summary)![1]!;

    // The operator pastes it on the host with DATABASE_URL set: the URL never reaches argv.
    const args = command.split(' ');
    expect(args).toContain('--target-env');
    const restore = await lifeline(args, { cwd: work.path, env: { DATABASE_URL: db.url } });
    expect(restore.code, restore.stderr).toBe(0);
    expect(await tableCounts(db.name)).toEqual(before);
  });

  it('refuses an api image that is not pinned by digest, and one that is missing, before running anything', () => {
    const tagOnly = runScriptStep(stepById('migrate'), values({ 'inputs.images': `api=${docker.registry}/shop-api:v2` }), { ...docker.env });
    expect(tagOnly.status).toBe(2);
    expect(tagOnly.stdout).toContain('is not pinned by digest');
    const missing = runScriptStep(stepById('migrate'), values({ 'inputs.images': `web=${apiImage}` }), { ...docker.env });
    expect(missing.status).toBe(2);
    expect(missing.stdout).toContain('no api=IMAGE line');
  });

  it('a migration that succeeds runs in the api image with DATABASE_URL from the environment, not the command line', () => {
    const output = join(work.path, 'migrate-output');
    writeFileSync(output, '');
    const migrate = runScriptStep(stepById('migrate'), values({ 'inputs.migrate-command': 'echo "url-length=${#DATABASE_URL}"' }), { ...docker.env, GITHUB_OUTPUT: output });
    expect(migrate.status, migrate.stderr).toBe(0);
    expect(migrate.stdout.trim()).toBe(`url-length=${db.url.length}`);
    expect(stepById('migrate').run).toContain('-e DATABASE_URL --entrypoint sh "$api_image"');
    expect(readFileSync(output, 'utf8')).toBe(`api-image=${apiImage}\n`);
  });

  it('records the migration head the api image prints, and fails on anything but one line', () => {
    const output = join(work.path, 'head-output');
    writeFileSync(output, '');
    const head = (command: string) =>
      runScriptStep(stepById('head'), values({ 'steps.migrate.outputs.api-image': apiImage, 'inputs.migration-head-command': command }), { ...docker.env, GITHUB_OUTPUT: output });
    expect(head('echo "INFO noise" >&2; echo 4f2a9c1e7b3d').status).toBe(0);
    expect(readFileSync(output, 'utf8')).toBe('migration-head=4f2a9c1e7b3d\n');
    const two = head('printf "a\\nb\\n"');
    expect(two.status).toBe(1);
    expect(two.stdout).toContain('must print exactly one line');
    expect(head('true').status).toBe(1);
  });
});

describe('backup.yml, run for real: a scheduled backup, then retention', () => {
  const backupJob = (parse(readFileSync(join(REPO, '.github/workflows/backup.yml'), 'utf8')) as { jobs: Record<string, { steps: Step[] }> }).jobs.backup!;
  let work: ReturnType<typeof tempDir>;
  let db: Awaited<ReturnType<typeof createSampleDatabase>>;

  beforeAll(async () => {
    work = tempDir('lifeline-backup-workflow-');
    db = await createSampleDatabase(1, 'wfbackup');
    writeFileSync(
      join(work.path, 'lifeline.yml'),
      `version: 1\nstore: ${join(work.path, 'store')}\nenvironments:\n  production:\n    postgres:\n      urlEnv: DATABASE_URL\n    retention:\n      keepLast: 1\n      keepDaily: 0\n      keepWeekly: 0\n`,
    );
    // The Lifeline checkout the job makes, with the CLI entry the prune step runs (from source here).
    mkdirSync(join(work.path, '.lifeline-src/bin'), { recursive: true });
    writeFileSync(join(work.path, '.lifeline-src/package.json'), '{ "type": "module" }\n');
    writeFileSync(join(work.path, '.lifeline-src/bin/lifeline.js'), `await import(${JSON.stringify(pathToFileURL(join(REPO, 'src/cli/index.ts')).href)});\n`);
  });

  afterAll(async () => {
    if (db) await dropDatabase(db.name);
    work?.cleanup();
  });

  it('keeps only what the retention policy keeps, after the new backup verified', async () => {
    const values = { 'env.CONFIG': 'lifeline.yml', 'env.ENVIRONMENT': 'production', 'secrets.DATABASE_URL': db.url, 'secrets.REDIS_URL': '', 'github.sha': '0123456789abcdef0123456789abcdef01234567' };
    const backupStep = backupJob.steps.find((s) => s.id === 'backup')!;
    const ids: string[] = [];
    for (let i = 0; i < 2; i++) {
      const run = await runActionStep(backupStep, values, work.path);
      expect(run.code, run.stderr).toBe(0);
      ids.push((JSON.parse(run.stdout) as { id: string }).id);
    }
    // Retention is the prune action now, run like the backup step above.
    const prune = backupJob.steps.find((s) => s.uses?.endsWith('/actions/prune'))!;
    expect(prune.with).toMatchObject({ apply: true });
    const result = await runActionStep(prune, values, work.path);
    expect(result.code, result.stderr).toBe(0);
    const left = readdirSync(join(work.path, 'store/production/backups')).filter((name) => !name.startsWith('.'));
    expect(left).toEqual([ids[1]]);
  });
});
