import { describe, expect, it } from 'vitest';
import type { RpoMeasure } from '../../src/drill/rpo';
import { drillVerdict, type VerdictInputs } from '../../src/drill/verdict';

// The drill's verdict is a pure function of what it measured and checked: each reason a drill
// fails, worded as the report's `failures` lines say it, and the objectives' met flags.

const pass = (name: string) => ({ name, status: 'pass' as const, detail: 'ok' });
const backups = (over: Partial<RpoMeasure> = {}): RpoMeasure => ({
  backupAgeSeconds: 600,
  largestGapSeconds: 1800,
  largestGap: { from: '2026-11-21T10:00:00.000Z', to: '2026-11-21T10:30:00.000Z' },
  windowSeconds: 86_400,
  backupsInWindow: 12,
  seconds: 1800,
  ...over,
});
const base = (over: Partial<VerdictInputs> = {}): VerdictInputs => ({
  checks: [pass('checksums'), pass('pg_restore exit'), { name: 'smoke: orders', status: 'skipped', detail: 'no drill.smokeSql' }],
  restored: true,
  rto: { seconds: 95.5, targetSeconds: 900 },
  rpo: { seconds: 1800, targetSeconds: 3600, backups: backups() },
  ...over,
});

describe('drill verdict', () => {
  it('passes when every check passed, something was restored and both targets were met (skipped checks do not fail it)', () => {
    expect(drillVerdict(base())).toEqual({ passed: true, failures: [], rtoMet: true, rpoMet: true });
  });

  it('a target exactly met is met', () => {
    const v = drillVerdict(base({ rto: { seconds: 900, targetSeconds: 900 }, rpo: { seconds: 3600, targetSeconds: 3600, backups: backups({ seconds: 3600 }) } }));
    expect(v).toEqual({ passed: true, failures: [], rtoMet: true, rpoMet: true });
  });

  it('fails with one line per failed check, in order, naming the check and its detail', () => {
    const v = drillVerdict(
      base({
        checks: [
          pass('checksums'),
          { name: 'row counts match backup.json', status: 'fail', detail: 'public.orders: 9 rows, expected 10' },
          { name: 'migration head matches', status: 'fail', detail: 'none, expected 0042' },
        ],
      }),
    );
    expect(v.passed).toBe(false);
    expect(v.failures).toEqual(['row counts match backup.json: public.orders: 9 rows, expected 10', 'migration head matches: none, expected 0042']);
    expect([v.rtoMet, v.rpoMet]).toEqual([true, true]);
  });

  it('fails when the RTO missed its target, with both durations', () => {
    const v = drillVerdict(base({ rto: { seconds: 1200, targetSeconds: 900 } }));
    expect(v).toEqual({ passed: false, failures: ['RTO 20m missed the target 15m'], rtoMet: false, rpoMet: true });
  });

  it('fails when the RPO missed its target because the drilled backup was too old', () => {
    const v = drillVerdict(base({ rpo: { seconds: 7200, targetSeconds: 3600, backups: backups({ backupAgeSeconds: 7200, seconds: 7200 }) } }));
    expect(v).toEqual({ passed: false, failures: ['RPO missed the target 60m: the backup was 2h old'], rtoMet: true, rpoMet: false });
  });

  it('fails when the RPO missed its target through the largest gap between backups, naming where it lies', () => {
    const v = drillVerdict(base({ rpo: { seconds: 10_800, targetSeconds: 3600, backups: backups({ backupAgeSeconds: 600, largestGapSeconds: 10_800, seconds: 10_800 }) } }));
    expect(v.failures).toEqual(['RPO missed the target 60m: the largest gap between backups was 3h (2026-11-21T10:00:00.000Z to 2026-11-21T10:30:00.000Z)']);
    expect(v.rpoMet).toBe(false);
    // A backup exactly as old as the target is not the reason: the gap is.
    const ageAtTarget = drillVerdict(base({ rpo: { seconds: 10_800, targetSeconds: 3600, backups: backups({ backupAgeSeconds: 3600, largestGapSeconds: 10_800, seconds: 10_800 }) } }));
    expect(ageAtTarget.failures[0]).toMatch(/^RPO missed the target 60m: the largest gap between backups was 3h /);
    // A gap that began before the window (no backup in it) is named from the window's start.
    const open = drillVerdict(
      base({ rpo: { seconds: 10_800, targetSeconds: 3600, backups: backups({ backupAgeSeconds: 0, largestGapSeconds: 10_800, largestGap: { from: null, to: '2026-11-21T12:00:00.000Z' } }) } }),
    );
    expect(open.failures).toEqual(['RPO missed the target 60m: the largest gap between backups was 3h (window start to 2026-11-21T12:00:00.000Z)']);
  });

  it('fails a point-in-time drill whose WAL archive lags the live server by more than the RPO target', () => {
    const v = drillVerdict(base({ rpo: { seconds: 5400, targetSeconds: 3600, backups: null } }));
    expect(v).toEqual({ passed: false, failures: ['RPO missed the target 60m: the newest archived WAL is 90m behind the live server'], rtoMet: true, rpoMet: false });
  });

  it('fails when nothing was restored, but only as the reason of last resort', () => {
    const nothing = drillVerdict(base({ checks: [pass('backup chosen')], restored: false, rto: { seconds: null, targetSeconds: 900 } }));
    expect(nothing).toEqual({ passed: false, failures: ['nothing was restored'], rtoMet: null, rpoMet: true });
    const failedRestore = drillVerdict(base({ checks: [{ name: 'pg_restore exit', status: 'fail', detail: 'exit 1' }], restored: false, rto: { seconds: null, targetSeconds: 900 } }));
    expect(failedRestore.failures).toEqual(['pg_restore exit: exit 1']);
  });

  it('lists every reason at once, checks first, then RTO, then RPO', () => {
    const v = drillVerdict(
      base({
        checks: [{ name: 'checksums', status: 'fail', detail: 'postgres.dump: sha256 differs' }],
        rto: { seconds: 3600, targetSeconds: 60 },
        rpo: { seconds: 90_000, targetSeconds: 3600, backups: backups({ backupAgeSeconds: 90_000, seconds: 90_000 }) },
      }),
    );
    expect(v.failures).toEqual(['checksums: postgres.dump: sha256 differs', 'RTO 60m missed the target 60s', 'RPO missed the target 60m: the backup was 25h old']);
    expect(v.passed).toBe(false);
  });

  it('an objective without a target, or not measured, is neither met nor missed and fails nothing', () => {
    const v = drillVerdict(base({ rto: { seconds: 99_999, targetSeconds: null }, rpo: { seconds: null, targetSeconds: 60, backups: null } }));
    expect(v).toEqual({ passed: true, failures: [], rtoMet: null, rpoMet: null });
    const noRpoTarget = drillVerdict(base({ rpo: { seconds: 99_999, targetSeconds: null, backups: backups() } }));
    expect(noRpoTarget).toEqual({ passed: true, failures: [], rtoMet: true, rpoMet: null });
  });

  it('is pure: the inputs are not changed and the same inputs give the same verdict', () => {
    const inputs = base({ checks: [{ name: 'x', status: 'fail', detail: 'y' }], rto: { seconds: 2, targetSeconds: 1 } });
    const copy = structuredClone(inputs);
    expect(drillVerdict(inputs)).toEqual(drillVerdict(inputs));
    expect(inputs).toEqual(copy);
  });
});
