import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { parseGithubOutput, REPO, runBundle } from '../helpers/cli';
import { startDockerEnvironment, type DockerEnvironment } from '../helpers/docker';
import { lineOf, makeCertificates, only, preflight, problems, stageStack, STACK_ENV, type StagedStack } from '../fixtures/preflight/harness';

// The engine checks against the private dockerd; the full passing stack then passes everything.
describe('lifeline preflight with a real Docker engine', () => {
  let docker: DockerEnvironment;
  let certificates: ReturnType<typeof makeCertificates>;
  let stack: StagedStack;
  beforeAll(async () => {
    certificates = makeCertificates();
    stack = stageStack(certificates.dir);
    docker = await startDockerEnvironment();
  });
  afterAll(async () => {
    await docker?.stop();
    stack?.cleanup();
    certificates?.cleanup();
  });
  const env = () => ({ ...STACK_ENV, ...docker.env });

  it('passes every check on the passing stack, even with --strict', async () => {
    const { findings, code, stdout } = await preflight(['--env', 'production', '--database-url', inject('pgUrl'), '--strict'], { cwd: stack.dir, env: env() });
    expect(problems(findings), stdout).toEqual([]);
    expect(code).toBe(0);
    expect(only(findings, 'docker.engine')[0]!.message).toMatch(/^Docker engine \d+\.\d+\.\d+\S* answers \(minimum 20\.10\.0\)$/);
  });

  it('fails docker.engine when the engine is older than the configured minimum', async () => {
    const { findings, code } = await preflight(['--env', 'production', '--min-docker-version', '999.0'], { cwd: stack.dir, env: env() });
    expect(code).toBe(1);
    expect(only(findings, 'docker.engine')).toEqual([expect.objectContaining({ status: 'fail', message: expect.stringContaining('older than the minimum 999.0') })]);
  });

  it('rejects a minimum version that is not a version (exit 2)', async () => {
    const result = await preflight(['--env', 'production', '--min-docker-version', 'latest'], { cwd: stack.dir, env: env() });
    expect(result.code).toBe(2);
  });

  it('the action bundle annotates the failing file and line and writes the summary table', async () => {
    if (!existsSync(join(REPO, 'dist/preflight/index.js'))) throw new Error('build the bundle first: node scripts/build.mjs preflight');
    const staged = stageStack(certificates.dir);
    const work = mkdtempSync(join(tmpdir(), 'lifeline-pf-action-'));
    try {
      staged.use('env-debug.env', '.env.production');
      const outputFile = join(work, 'output');
      const summaryFile = join(work, 'summary');
      writeFileSync(outputFile, '');
      writeFileSync(summaryFile, '');
      const result = await runBundle(
        'preflight',
        { env: 'production', 'compose-file': 'docker-compose.yml\nfailures/compose-privileged.yml' },
        { cwd: staged.dir, env: { ...env(), GITHUB_OUTPUT: outputFile, GITHUB_STEP_SUMMARY: summaryFile, DATABASE_URL: undefined } },
      );
      expect(result.code).toBe(1);
      const debugLine = lineOf(join(staged.dir, '.env.production'), 'DEBUG=');
      expect(result.stdout).toContain(`::error title=preflight env.debug,file=.env.production,line=${debugLine}::DEBUG is on in production`);
      const privilegedLine = lineOf(join(staged.dir, 'failures/compose-privileged.yml'), 'privileged: true');
      expect(result.stdout).toContain(`::error title=preflight compose.privileged,file=failures/compose-privileged.yml,line=${privilegedLine}::service worker runs privileged`);
      const outputs = parseGithubOutput(readFileSync(outputFile, 'utf8'));
      expect(outputs.failures).toBe('2');
      expect(JSON.parse(outputs.findings!).map((f: { check: string; status: string }) => `${f.check}:${f.status}`)).toEqual(
        expect.arrayContaining(['env.debug:fail', 'compose.privileged:fail', 'docker.engine:pass']),
      );
      const summary = readFileSync(summaryFile, 'utf8');
      expect(summary).toContain('| status | check | where | finding | fix |');
      expect(summary).toContain(`| ❌ fail | \`env.debug\` | \`.env.production:${debugLine}\` |`);
    } finally {
      staged.cleanup();
      rmSync(work, { recursive: true, force: true });
    }
  });
});
