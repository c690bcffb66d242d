import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse } from 'yaml';
import { describe, expect, it } from 'vitest';
import { actionInputs } from '../../src/commands/action-spec';
import { ACTIONS, COMMANDS } from '../../src/commands/registry';
import { generatedFiles } from '../../scripts/gen-actions';
import { lifeline, parseGithubOutput, REPO, runBundle } from '../helpers/cli';

describe('action metadata', () => {
  it('is generated from the command specs and committed up to date', () => {
    for (const [path, content] of Object.entries(generatedFiles())) {
      expect(readFileSync(join(REPO, path), 'utf8'), `${path} is stale: run npm run gen:actions`).toBe(content);
    }
  });

  it('declares node24, a bundle that exists, descriptions everywhere and defaults for booleans', () => {
    for (const action of ACTIONS) {
      const yml = parse(readFileSync(join(REPO, 'actions', action.name, 'action.yml'), 'utf8'));
      expect(yml.runs.using).toBe('node24');
      expect(existsSync(join(REPO, 'actions', action.name, yml.runs.main))).toBe(true);
      for (const input of actionInputs(action)) {
        expect(yml.inputs[input.name].description, `${action.name}.${input.name}`).toBeTruthy();
        if (input.type === 'boolean') expect(yml.inputs[input.name].default, `${action.name}.${input.name}`).toMatch(/^(true|false)$/);
      }
    }
    const root = parse(readFileSync(join(REPO, 'action.yml'), 'utf8'));
    expect(root.inputs.command.required).toBe(true);
    expect(root.runs).toEqual({ using: 'node24', main: 'dist/main/index.js' });
  });

  it('offers the ten documented commands, prune and sync, on the root action', () => {
    expect(ACTIONS.map((a) => a.name)).toEqual(['preflight', 'backup', 'restore', 'verify', 'manifest', 'deploy', 'rollback', 'drill', 'gate', 'prune', 'tenant-export', 'sync']);
  });
});

describe('CLI surface', () => {
  it('lists every command in --help', async () => {
    const run = await lifeline(['--help']);
    expect(run.code).toBe(0);
    for (const command of COMMANDS) expect(run.stdout).toContain(command.name);
  });

  it('exits 2 for an unknown command or flag, suggesting the nearest', async () => {
    const cmd = await lifeline(['bakup']);
    expect(cmd.code).toBe(2);
    expect(cmd.stderr).toContain('did you mean "lifeline backup"?');
    const flag = await lifeline(['config', 'check', '--enviroment', 'x']);
    expect(flag.code).toBe(2);
    expect(flag.stderr).toContain('--enviroment');
  });

  it('prints exactly one JSON value for errors under --json', async () => {
    const run = await lifeline(['config', 'check', '--config', '/missing.yml', '--json']);
    expect(run.code).toBe(2);
    expect(JSON.parse(run.stdout)).toMatchObject({ error: { code: 'CONFIG_NOT_FOUND' } });
  });
});

describe('shipped bundles, run the way the GitHub runner runs them', () => {
  function runnerFiles() {
    const dir = mkdtempSync(join(tmpdir(), 'lifeline-gh-'));
    const output = join(dir, 'output');
    const summary = join(dir, 'summary');
    // GitHub's runner creates these files before the step runs.
    for (const f of [output, summary]) writeFileSync(f, '');
    return { dir, output, summary, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
  }

  it('the root action refuses an unknown command with exit 2', async () => {
    const gh = runnerFiles();
    try {
      const run = await runBundle('main', { command: 'backpu' }, { env: { GITHUB_OUTPUT: gh.output, GITHUB_STEP_SUMMARY: gh.summary } });
      expect(run.code).toBe(2);
      expect(run.stdout).toContain('::error::input "command" must be one of');
      expect(parseGithubOutput(readFileSync(gh.output, 'utf8'))).toEqual({});
    } finally {
      gh.cleanup();
    }
  });
});
