import type { Annotation } from '../report/annotation';
import { renderMarkdownTable } from '../report/table';
import type { FileRead, Finding } from './findings';

const STATUS_LABEL = { pass: 'PASS', warn: 'WARN', fail: 'FAIL' } as const;
const STATUS_ICON = { pass: '✅ pass', warn: '⚠️ warn', fail: '❌ fail' } as const;

function location(f: Finding): string {
  return f.file ? `${f.file}${f.line ? `:${f.line}` : ''}` : '';
}

/** One row per finding for the terminal: status, check, where, what, and the fix for anything not passing. */
export function formatFindingsText(findings: Finding[], verdict: string, files?: FileRead[]): string {
  const width = Math.max(...findings.map((f) => f.check.length), 5);
  const lines = findings.map((f) => {
    const where = location(f);
    const row = `${STATUS_LABEL[f.status]}  ${f.check.padEnd(width)}  ${f.message}${where ? `  (${where})` : ''}`;
    return f.status !== 'pass' && f.fix ? `${row}\n      ${' '.repeat(width)}fix: ${f.fix}` : row;
  });
  return [...lines, ...(files ? ['', ...formatFilesText(files)] : []), '', verdict].join('\n');
}

/** What was examined, and what was named but not examined: a check is only as good as the files it saw. */
export function formatFilesText(files: FileRead[]): string[] {
  if (files.length === 0) return ['files read: none (nothing configured to read)'];
  const width = Math.max(...files.map((f) => f.status.length));
  const unread = files.filter((f) => f.status !== 'read').length;
  return [`files read: ${files.length - unread}${unread ? `, named but not examined: ${unread}` : ''}`, ...files.map((f) => `  ${f.status.padEnd(width)}  ${f.path}  (${f.role}; ${f.by})`)];
}

function cell(text: string | undefined): string {
  return (text ?? '').replace(/\|/g, '\\|').replace(/\n/g, ' ');
}

export function formatFindingsMarkdown(findings: Finding[], verdict: string, environment: string, files?: FileRead[]): string {
  // Cells are Markdown already (code spans around escaped text), so the table adds no escaping of its own.
  const findingsTable = renderMarkdownTable(
    {
      headers: ['status', 'check', 'where', 'finding', 'fix'],
      rows: findings.map((f) => [STATUS_ICON[f.status], `\`${f.check}\``, f.file ? `\`${cell(location(f))}\`` : '', cell(f.message), f.status === 'pass' ? '' : cell(f.fix)]),
    },
    { escape: 'none' },
  );
  const fileRows = (files ?? []).map((f) => [f.status, `\`${cell(f.path)}\``, cell(f.role), cell(f.by)]);
  const filesTable = files
    ? [
        '',
        `<details><summary>Files read (${files.filter((f) => f.status === 'read').length} of ${files.length} named)</summary>`,
        '',
        renderMarkdownTable({ headers: ['status', 'file', 'role', 'checked by'], rows: fileRows }, { escape: 'none' }),
        '',
        '</details>',
      ]
    : [];
  return [`### Preflight: ${environment}`, '', verdict, '', findingsTable, ...filesTable, ''].join('\n');
}

/** Failures become error annotations and warnings warning annotations, on the file and line when known. */
export function findingAnnotations(findings: Finding[]): Annotation[] {
  return findings
    .filter((f) => f.status !== 'pass')
    .map((f) => ({ level: f.status === 'fail' ? 'error' : 'warning', title: `preflight ${f.check}`, message: f.fix ? `${f.message}. Fix: ${f.fix}` : f.message, file: f.file, line: f.line }));
}
