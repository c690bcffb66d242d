import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Catalog } from '../../src/catalog/store';
import { believedPassingDrills, chooseNewestDrill, drillVerdictProblems, evaluateGate, type GateInputs, type NewestDrillEvidence } from '../../src/drill/gate';
import { saveDrillReport, type DrillReport } from '../../src/drill/report';
import type { BackupMetadata } from '../../src/backup/metadata';
import { recordedRunning } from '../../src/deploy/history';

const NOW = new Date('2026-11-21T12:00:00Z');
const hoursAgo = (h: number) => new Date(NOW.getTime() - h * 3600_000).toISOString();

function report(overrides: Partial<DrillReport> = {}): DrillReport {
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
    checks: [
      { step: 'verify-backup', name: 'checksums', status: 'pass', detail: '3 files' },
      { step: 'restore', name: 'pg_restore exit', status: 'pass', detail: 'exit 0' },
      { step: 'check-data', name: 'row counts match backup.json', status: 'pass', detail: '5 tables' },
      { step: 'smoke-queries', name: 'smoke queries', status: 'skipped', detail: 'none' },
    ],
    rto: { seconds: 60, targetSeconds: 600, met: true, phases: {} },
    rpo: { seconds: 7200, targetSeconds: 14400, met: true, detail: null },
    passed: true,
    failures: [],
    ...overrides,
  };
}
const entry = (r: DrillReport) => ({ id: r.id, metadata: r });
const backup = (id: string, createdAt: string, verified?: boolean) =>
  ({ id, createdAt, ...(verified === undefined ? {} : { verified: { at: createdAt, ok: verified, checks: [] } }) }) as unknown as BackupMetadata;
const good: NewestDrillEvidence = { integrity: { ok: true, detail: '3 file(s) match' }, signature: { ok: true, detail: 'signed by key abc' }, backup: { ok: true, detail: 'b1: 3 file(s) match' } };
const base: Omit<GateInputs, 'drills' | 'backups'> = { environment: 'production', maxDrillAgeSeconds: 7 * 86400, rpoSeconds: 4 * 3600, rtoSeconds: 600, now: NOW, evidence: good };

describe('release gate', () => {
  it('passes a genuine passing drill with a verified backup within RPO, RTO and RPO within the targets in force', () => {
    const result = evaluateGate({ ...base, drills: [entry(report())], backups: [backup('b2', hoursAgo(1)), backup('b1', hoursAgo(2))] });
    expect(result.reasons).toEqual([]);
    expect(result.passed).toBe(true);
    expect(result.newestVerifiedBackupId).toBe('b1');
    expect(result.notes).toEqual([]);
  });

  it('recomputes the verdict: passed: true over a failed check, a failed step, a missed objective or no restore fails', () => {
    const edited = report({ checks: [...report().checks.slice(0, 2), { step: 'check-data', name: 'row counts match backup.json', status: 'fail', detail: 'orders: 10 rows, expected 12' }] });
    const result = evaluateGate({ ...base, drills: [entry(edited)], backups: [backup('b1', hoursAgo(2))] });
    expect(result.passed).toBe(false);
    expect(result.reasons[0]).toMatch(/the newest drill d1 did not pass: its check "row counts match backup.json" failed \(orders: 10 rows, expected 12\).*contradicts its passed: true/);
    // The failed drill does not vouch for its backup either.
    expect(result.newestVerifiedBackupId).toBeNull();

    expect(drillVerdictProblems(report({ steps: [{ id: 'restore', title: 'Restore', status: 'failed' }] })).join()).toMatch(/step "Restore" failed/);
    expect(drillVerdictProblems(report({ checks: report().checks.filter((c) => c.step !== 'restore') })).join()).toMatch(/no successful restore/);
    expect(drillVerdictProblems(report({ checks: [{ step: 'restore', name: 'x', status: 'passed' as never, detail: '' }] })).join()).toMatch(/no valid result/);
    expect(drillVerdictProblems(report({ rpo: { seconds: 1, targetSeconds: 0, met: false, detail: null } })).join()).toMatch(/missed its RPO/);
    expect(drillVerdictProblems(report({ failures: ['something'] })).join()).toMatch(/lists failures/);
    expect(drillVerdictProblems(report({ passed: 'true' as never })).join()).toMatch(/it failed/);
  });

  it('measures RTO and RPO against the targets in force now, not the ones the report recorded', () => {
    const loose = report({ rto: { seconds: 900, targetSeconds: 3600, met: true, phases: {} }, rpo: { seconds: 6 * 3600, targetSeconds: 86400, met: true, detail: null } });
    const result = evaluateGate({ ...base, drills: [entry(loose)], backups: [backup('b1', hoursAgo(2), true)] });
    expect(result.reasons).toEqual(["the newest drill's RTO was 15m; the target is 10m", "the newest drill's RPO was 6h; the target is 4h"]);
    const unmeasured = evaluateGate({ ...base, drills: [entry(report({ rpo: { seconds: null, targetSeconds: null, met: null, detail: null } }))], backups: [backup('b1', hoursAgo(2), true)] });
    expect(unmeasured.reasons).toEqual(['no drill of production measured an RPO']);
  });

  it('never takes a future-dated report as the newest drill: it fails its own check and the newer failed drill still counts', () => {
    const failed = report({
      id: 'd-real',
      createdAt: hoursAgo(0.5),
      passed: false,
      failures: ['checksums: postgres.dump differs'],
      checks: [{ step: 'verify-backup', name: 'checksums', status: 'fail', detail: 'postgres.dump differs' }],
    });
    const future = report({ id: 'd-future', createdAt: new Date(NOW.getTime() + 30 * 86400_000).toISOString() });
    expect(chooseNewestDrill([entry(future), entry(failed)], 'production', NOW)?.id).toBe('d-real');
    const result = evaluateGate({ ...base, drills: [entry(future), entry(failed)], backups: [backup('b1', hoursAgo(2), true)] });
    expect(result.passed).toBe(false);
    expect(result.newestDrillId).toBe('d-real');
    expect(result.reasons[0]).toMatch(/^drill report d-future is dated 2026-12-21T12:00:00.000Z, 30d in the future \(allowed clock skew 5m\)/);
    expect(result.reasons[1]).toMatch(/the newest drill d-real failed: checksums: postgres.dump differs/);
    // A few seconds ahead is clock skew, not a forgery; a finishedAt in the future is caught too.
    expect(evaluateGate({ ...base, drills: [entry(report({ createdAt: new Date(NOW.getTime() + 60_000).toISOString() }))], backups: [backup('b1', hoursAgo(2), true)] }).passed).toBe(true);
    const lateFinish = evaluateGate({ ...base, drills: [entry(report({ finishedAt: new Date(NOW.getTime() + 3600_000).toISOString() }))], backups: [backup('b1', hoursAgo(2), true)] });
    expect(lateFinish.reasons[0]).toMatch(/drill report d1 finished .* 60m in the future/);
    const garbage = evaluateGate({ ...base, drills: [entry(report({ createdAt: 'tomorrow' }))], backups: [backup('b1', hoursAgo(2), true)] });
    expect(garbage.reasons[0]).toMatch(/no readable timestamp/);
  });

  it('refuses a report copied from another environment or stored under another id', () => {
    const copied = report({ environment: 'production' });
    const result = evaluateGate({ ...base, environment: 'staging', drills: [entry(copied)], backups: [backup('b1', hoursAgo(2), true)] });
    expect(result.passed).toBe(false);
    expect(result.reasons[0]).toMatch(/drill report d1 was recorded for environment "production", not staging/);
    expect(result.reasons).toContain('no restore drill has run for staging: run lifeline drill --env staging');
    const renamed = evaluateGate({ ...base, drills: [{ id: 'd9', metadata: report() }], backups: [backup('b1', hoursAgo(2), true)] });
    expect(renamed.reasons[0]).toMatch(/stored as d9 but its report.json says "d1"/);
  });

  it('fails on a broken report checksum, a failed signature or a drilled backup that is gone, naming each', () => {
    const run = (evidence: NewestDrillEvidence) => evaluateGate({ ...base, evidence, drills: [entry(report())], backups: [backup('b1', hoursAgo(2))] });
    expect(run({ ...good, integrity: { ok: false, detail: 'report.json has sha256 aa, SHA256SUMS says bb' } }).reasons).toEqual([
      "the newest drill's report d1 fails its checksums: report.json has sha256 aa, SHA256SUMS says bb",
      'production has no verified backup: run lifeline verify latest --env production or lifeline drill --env production',
    ]);
    expect(run({ ...good, signature: { ok: false, detail: 'it is not signed' } }).reasons[0]).toBe("the newest drill's report d1 fails signature verification: it is not signed");
    expect(run({ ...good, backup: { ok: false, detail: 'backup b1 is no longer in the catalog (deleted or pruned): run a new drill' } }).reasons[0]).toMatch(
      /the backup the newest drill d1 restored cannot be relied on: backup b1 is no longer in the catalog/,
    );
    // No evidence at all is not a pass.
    expect(evaluateGate({ ...base, evidence: undefined, drills: [entry(report())], backups: [backup('b1', hoursAgo(2), true)] }).passed).toBe(false);
  });

  it('says plainly when signatures are not checked, without failing for it', () => {
    const result = evaluateGate({ ...base, evidence: { ...good, signature: null }, drills: [entry(report())], backups: [backup('b1', hoursAgo(2))] });
    expect(result.passed).toBe(true);
    expect(result.checks.find((c) => c.name === 'newest drill report signature')).toMatchObject({ value: 'not checked', limit: 'no signing policy configured' });
    expect(result.notes[0]).toMatch(/drill report signatures are NOT checked/);
  });

  it('does not count a future-dated backup toward the RPO', () => {
    const result = evaluateGate({ ...base, drills: [entry(report())], backups: [backup('b9', new Date(NOW.getTime() + 86400_000).toISOString(), true), backup('b1', hoursAgo(5), true)] });
    expect(result.reasons).toEqual([expect.stringMatching(/^backup b9 is dated .* in the future/), 'the newest verified backup b1 is 5h old; the RPO target is 4h']);
  });

  it('fails closed with no drill, no backups and no targets', () => {
    const result = evaluateGate({ environment: 'staging', maxDrillAgeSeconds: 86400, drills: [], backups: [], now: NOW });
    expect(result.reasons).toEqual([
      'no restore drill has run for staging: run lifeline drill --env staging',
      'no drill within 24h for staging',
      'no RPO target for staging: set rpo: in lifeline.yml or pass --rpo',
      'no RTO target for staging: set rto: in lifeline.yml or pass --rto',
    ]);
  });
});

describe('what retention protects', () => {
  it('believes only drills the gate would: a future-dated or self-contradicting "passing" report protects nothing', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'lifeline-gate-unit-'));
    try {
      const catalog = new Catalog(dir);
      await saveDrillReport(catalog, report({ id: 'd-real', backup: { id: 'b-real', createdAt: hoursAgo(2) } }), '# real\n');
      await saveDrillReport(catalog, report({ id: 'd-future', createdAt: new Date(NOW.getTime() + 30 * 86400_000).toISOString(), backup: { id: 'b-forged', createdAt: hoursAgo(3) } }), '# forged\n');
      const contradicting = report({ id: 'd-edited', createdAt: hoursAgo(0.5), backup: { id: 'b-edited', createdAt: hoursAgo(3) } });
      contradicting.checks = [...contradicting.checks, { step: 'check-data', name: 'row counts', status: 'fail', detail: 'orders differ' }];
      await saveDrillReport(catalog, contradicting, '# edited\n');
      expect(await believedPassingDrills(catalog, 'production', NOW)).toEqual([{ id: 'd-real', backupId: 'b-real' }]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('the deploy history in the gate', () => {
  const event = (result: 'started' | 'succeeded' | 'failed', running: string | null) => ({
    action: 'deploy' as const,
    from: 'v1',
    to: 'v2',
    result,
    running,
    runningDeployment: null,
    deployment: null,
    at: hoursAgo(1),
    by: 'ci',
    durationsMs: {},
  });
  const history = (events: ReturnType<typeof event>[], corrupt: number[] = []) => ({ events, lines: events.map((_, i) => i + 1), corrupt: corrupt.map((line) => ({ line, excerpt: '{"torn' })) });

  it('reads what runs from the last event, and calls a killed, unknown-ending or torn history unknown', () => {
    expect(recordedRunning(history([]))).toEqual({ state: 'none' });
    expect(recordedRunning(history([event('succeeded', 'v2')]))).toEqual({ state: 'known', release: 'v2' });
    expect(recordedRunning(history([event('succeeded', 'v1'), event('started', null)]))).toMatchObject({ state: 'unknown', detail: expect.stringMatching(/deploy of "v2" started .* never finished/) });
    expect(recordedRunning(history([event('failed', null)]))).toMatchObject({ state: 'unknown', detail: expect.stringMatching(/running release is unknown/) });
    // A torn line before the last event is that reader's concern; one after it hides what happened last.
    expect(recordedRunning(history([event('succeeded', 'v2')], [3]))).toMatchObject({ state: 'unknown', detail: expect.stringMatching(/line 3 of history\.ndjson/) });
    expect(recordedRunning(history([event('succeeded', 'v2'), event('succeeded', 'v2')], [1]))).toEqual({ state: 'known', release: 'v2' });
  });

  it('fails when what runs is unknown, naming the fix, and passes otherwise', () => {
    const inputs = { ...base, drills: [entry(report())], backups: [backup('b1', hoursAgo(2), true)] };
    expect(evaluateGate(inputs).passed).toBe(true);
    const unknown = evaluateGate({ ...inputs, deployHistory: recordedRunning(history([event('succeeded', 'v1'), event('started', null)])) });
    expect(unknown.passed).toBe(false);
    expect(unknown.reasons).toEqual([expect.stringMatching(/does not say what runs: the deploy of "v2" started .*lifeline rollback --env production --to <release>/)]);
    const known = evaluateGate({ ...inputs, deployHistory: { state: 'known', release: 'v1' } });
    expect(known.passed).toBe(true);
    expect(known.checks.find((c) => c.name === 'running release recorded')).toMatchObject({ value: 'v1', passed: true });
  });
});

describe('the gate and deploy agree on an unfinished history', () => {
  it('a refused deploy recorded after a killed one does not hide the killed one', () => {
    const killed = {
      action: 'deploy' as const,
      from: 'v1',
      to: 'v2',
      result: 'started' as const,
      running: null,
      runningDeployment: null,
      deployment: 'd2',
      at: hoursAgo(2),
      by: 'ci',
      durationsMs: {},
    };
    const refused = {
      action: 'deploy' as const,
      from: 'v1',
      to: 'v3',
      result: 'refused' as const,
      running: 'v1',
      runningDeployment: null,
      deployment: null,
      at: hoursAgo(1),
      by: 'ci',
      durationsMs: {},
    };
    const history = { events: [killed, refused], lines: [1, 2], corrupt: [] };
    expect(recordedRunning(history)).toMatchObject({ state: 'unknown', detail: expect.stringMatching(/deploy of "v2" started .* never finished/) });
  });
});
