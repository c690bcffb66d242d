import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Catalog } from '../../src/catalog/store';
import { estimateBackupBytes } from '../../src/backup/estimate';
import { LocalRunner } from '../../src/runner/runner';
import { runCli } from '../../src/cli/main';
import type { CommandSpec } from '../../src/commands/spec';
import { createMemoryLogger, createStderrLogger, SecretMasker } from '../../src/logger';
import { progressReporter } from '../../src/postgres/progress';
import { isRestoreProgressLine, restoredObjects } from '../../src/postgres/restore-pipeline';
import { formatDuration, Progress, progressIntervalFrom, progressNumbers, renderProgress, startProgress, TerminalLine } from '../../src/report/progress';

/** A terminal stand-in: applies \r and ESC[K the way a terminal does, and keeps the raw bytes. */
function fakeTerminal() {
  let raw = '';
  const write = (text: string) => void (raw += text);
  /** The screen: finished lines, and the current one. */
  const screen = () => {
    const lines: string[] = [];
    let current = '';
    let col = 0;
    for (let i = 0; i < raw.length; i++) {
      const ch = raw[i]!;
      if (ch === '\r') col = 0;
      else if (ch === '\n') {
        lines.push(current);
        current = '';
        col = 0;
      } else if (raw.startsWith('\x1b[K', i)) {
        current = current.slice(0, col);
        i += 2;
      } else {
        current = current.slice(0, col) + ch + current.slice(col + 1);
        col++;
      }
    }
    return { lines, current };
  };
  return { write, screen, raw: () => raw };
}

function clock(start = 1_000_000) {
  let t = start;
  return { now: () => t, advance: (ms: number) => void (t += ms) };
}

describe('progress numbers and rendering', () => {
  it('computes percent, rate and ETA from done, total and elapsed time', () => {
    expect(progressNumbers({ phase: 'x', unit: 'bytes', done: 25, total: 100, elapsedMs: 5000 })).toEqual({ rate: 5, percent: 25, etaSeconds: 15 });
    // Under a second the rate is noise: no ETA yet.
    expect(progressNumbers({ phase: 'x', unit: 'bytes', done: 25, total: 100, elapsedMs: 500 })).toEqual({ rate: 50, percent: 25 });
    // Nothing done yet: no ETA (never a division by zero or Infinity).
    expect(progressNumbers({ phase: 'x', unit: 'count', done: 0, total: 10, elapsedMs: 5000 })).toEqual({ rate: 0, percent: 0 });
    // No total: rate only.
    expect(progressNumbers({ phase: 'x', unit: 'bytes', done: 3000, elapsedMs: 2000 })).toEqual({ rate: 1500 });
    // An estimate that was passed: 99%, no ETA; an exact total that is reached: 100%, ETA 0.
    expect(progressNumbers({ phase: 'x', unit: 'bytes', done: 150, total: 100, estimated: true, elapsedMs: 5000 })).toEqual({ rate: 30, percent: 99 });
    expect(progressNumbers({ phase: 'x', unit: 'count', done: 10, total: 10, elapsedMs: 5000 })).toEqual({ rate: 2, percent: 100, etaSeconds: 0 });
    // Elapsed 0 and a zero total never produce NaN.
    expect(progressNumbers({ phase: 'x', unit: 'bytes', done: 10, total: 0, elapsedMs: 0 })).toEqual({ rate: 0 });
    // Steps of unequal length (drill, verify): percent, never an ETA from a rate of steps.
    expect(progressNumbers({ phase: 'x', unit: 'count', done: 2, total: 7, steps: true, elapsedMs: 60_000 })).toEqual({ rate: 2 / 60, percent: 28 });
    expect(formatDuration(45)).toBe('45s');
    expect(formatDuration(185)).toBe('3m05s');
    expect(formatDuration(7620)).toBe('2h07m');
  });

  it('renders a phase with done of total, percent and ETA, or bytes and rate without a total', () => {
    expect(renderProgress({ phase: 'pg_dump', unit: 'bytes', done: 25_000_000, total: 100_000_000, estimated: true, elapsedMs: 5000 })).toBe(
      'pg_dump: 25.0 MB of ~100.0 MB (25%) at 5.0 MB/s, ETA 15s',
    );
    expect(renderProgress({ phase: 'pg_dump', unit: 'bytes', done: 12_300_000, elapsedMs: 3000 })).toBe('pg_dump: 12.3 MB at 4.1 MB/s');
    expect(renderProgress({ phase: 'restore', unit: 'count', noun: 'objects', done: 120, total: 450, elapsedMs: 60_000 })).toBe('restore: 120/450 objects (26%), ETA 2m45s');
    expect(renderProgress({ phase: 'restore', unit: 'count', noun: 'objects', done: 7, elapsedMs: 1000 })).toBe('restore: 7 objects');
    expect(renderProgress({ phase: 'drill step 3/7: Restore the database', unit: 'count', noun: 'steps done', done: 2, total: 7, steps: true, elapsedMs: 9000 })).toBe(
      'drill step 3/7: Restore the database: 2/7 steps done (28%)',
    );
  });
});

describe('restore progress from pg_restore --verbose', () => {
  it('counts one object per table-of-contents entry, serial and parallel (PostgreSQL 15 output), and never an error line', () => {
    // A 12-entry archive restored with --single-transaction, then with --jobs=2 (real output).
    const serial = [
      'connecting to database for restore',
      'creating TABLE "public.a"',
      'creating COMMENT "public.TABLE a"',
      'creating TABLE "public.b"',
      'creating SEQUENCE "public.s"',
      'creating VIEW "public.v"',
      'processing data for table "public.a"',
      'processing data for table "public.b"',
      'executing SEQUENCE SET s',
      'creating CONSTRAINT "public.a a_pkey"',
      'creating INDEX "public.b_x_idx"',
      'creating FK CONSTRAINT "public.b b_id_fkey"',
      'creating ACL "public.TABLE a"',
    ];
    const parallel = [
      'processing item 3357 ENCODING ENCODING',
      'processing item 214 TABLE a',
      'creating TABLE "public.a"',
      'processing item 3362 COMMENT TABLE a',
      'creating COMMENT "public.TABLE a"',
      'creating TABLE "public.b"',
      'creating SEQUENCE "public.s"',
      'creating VIEW "public.v"',
      'entering main parallel loop',
      'launching item 3352 TABLE DATA a',
      'processing data for table "public.b"',
      'processing data for table "public.a"',
      'finished item 3353 TABLE DATA b',
      'creating INDEX "public.b_x_idx"',
      'executing SEQUENCE SET s',
      'creating CONSTRAINT "public.a a_pkey"',
      'creating FK CONSTRAINT "public.b b_id_fkey"',
      'creating ACL "public.TABLE a"',
      'finished main parallel loop',
    ];
    const count = (lines: string[]) => lines.reduce((n, l) => n + restoredObjects(`pg_restore: ${l}`), 0);
    expect(count(serial)).toBe(12);
    expect(count(parallel)).toBe(12);
    // Two workers' output glued on one line: both count.
    expect(restoredObjects('pg_restore: creating INDEX "public.i"pg_restore: processing data for table "public.t"')).toBe(2);
    // An error line is not progress, and counts nothing.
    const error = 'pg_restore: error: could not execute query: ERROR:  relation "a" already exists';
    expect(restoredObjects(error)).toBe(0);
    expect(isRestoreProgressLine(error)).toBe(false);
  });
});

describe('progress off a terminal', () => {
  it('prints a plain line at most every interval through the logger, never a \\r, and a last line only after one was printed', () => {
    const c = clock();
    const logger = createMemoryLogger();
    const p = new Progress({ quiet: false, intervalMs: 5000, now: c.now }, logger, 'sync', { unit: 'bytes', total: 10_000_000 });
    for (let i = 1; i <= 40; i++) {
      c.advance(500);
      p.update(i * 250_000);
    }
    // 20 s of updates every 0.5 s: a line at 5, 10, 15 and 20 s.
    expect(logger.lines).toEqual([
      'sync: 2.5 MB of 10.0 MB (25%) at 500.0 KB/s, ETA 15s',
      'sync: 5.0 MB of 10.0 MB (50%) at 500.0 KB/s, ETA 10s',
      'sync: 7.5 MB of 10.0 MB (75%) at 500.0 KB/s, ETA 5s',
      'sync: 10.0 MB of 10.0 MB (100%) at 500.0 KB/s',
    ]);
    p.end();
    expect(logger.lines.at(-1)).toBe('sync: 10.0 MB of 10.0 MB (100%) at 500.0 KB/s (done)');
    expect(logger.lines.join('\n')).not.toContain('\r');

    // A step shorter than the interval prints nothing at all, not even at its end.
    const quietLogger = createMemoryLogger();
    const short = new Progress({ quiet: false, intervalMs: 5000, now: c.now }, quietLogger, 'verify', { total: 100 });
    c.advance(1000);
    short.update(100);
    short.end();
    expect(quietLogger.lines).toEqual([]);
  });

  it('an estimate that ends below or above its total ends as done, at the size written', () => {
    const c = clock();
    const logger = createMemoryLogger();
    const p = new Progress({ quiet: false, intervalMs: 1000, now: c.now }, logger, 'pg_dump', { unit: 'bytes', total: 1_000_000, estimated: true });
    c.advance(2000);
    p.update(1_500_000);
    expect(logger.lines.at(-1)).toBe('pg_dump: 1.5 MB of ~1.0 MB (99%) at 750.0 KB/s');
    p.end();
    expect(logger.lines.at(-1)).toBe('pg_dump: 1.5 MB of 1.5 MB (100%) at 750.0 KB/s (done)');
  });

  it('--quiet prints nothing, on a terminal or off it', () => {
    const c = clock();
    const logger = createMemoryLogger();
    const term = fakeTerminal();
    for (const terminal of [undefined, new TerminalLine(term.write, () => 80)]) {
      const p = new Progress({ quiet: true, terminal, intervalMs: 0, now: c.now }, logger, 'restore', { unit: 'count', total: 3 });
      p.phase('restore', { total: 3 });
      for (let i = 1; i <= 3; i++) {
        c.advance(10_000);
        p.update(i);
      }
      p.end();
    }
    expect(logger.lines).toEqual([]);
    expect(term.raw()).toBe('');
  });

  it('the interval comes from LIFELINE_PROGRESS_INTERVAL_MS, else 5 s; nonsense is ignored', () => {
    expect(progressIntervalFrom({})).toBe(5000);
    expect(progressIntervalFrom({ LIFELINE_PROGRESS_INTERVAL_MS: '200' })).toBe(200);
    expect(progressIntervalFrom({ LIFELINE_PROGRESS_INTERVAL_MS: '-1' })).toBe(5000);
    expect(progressIntervalFrom({ LIFELINE_PROGRESS_INTERVAL_MS: 'soon' })).toBe(5000);
  });
});

describe('progress on a terminal', () => {
  it('is one line redrawn in place; log lines interleaved are never glued onto it and the line comes back after them', () => {
    const c = clock();
    const term = fakeTerminal();
    const line = new TerminalLine(term.write, () => 120);
    const logger = createStderrLogger({ write: term.write, statusLine: line });
    const p = new Progress({ quiet: false, terminal: line, intervalMs: 5000, now: c.now }, logger, 'restore', { unit: 'count', noun: 'objects', total: 4 });
    c.advance(1000);
    p.update(1);
    logger.warn('table orders is large');
    c.advance(1000);
    p.update(2);
    logger.info('ok   row counts');
    let s = term.screen();
    // Every log line stands alone, whole; the live line is at the bottom.
    expect(s.lines).toEqual(['warning: table orders is large', 'ok   row counts']);
    expect(s.current).toBe('restore: 2/4 objects (50%), ETA 2s');
    // Redraws are throttled (at most every 100 ms), and the phase moves on.
    c.advance(10);
    p.update(3);
    expect(term.screen().current).toBe('restore: 2/4 objects (50%), ETA 2s');
    p.phase('checks', { unit: 'count', total: 2, noun: 'checks' });
    expect(term.screen().current).toBe('checks: 0/2 checks (0%)');
    p.end();
    s = term.screen();
    expect(s.current).toBe('');
    // After the end a log line prints on a clean line, with no stray redraw.
    logger.info('restored');
    expect(term.screen().lines.at(-1)).toBe('restored');
    expect(term.screen().current).toBe('');
    // Every draw clears to the end of the line (a shorter line leaves nothing of a longer one).
    expect(term.raw()).toMatch(/\rrestore: 1\/4 objects \(25%\), ETA 3s\x1b\[K/);
  });

  it('a line wider than the terminal is cut (a wrapped line could not be redrawn), and secrets are masked', () => {
    const term = fakeTerminal();
    const masker = new SecretMasker();
    masker.add('hunter22');
    const line = new TerminalLine(
      term.write,
      () => 30,
      (t) => masker.mask(t),
    );
    line.show('fetch postgres://u:hunter22@db/x: 1.0 MB of 9.0 MB');
    const shown = term.screen().current;
    expect(shown.length).toBeLessThanOrEqual(29);
    expect(term.raw()).not.toContain('hunter22');
    line.show('a\nb\rc');
    expect(term.screen().lines).toEqual([]);
  });

  it('pg_dump byte hook: with a sink the sink decides (no 10 s log line of its own); without one it logs as before', () => {
    const logger = createMemoryLogger();
    const seen: number[] = [];
    const report = progressReporter(logger, 'pg_dump', { onBytes: (_w, b) => seen.push(b) }, 0);
    report(10);
    report(20);
    expect(seen).toEqual([10, 20]);
    expect(logger.lines).toEqual([]);
    const plain = progressReporter(logger, 'pg_dump', {}, 0);
    plain(5);
    expect(logger.lines[0]).toMatch(/^pg_dump: 5 B at /);
  });
});

describe('progress through the CLI', () => {
  const fake: CommandSpec = {
    name: 'longwork',
    summary: 'test',
    inputs: [],
    outputs: [],
    implemented: true,
    async run(ctx) {
      const p = startProgress(ctx, 'work', { unit: 'count', noun: 'items', total: 3 });
      p.phase('work', { unit: 'count', noun: 'items', total: 3 });
      for (let i = 1; i <= 3; i++) {
        p.update(i);
        await new Promise((r) => setTimeout(r, 110));
        ctx.logger.info(`item ${i} done`);
      }
      // Left shown on purpose: the CLI clears it before the result and any error.
      if (ctx.inputs.boolean('json')) return { json: { ok: true } };
      throw new Error('boom');
    },
  };
  const run = async (argv: string[], interactive: boolean) => {
    const out = { stdout: '', stderr: '' };
    const code = await runCli([fake], argv, {
      stdout: (t) => void (out.stdout += t),
      stderr: (t) => void (out.stderr += t),
      env: { LIFELINE_PROGRESS_INTERVAL_MS: '0' },
      cwd: process.cwd(),
      interactive,
    });
    return { code, ...out };
  };

  it('off a terminal: plain progress lines on stderr, none on stdout with --json, no \\r anywhere', async () => {
    const r = await run(['longwork', '--json'], false);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ ok: true });
    expect(r.stderr).toContain('work: 1/3 items (33%)');
    expect(r.stderr).toContain('item 3 done');
    expect(r.stderr + r.stdout).not.toContain('\r');
  });

  it('on a terminal: the error after a shown line starts on a clean line; --quiet shows no progress but still the error', async () => {
    const r = await run(['longwork'], true);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/\r\x1b\[Kerror: boom\n$/);
    expect(r.stderr).toContain('\rwork: 3/3 items (100%)');
    const q = await run(['longwork', '--quiet'], true);
    expect(q.code).toBe(1);
    expect(q.stderr).not.toContain('work:');
    expect(q.stderr).not.toContain('\r');
    expect(q.stderr).toContain('item 1 done');
    expect(q.stderr).toContain('error: boom');
  });
});

describe('backup size estimate', () => {
  it('takes the newest earlier backup of the same database and compression, skipping hostile sizes, and never fails the backup', async () => {
    const store = mkdtempSync(join(tmpdir(), 'lifeline-estimate-'));
    try {
      const entry = (id: string, metadata: Record<string, unknown>) => {
        mkdirSync(join(store, 'default', 'backups', id), { recursive: true });
        writeFileSync(
          join(store, 'default', 'backups', id, 'backup.json'),
          JSON.stringify({ schemaVersion: 1, label: 'manual', database: 'shop', compression: { method: 'gzip', level: 1 }, ...metadata }),
        );
      };
      const file = (bytes: unknown, extra: Record<string, unknown> = {}) => ({ postgres: { name: 'postgres.dump', sha256: 'a'.repeat(64), bytes, ...extra } });
      entry('20260101T000000000Z-aaaaaa', { createdAt: '2026-01-01T00:00:00Z', files: file(5000) });
      // Newer, but of another database, another compression, or with a size no dump has.
      entry('20260102T000000000Z-bbbbbb', { createdAt: '2026-01-02T00:00:00Z', database: 'other', files: file(7000) });
      entry('20260103T000000000Z-cccccc', { createdAt: '2026-01-03T00:00:00Z', compression: { method: 'none', level: null }, files: file(9000) });
      entry('20260104T000000000Z-dddddd', { createdAt: '2026-01-04T00:00:00Z', files: file(1e300) });
      entry('20260105T000000000Z-eeeeee', { createdAt: '2026-01-05T00:00:00Z', files: file(-4) });
      const catalog = new Catalog(store, { warn: () => {} });
      const conn = { host: '127.0.0.1', port: 1, user: 'nobody', database: 'shop', params: {} };
      const logger = createMemoryLogger();
      const gzip = await estimateBackupBytes({ catalog, environment: 'default', conn, runner: new LocalRunner(), compression: { method: 'gzip', level: 1 }, logger });
      expect(gzip).toEqual({ bytes: 5000, source: 'the size of backup 20260101T000000000Z-aaaaaa' });
      // An encrypted entry: the plaintext size (what pg_dump writes), not the age file's.
      entry('20260106T000000000Z-ffffff', {
        createdAt: '2026-01-06T00:00:00Z',
        files: file(6100, { encryption: { format: 'age', recipients: [], plaintextSha256: 'b'.repeat(64), plaintextBytes: 6000 } }),
      });
      expect((await estimateBackupBytes({ catalog, environment: 'default', conn, runner: new LocalRunner(), compression: { method: 'gzip', level: 1 }, logger }))?.bytes).toBe(6000);
      // Compression none with no server to ask (port 1): no estimate, no throw, nothing but debug output.
      const none = await estimateBackupBytes({ catalog, environment: 'empty', conn, runner: new LocalRunner(), compression: { method: 'none', level: null }, logger });
      expect(none).toBeUndefined();
      expect(logger.lines).toEqual([]);
    } finally {
      rmSync(store, { recursive: true, force: true });
    }
  });
});
