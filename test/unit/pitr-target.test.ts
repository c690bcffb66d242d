import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseRecoveryTargetTime } from '../../src/postgres/pgbackrest';
import { lifeline } from '../helpers/cli';

function usageFailure(value: string): { code: string; exitCode: number; message: string; fix: string } {
  try {
    parseRecoveryTargetTime(value);
  } catch (error) {
    return error as { code: string; exitCode: number; message: string; fix: string };
  }
  throw new Error(`${value} was accepted`);
}

describe('point-in-time target input (issue 16 item 9)', () => {
  it('accepts every offset spelling PostgreSQL accepts, and each names the same instant', () => {
    const utc = ['2026-11-21T23:38:40Z', '2026-11-21 23:38:40z', '2026-11-21 23:38:40+00', '2026-11-21 23:38:40+00:00', '2026-11-21 23:38:40+0000', '2026-11-21T23:38:40 -00'];
    for (const spelling of utc) {
      expect(parseRecoveryTargetTime(spelling), spelling).toEqual({ text: '2026-11-21 23:38:40+00', at: new Date('2026-11-21T23:38:40.000Z') });
    }
    // One instant, written in four zones.
    const instant = ['2026-11-21 18:38:40-05', '2026-11-21 18:38:40-0500', '2026-11-22 05:08:40+05:30', '2026-11-22T05:08:40+0530'];
    for (const spelling of instant) expect(parseRecoveryTargetTime(spelling).text, spelling).toBe('2026-11-21 23:38:40+00');
  });

  it('keeps microseconds exactly and normalises to what pgBackRest reads', () => {
    expect(parseRecoveryTargetTime('2026-11-21T23:38:40.281106Z').text).toBe('2026-11-21 23:38:40.281106+00');
    expect(parseRecoveryTargetTime('2026-11-22 01:38:40.000001+02').text).toBe('2026-11-21 23:38:40.000001+00');
    expect(parseRecoveryTargetTime('2026-11-21 23:38:40.281106+00').at.toISOString()).toBe('2026-11-21T23:38:40.281Z');
    // Minutes without seconds; an offset that crosses midnight and a year boundary.
    expect(parseRecoveryTargetTime('2026-11-21 23:38+00').text).toBe('2026-11-21 23:38:00+00');
    expect(parseRecoveryTargetTime('2027-01-01 01:00:00+05:30').text).toBe('2026-12-31 19:30:00+00');
    // A real leap day.
    expect(parseRecoveryTargetTime('2028-02-29 12:00:00Z').text).toBe('2028-02-29 12:00:00+00');
  });

  it.each([
    ['2026-02-30 10:00:00Z', /2026-02 has 28 days/],
    ['2027-02-29T10:00:00Z', /2027-02 has 28 days/],
    ['2026-04-31 10:00:00+00', /2026-04 has 30 days/],
    ['2026-13-01 10:00:00+00', /no month 13/],
    ['2026-00-10 10:00:00+00', /no month 00/],
    ['2026-11-00 10:00:00+00', /has 30 days/],
    ['2026-11-21 25:00:00+00', /not a time of day: 25:00:00/],
    ['2026-11-21 24:00+00', /not a time of day: 24:00/],
    ['2026-11-21 23:60:00+00', /not a time of day/],
    ['2026-11-21 23:59:60+00', /not a time of day/],
    ['2026-11-21 23:00:00+16', /impossible offset \+16/],
    ['2026-11-21 23:00:00+05:60', /impossible offset \+05:60/],
    ['2026-11-21 23:38:40', /not a timestamp with a time zone/],
    ['2026-11-21', /not a timestamp with a time zone/],
    ['yesterday', /not a timestamp with a time zone/],
    ['2026-11-21 23:38:40 UTC', /not a timestamp with a time zone/],
    ['2026-11-21 23:38:40.1234567Z', /not a timestamp with a time zone/],
    ['2026-11-21 23:38:40+5', /not a timestamp with a time zone/],
    ["2026-11-21 23:38:40+00'; DROP", /not a timestamp with a time zone/],
  ])('refuses %s with exit 2 and the accepted format', (value, why) => {
    const error = usageFailure(value);
    expect(error).toMatchObject({ code: 'BAD_PITR_TIME', exitCode: 2 });
    expect(error.message).toMatch(why);
    expect(error.fix).toContain('YYYY-MM-DD HH:MM[:SS[.ffffff]]');
    expect(error.fix).toContain('+HH:MM');
  });

  it('lifeline drill --pitr with an impossible date exits 2 before anything starts (no cluster, no report)', async () => {
    const store = mkdtempSync(join(tmpdir(), 'lifeline-pitr-input-'));
    // The CLI's own temporary directory: a cluster it started would show here, and no other run's can.
    const tmp = mkdtempSync(join(tmpdir(), 'lifeline-pitr-input-tmp-'));
    try {
      const run = await lifeline(['drill', '--pitr', '2026-02-30T10:00:00+00', '--store', store, '--json'], {
        env: { DATABASE_URL: undefined, LIFELINE_CONFIG: undefined, LIFELINE_STORE: undefined, TMPDIR: tmp },
      });
      expect(run.code).toBe(2);
      const { error } = JSON.parse(run.stdout);
      expect(error).toMatchObject({ code: 'BAD_PITR_TIME' });
      expect(error.message).toContain('2026-02 has 28 days');
      expect(error.fix).toContain('YYYY-MM-DD');
      // No drill report (the run log of the command itself may be there).
      expect(existsSync(join(store, 'default', 'drills'))).toBe(false);
      expect(readdirSync(tmp).filter((n) => n.startsWith('lifeline-pitr-'))).toEqual([]);
    } finally {
      rmSync(tmp, { recursive: true, force: true });
      rmSync(store, { recursive: true, force: true });
    }
  });
});
