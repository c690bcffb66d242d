import { isAbsolute, join } from 'node:path';
import { glob } from 'tinyglobby';
import type { Runner } from '../runner/runner';
import { runText } from '../runner/runner';
import { displayPath, fail, notChecked, pass, type CheckContext, type Finding } from './findings';

export type ShellcheckSeverity = 'error' | 'warning' | 'info' | 'style';

export interface ScriptPatterns {
  patterns: string[];
  /** Relative patterns are matched from here (the config's directory, or the working directory for flags). */
  baseDir: string;
}

interface ShellcheckComment {
  file: string;
  line: number;
  column: number;
  level: ShellcheckSeverity;
  code: number;
  message: string;
}

/** Expands the configured globs; a pattern that matches nothing is itself a finding (a typo would skip every check). */
export async function expandScripts(scripts: ScriptPatterns, ctx: CheckContext): Promise<{ files: string[]; findings: Finding[] }> {
  const files = new Set<string>();
  const findings: Finding[] = [];
  for (const pattern of scripts.patterns) {
    const matched = await glob(pattern, { cwd: scripts.baseDir, absolute: true, onlyFiles: true, dot: true });
    if (matched.length === 0) ctx.files?.add(isAbsolute(pattern) ? pattern : join(scripts.baseDir, pattern), 'shell script pattern', 'scripts.glob', 'no match');
    if (matched.length === 0)
      findings.push(
        fail({
          check: 'scripts.glob',
          message: `the script pattern ${pattern} matches no file (from ${displayPath(ctx, scripts.baseDir) || '.'})`,
          fix: 'fix the pattern in --script or preflight.scripts',
        }),
      );
    for (const file of matched.sort()) files.add(file);
  }
  return { files: [...files], findings };
}

/** `bash -n` on every script, then one `shellcheck -f json1` over all of them; findings keep file and line. */
export async function checkScripts(runner: Runner, ctx: CheckContext, scripts: ScriptPatterns, severity: ShellcheckSeverity): Promise<Finding[]> {
  if (scripts.patterns.length === 0) return [notChecked('scripts.shellcheck', 'no shell scripts configured', 'pass --script "scripts/*.sh" or set preflight.scripts in lifeline.yml')];
  const { files, findings } = await expandScripts(scripts, ctx);
  for (const file of files) ctx.files?.add(file, 'shell script', 'bash -n, shellcheck');
  if (files.length === 0) return findings;

  const syntax = await Promise.all(files.map(async (file) => ({ file, result: await runText(runner, { tool: 'bash', args: ['-n', file], cwd: ctx.cwd }) })));
  const syntaxFailures = syntax.filter((s) => s.result.exitCode !== 0);
  for (const { file, result } of syntaxFailures) {
    const line = /line (\d+):/.exec(result.stderr)?.[1];
    const message =
      result.stderr
        .split('\n')
        .find((l) => l.trim())
        ?.replace(/^.*?line \d+: /, '') ?? 'syntax error';
    findings.push(
      fail({ check: 'scripts.syntax', file: displayPath(ctx, file), line: line ? Number(line) : undefined, message: `bash -n: ${message}`, fix: 'fix the syntax error; `bash -n FILE` shows it' }),
    );
  }
  if (syntaxFailures.length === 0) findings.push(pass({ check: 'scripts.syntax', message: `${files.length} script${files.length === 1 ? '' : 's'} pass bash -n` }));

  let result;
  try {
    result = await runText(runner, { tool: 'shellcheck', args: ['-f', 'json1', '-S', severity, ...files], cwd: ctx.cwd });
  } catch {
    findings.push(fail({ check: 'scripts.shellcheck', message: 'shellcheck is not installed', fix: 'install it (Debian/Ubuntu: apt-get install shellcheck)' }));
    return findings;
  }
  let comments: ShellcheckComment[];
  try {
    comments = (JSON.parse(result.stdout) as { comments: ShellcheckComment[] }).comments;
  } catch {
    findings.push(
      fail({
        check: 'scripts.shellcheck',
        message: `shellcheck did not report (exit ${result.exitCode}): ${result.stderr.split('\n')[0] ?? ''}`,
        fix: 'run shellcheck on the scripts by hand to see why',
      }),
    );
    return findings;
  }
  for (const c of comments) {
    // The configured severity is the threshold: whatever shellcheck reports at or above it fails.
    findings.push(
      fail({ check: 'scripts.shellcheck', file: displayPath(ctx, c.file), line: c.line, message: `SC${c.code} (${c.level}): ${c.message}`, fix: `see https://www.shellcheck.net/wiki/SC${c.code}` }),
    );
  }
  if (comments.length === 0) findings.push(pass({ check: 'scripts.shellcheck', message: `${files.length} script${files.length === 1 ? '' : 's'} pass shellcheck at severity ${severity}` }));
  return findings;
}
