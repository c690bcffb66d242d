import { readFileSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { sourceFiles } from '../helpers/source-files';
import { formatFindingsMarkdown } from '../../src/preflight/report';
import { renderMarkdownTable } from '../../src/report/table';

// Issue #23, leftovers: every Markdown table is written by src/report/table.ts, and the summaries
// that moved onto it kept their bytes.

const ROOT = resolve(__dirname, '../..');

/** Files that still write a table by hand, each with why. */
const HAND_WRITTEN: Record<string, string> = {};

describe('Markdown tables (issue #23)', () => {
  it('only src/report/table.ts writes a table separator', () => {
    const found = sourceFiles(join(ROOT, 'src'))
      .map((path) => relative(ROOT, path))
      .filter((file) => file !== 'src/report/table.ts' && !HAND_WRITTEN[file])
      .filter((file) => /\|---/.test(readFileSync(join(ROOT, file), 'utf8')));
    expect(found).toEqual([]);
  });

  it('escapes by default, or lets a caller that wrote Markdown cells keep them as they are', () => {
    const table = {
      headers: ['a', 'b'],
      rows: [
        ['x | y', 'line\nbreak'],
        ['`c\\d`', ''],
      ],
    };
    expect(renderMarkdownTable(table)).toBe('| a | b |\n|---|---|\n| x \\| y | line<br>break |\n| `c\\\\d` |  |');
    expect(renderMarkdownTable(table, { escape: 'none' })).toBe('| a | b |\n|---|---|\n| x | y | line\nbreak |\n| `c\\d` |  |');
    expect(renderMarkdownTable(table, { escape: (t) => t.toUpperCase() })).toBe('| A | B |\n|---|---|\n| X | Y | LINE\nBREAK |\n| `C\\D` |  |');
    expect(renderMarkdownTable({ headers: ['only'], rows: [] })).toBe('| only |\n|---|');
  });

  it('the preflight summary is byte for byte what it was when written by hand, pipes and newlines included', () => {
    const markdown = formatFindingsMarkdown(
      [
        { check: 'compose.config', status: 'pass', message: 'valid', file: 'compose.yml' },
        { check: 'env.required', status: 'fail', message: 'missing A|B\nand C', fix: 'set A | B', file: 'deploy/.env', line: 3 },
        { check: 'tools.docker', status: 'warn', message: 'old', fix: 'upgrade' },
      ],
      '1 failed, 1 warning, 1 passed',
      'production',
      [
        { path: 'compose.yml', role: 'compose', status: 'read', by: 'compose.config' },
        { path: 'a|b.sh', role: 'script', status: 'missing', by: 'scripts.syntax' },
      ],
    );
    expect(markdown).toBe(
      [
        '### Preflight: production',
        '',
        '1 failed, 1 warning, 1 passed',
        '',
        '| status | check | where | finding | fix |',
        '|---|---|---|---|---|',
        '| ✅ pass | `compose.config` | `compose.yml` | valid |  |',
        '| ❌ fail | `env.required` | `deploy/.env:3` | missing A\\|B and C | set A \\| B |',
        '| ⚠️ warn | `tools.docker` |  | old | upgrade |',
        '',
        '<details><summary>Files read (1 of 2 named)</summary>',
        '',
        '| status | file | role | checked by |',
        '|---|---|---|---|',
        '| read | `compose.yml` | compose | compose.config |',
        '| missing | `a\\|b.sh` | script | scripts.syntax |',
        '',
        '</details>',
        '',
      ].join('\n'),
    );
  });
});
