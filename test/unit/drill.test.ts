import { describe, expect, it } from 'vitest';
import { normalizeHost } from '../../src/drill/isolation';
import { renderDrillMarkdown, type DrillReport } from '../../src/drill/report';
import { measureRpo } from '../../src/drill/rpo';
import { buildRunbook, restoreSteps } from '../../src/drill/runbook';
import { parseSmokeQueries } from '../../src/drill/smoke';
import { parseRecoveryTargetTime } from '../../src/postgres/pgbackrest';
import { renderMarkdownTable, renderMermaidTrend } from '../../src/report/table';
import { resolveFromConfig } from '../../src/settings/resolve';

const NOW = new Date('2026-11-21T12:00:00Z');
const hoursAgo = (h: number) => new Date(NOW.getTime() - h * 3600_000).toISOString();

describe('RPO', () => {
  it('is the worse of the backup age and the largest gap, counting the stretch up to now', () => {
    const backups = [hoursAgo(30), hoursAgo(20), hoursAgo(8), hoursAgo(2)].map((createdAt, i) => ({ id: String(i), createdAt, usable: true }));
    const rpo = measureRpo(backups, hoursAgo(2), NOW, 24 * 3600);
    expect(rpo.backupAgeSeconds).toBe(2 * 3600);
    // 30h -> 20h straddles the window start and counts in full.
    expect(rpo.largestGapSeconds).toBe(12 * 3600);
    expect(rpo.largestGap).toEqual({ from: hoursAgo(20), to: hoursAgo(8) });
    expect(rpo.seconds).toBe(12 * 3600);
    expect(rpo.backupsInWindow).toBe(3);
  });

  it('does not count a damaged backup as a recovery point', () => {
    const backups = [
      { id: 'a', createdAt: hoursAgo(10), usable: true },
      { id: 'b', createdAt: hoursAgo(5), usable: false },
    ];
    expect(measureRpo(backups, hoursAgo(10), NOW, 86400).largestGapSeconds).toBe(10 * 3600);
  });

  it('counts no gap before the first backup ever taken', () => {
    expect(measureRpo([{ id: 'a', createdAt: hoursAgo(1), usable: true }], hoursAgo(1), NOW, 7 * 86400).largestGapSeconds).toBe(3600);
  });

  it('exposes the whole window when there is no usable backup', () => {
    expect(measureRpo([], hoursAgo(1), NOW, 86400).largestGapSeconds).toBe(86400);
  });
});

describe('smoke query files', () => {
  it('reads blocks of name, expect and a multi-line query', () => {
    const queries = parseSmokeQueries(['-- name: orders', '-- expect: 12', 'SELECT count(*)', '  FROM orders;', '', '-- expect: NULL', 'SELECT NULL'].join('\n'), 'smoke.sql');
    expect(queries).toEqual([
      { name: 'orders', expect: '12', sql: 'SELECT count(*)\n  FROM orders', line: 1 },
      { name: 'SELECT NULL', expect: 'NULL', sql: 'SELECT NULL', line: 6 },
    ]);
  });

  it.each([
    ['SELECT 1', /a query without an expected value/],
    ['-- expect: 1\n', /is not followed by a query/],
    ['-- expect: 1\nSELECT 1; SELECT 2', /more than one statement/],
    ['-- just a comment', /holds no smoke queries/],
  ])('rejects %j with a fix (exit 2)', (text, message) => {
    let thrown: unknown;
    try {
      parseSmokeQueries(text, 'smoke.sql');
    } catch (error) {
      thrown = error;
    }
    expect(thrown).toMatchObject({ exitCode: 2, message: expect.stringMatching(message), fix: expect.any(String) });
  });
});

describe('drill isolation', () => {
  it('treats every loopback spelling and Unix sockets as one host', () => {
    expect(new Set(['localhost', '127.0.0.1', '::1', '[::1]', 'LOCALHOST', '/var/run/postgresql', '127.0.1.1'].map(normalizeHost))).toEqual(new Set(['loopback']));
    expect(normalizeHost('db.internal')).toBe('db.internal');
  });
});

describe('point-in-time targets', () => {
  it('needs a zone and normalizes to what pgBackRest reads', () => {
    expect(parseRecoveryTargetTime('2026-11-21T23:38:40.281106Z').text).toBe('2026-11-21 23:38:40.281106+00');
    expect(parseRecoveryTargetTime('2026-11-21 23:38:40+02').at.toISOString()).toBe('2026-11-21T21:38:40.000Z');
    expect(() => parseRecoveryTargetTime('2026-11-21 23:38:40')).toThrow(/time zone/);
    expect(() => parseRecoveryTargetTime('yesterday')).toThrow(/time zone/);
  });
});

function drill(overrides: Partial<DrillReport> = {}): DrillReport {
  return {
    schemaVersion: 1,
    id: 'd1',
    createdAt: hoursAgo(1),
    finishedAt: hoursAgo(1),
    environment: 'production',
    mode: 'logical',
    backup: { id: 'b1', createdAt: hoursAgo(2) },
    target: { kind: 'throwaway-cluster', description: 'throwaway' },
    steps: [],
    checks: [{ step: 'verify-backup', name: 'checksums', status: 'pass', detail: 'ok | fine' }],
    rto: { seconds: 60, targetSeconds: 600, met: true, phases: {} },
    rpo: { seconds: 7200, targetSeconds: 14400, met: true, detail: null },
    passed: true,
    failures: [],
    ...overrides,
  };
}

// The release gate's tests live in test/unit/gate.test.ts.

describe('runbook', () => {
  const settingsOf = (name: string, env: Record<string, unknown>) =>
    resolveFromConfig({ path: '/etc/lifeline.yml', config: { version: 1, environments: { [name]: env } } } as never, { env: name }, { env: {}, cwd: '/' });

  it('orders environments by restore priority and gives every step a command, a check and an owner', () => {
    const runbook = buildRunbook([settingsOf('staging', { restorePriority: 2 }), settingsOf('production', { restorePriority: 1, owner: 'ops-oncall', rto: '30m' })]);
    expect(runbook.map((e) => e.name)).toEqual(['production', 'staging']);
    for (const step of runbook[0]!.steps) {
      expect(step.command).not.toBe('');
      expect(step.verification).not.toBe('');
      expect(step.owner).toBe('ops-oncall');
    }
    expect(runbook[1]!.steps[0]!.owner).toMatch(/set owner/);
  });

  it('uses pgBackRest steps for an environment with physical backups', () => {
    const settings = settingsOf('production', { postgres: { physical: { stanza: 'main', configFile: '/etc/pgbackrest.conf' } } });
    const steps = restoreSteps(settings, 'pitr');
    expect(buildRunbook([settings])[0]!.pitrSteps).toEqual(steps);
    expect(steps.find((s) => s.id === 'restore')!.command).toContain('pgbackrest --config=/etc/pgbackrest.conf --stanza=main');
    expect(steps.map((s) => s.id)).not.toContain('verify-backup');
  });
});

describe('report rendering', () => {
  it('escapes table cells and draws a trend of recent drills', () => {
    expect(renderMarkdownTable({ headers: ['a'], rows: [['x | y\nz']] })).toBe('| a |\n|---|\n| x \\| y<br>z |');
    const markdown = renderDrillMarkdown(drill({ id: 'd2' }), [drill({ rto: { seconds: 30, targetSeconds: 600, met: true, phases: {} } })]);
    expect(markdown).toContain('```mermaid\nxychart-beta');
    expect(markdown).toContain('  bar [30, 60]');
    // 600 s is more than 4x the largest bar (60 s): named, not drawn; RPO's 4 h target over 2 h bars is drawn.
    expect(markdown).not.toContain('  line [600, 600]');
    expect(markdown).toContain('target 10m, far above every drill (not drawn)');
    expect(markdown).toContain('  line [4, 4]');
    expect(markdown).toContain('ok \\| fine');
  });

  it('draws RTO and RPO readably: units that suit the values, a far target named instead of flattening the bars, failed drills marked', () => {
    const old = drill({
      id: 'd0',
      createdAt: '2026-12-01T03:17:00.000Z',
      passed: false,
      rto: { seconds: 6.9, targetSeconds: 3600, met: true, phases: {} },
      rpo: { seconds: 5400, targetSeconds: 3600, met: false, detail: null },
    });
    const now = drill({
      id: 'd1',
      createdAt: '2026-12-02T03:17:00.000Z',
      rto: { seconds: 12.4, targetSeconds: 3600, met: true, phases: {} },
      rpo: { seconds: 1200, targetSeconds: 3600, met: true, detail: null },
    });
    const markdown = renderDrillMarkdown(now, [old]);
    const charts = markdown.split('```mermaid').slice(1);
    expect(charts).toHaveLength(2);
    const [rto, rpo] = charts as [string, string];
    // RTO: seconds; the 60-minute target would flatten 7-12 s bars, so the title names it and no line is drawn.
    expect(rto).toContain('title "RTO per drill, production, in seconds; target 60m, far above every drill (not drawn)"');
    expect(rto).toContain('y-axis "RTO (seconds)" 0 --> 13.64');
    expect(rto).toContain('  bar [6.9, 12.4]');
    expect(rto).not.toContain('  line');
    // The failed drill is marked on the axis.
    expect(rto).toContain('x-axis ["12-01 03:17 FAILED", "12-02 03:17"]');
    // RPO: minutes, target drawn (it is within 4x).
    expect(rpo).toContain('title "RPO per drill, production, in minutes; line: target 60m"');
    expect(rpo).toContain('  bar [90, 20]');
    expect(rpo).toContain('  line [60, 60]');
    // And a table that reads without Mermaid: newest first, share of the target, misses and failures in bold.
    expect(markdown).toContain('| d1 | 2026-12-02 03:17 | passed | 12.4s (0.3% of 60m) | 20m (33% of 60m) |');
    expect(markdown).toContain('| d0 | 2026-12-01 03:17 | **FAILED** | 6.9s (0.2% of 60m) | 90m (150% of 60m) **missed** |');
  });

  it('keeps a Mermaid chart valid with quotes in labels', () => {
    expect(renderMermaidTrend({ title: 'a "b"', xLabels: ['x"'], yLabel: 's', series: [{ kind: 'bar', values: [1] }] })).toContain('title "a \'b\'"');
  });
});
