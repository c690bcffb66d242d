/** A table as plain data, rendered for a terminal or for Markdown by the same caller. */
export interface Table {
  headers: string[];
  rows: string[][];
}

/** Column-aligned text for a terminal. */
export function renderTextTable(table: Table): string {
  const widths = table.headers.map((h, i) => Math.max(h.length, ...table.rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  return [line(table.headers), line(widths.map((w) => '-'.repeat(w))), ...table.rows.map((r) => line(table.headers.map((_, i) => r[i] ?? '')))].join('\n');
}

export interface MarkdownTableOptions {
  /**
   * How each cell is made safe; default escapeMarkdownCell. `'none'` when the caller wrote every
   * cell as Markdown itself (code spans, bold) and escaped what it put inside them.
   */
  escape?: ((text: string) => string) | 'none';
}

/** A GitHub-flavoured Markdown table; cells are escaped so a `|` or newline in a detail cannot break it. */
export function renderMarkdownTable(table: Table, options: MarkdownTableOptions = {}): string {
  const escape = options.escape === 'none' ? (text: string) => text : (options.escape ?? escapeMarkdownCell);
  const row = (cells: string[]) => `| ${cells.map(escape).join(' | ')} |`;
  return [row(table.headers), `|${table.headers.map(() => '---').join('|')}|`, ...table.rows.map((r) => row(table.headers.map((_, i) => r[i] ?? '')))].join('\n');
}

export function escapeMarkdownCell(text: string): string {
  return text.replace(/\\/g, '\\\\').replace(/\|/g, '\\|').replace(/\r?\n/g, '<br>');
}

export interface ChartSeries {
  /** `bar` or `line`, as Mermaid's xychart-beta draws them. */
  kind: 'bar' | 'line';
  values: number[];
}

export interface TrendChart {
  title: string;
  xLabels: string[];
  yLabel: string;
  series: ChartSeries[];
}

/**
 * A Mermaid `xychart-beta` block (GitHub renders it in job summaries and Markdown files).
 * Labels are quoted; quotes inside them are dropped because Mermaid has no escape for them.
 */
export function renderMermaidTrend(chart: TrendChart): string {
  const quote = (text: string) => `"${text.replace(/"/g, "'")}"`;
  const all = chart.series.flatMap((s) => s.values).filter(Number.isFinite);
  const max = all.length ? Math.max(...all) : 1;
  const round = (n: number) => Math.round(n * 100) / 100;
  return [
    '```mermaid',
    'xychart-beta',
    `  title ${quote(chart.title)}`,
    `  x-axis [${chart.xLabels.map(quote).join(', ')}]`,
    `  y-axis ${quote(chart.yLabel)} 0 --> ${round(max * 1.1) || 1}`,
    ...chart.series.map((s) => `  ${s.kind} [${s.values.map((v) => (Number.isFinite(v) ? round(v) : 0)).join(', ')}]`),
    '```',
  ].join('\n');
}

/** ✅/❌ words that read the same in a terminal and a summary. */
export function verdict(passed: boolean): string {
  return passed ? 'pass' : 'FAIL';
}
