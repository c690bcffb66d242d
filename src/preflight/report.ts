import type { Annotation } from '../commands/spec';
import type { Finding } from './findings';

const STATUS_LABEL = { pass: 'PASS', warn: 'WARN', fail: 'FAIL' } as const;
const STATUS_ICON = { pass: '✅ pass', warn: '⚠️ warn', fail: '❌ fail' } as const;

function location(f: Finding): string {
  return f.file ? `${f.file}${f.line ? `:${f.line}` : ''}` : '';
}

/** One row per finding for the terminal: status, check, where, what, and the fix for anything not passing. */
export function formatFindingsText(findings: Finding[], verdict: string): string {
  const width = Math.max(...findings.map((f) => f.check.length), 5);
  const lines = findings.map((f) => {
    const where = location(f);
    const row = `${STATUS_LABEL[f.status]}  ${f.check.padEnd(width)}  ${f.message}${where ? `  (${where})` : ''}`;
    return f.status !== 'pass' && f.fix ? `${row}\n      ${' '.repeat(width)}fix: ${f.fix}` : row;
  });
  return [...lines, '', verdict].join('\n');
}

function cell(text: string | undefined): string {
  return (text ?? '').replace(/\|/g, '\\|').replace(/\n/g, ' ');
}

export function formatFindingsMarkdown(findings: Finding[], verdict: string, environment: string): string {
  const rows = findings.map((f) => `| ${STATUS_ICON[f.status]} | \`${f.check}\` | ${f.file ? `\`${cell(location(f))}\`` : ''} | ${cell(f.message)} | ${f.status === 'pass' ? '' : cell(f.fix)} |`);
  return [`### Preflight: ${environment}`, '', verdict, '', '| status | check | where | finding | fix |', '|---|---|---|---|---|', ...rows, ''].join('\n');
}

/** Failures become error annotations and warnings warning annotations, on the file and line when known. */
export function findingAnnotations(findings: Finding[]): Annotation[] {
  return findings
    .filter((f) => f.status !== 'pass')
    .map((f) => ({ level: f.status === 'fail' ? 'error' : 'warning', title: `preflight ${f.check}`, message: f.fix ? `${f.message}. Fix: ${f.fix}` : f.message, file: f.file, line: f.line }));
}
