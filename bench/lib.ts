// Benchmark helpers: run a command under GNU time, compare Lifeline against the bare tool, print
// ratios and peak memory. Benchmarks run on demand (`npm run bench`), never inside the test suite.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ThrowawayCluster } from '../src/postgres/cluster';
import type { PgConnection } from '../src/runner/postgres-env';

export interface Measurement {
  seconds: number;
  /** Peak resident memory of the measured process (and, for Lifeline, its Node process only). */
  peakRssMb: number;
}

export interface BenchRow {
  name: string;
  lifeline: Measurement;
  bare: Measurement;
  /** The issue's target for lifeline.seconds / bare.seconds. */
  maxRatio?: number;
  /** The issue's target for throughput ratios (higher is better), when that is the measure. */
  minRatio?: number;
  /** Peak memory limit for Lifeline's Node process, in MB. */
  maxPeakRssMb?: number;
  /** Lifeline's output size against the bare tool's (archives), and its limit. */
  sizeRatio?: number;
  maxSizeRatio?: number;
  note?: string;
}

export interface BenchContext {
  cluster: ThrowawayCluster;
  /** The sample database, loaded at the requested size. */
  db: PgConnection;
  sizeMb: number;
  workDir: string;
  repo: string;
}

/** Runs a command under /usr/bin/time and returns wall time and peak RSS. */
export async function measure(command: string, args: string[], options: { env?: NodeJS.ProcessEnv; cwd?: string; stdout?: string } = {}): Promise<Measurement> {
  const dir = mkdtempSync(join(tmpdir(), 'lifeline-bench-'));
  const timeFile = join(dir, 'time');
  try {
    await new Promise<void>((resolve, reject) => {
      const shellArgs = options.stdout
        ? ['-c', `exec /usr/bin/time -o "$0" -f '%e %M' "$@" > ${JSON.stringify(options.stdout)}`, timeFile, command, ...args]
        : ['-c', `exec /usr/bin/time -o "$0" -f '%e %M' "$@" > /dev/null`, timeFile, command, ...args];
      const child = spawn('sh', shellArgs, { env: { ...process.env, ...options.env }, cwd: options.cwd, stdio: ['ignore', 'inherit', 'inherit'] });
      child.on('error', reject);
      child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`${command} ${args.join(' ')} exited ${code}`))));
    });
    const [seconds, kb] = readFileSync(timeFile, 'utf8').trim().split('\n').pop()!.split(' ').map(Number);
    return { seconds: seconds!, peakRssMb: kb! / 1024 };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Best of N runs (least disturbed by the machine's other work). */
export async function bestOf(n: number, run: () => Promise<Measurement>): Promise<Measurement> {
  let best: Measurement | undefined;
  for (let i = 0; i < n; i++) {
    const m = await run();
    if (!best || m.seconds < best.seconds) best = { seconds: m.seconds, peakRssMb: Math.max(m.peakRssMb, best?.peakRssMb ?? 0) };
  }
  return best!;
}

/**
 * Best of `n` runs of each side, interleaved (bare, Lifeline, bare, ...), so that drift on a shared
 * machine hits both alike. `before` runs unmeasured ahead of every run (e.g. a CHECKPOINT, so no
 * run pays for the previous one's dirty buffers).
 */
export async function compareInterleaved(
  n: number,
  bare: () => Promise<Measurement>,
  lifeline: () => Promise<Measurement>,
  before?: () => Promise<void>,
): Promise<{ bare: Measurement; lifeline: Measurement }> {
  let bestBare: Measurement | undefined;
  let bestLifeline: Measurement | undefined;
  // BENCH_RUNS overrides n (e.g. 2 for a quicker pass on a busy machine).
  n = Number(process.env.BENCH_RUNS ?? n);
  const better = (best: Measurement | undefined, m: Measurement) =>
    !best || m.seconds < best.seconds ? { seconds: m.seconds, peakRssMb: Math.max(m.peakRssMb, best?.peakRssMb ?? 0) } : { ...best, peakRssMb: Math.max(best.peakRssMb, m.peakRssMb) };
  for (let i = 0; i < n; i++) {
    await before?.();
    bestBare = better(bestBare, await bare());
    await before?.();
    bestLifeline = better(bestLifeline, await lifeline());
  }
  return { bare: bestBare!, lifeline: bestLifeline! };
}

/** Runs a CHECKPOINT on the server `env` (PG* variables) points at, unmeasured: for `compareInterleaved`'s `before`. */
export function checkpoint(env: NodeJS.ProcessEnv): () => Promise<void> {
  return async () => void (await measure('psql', ['-X', '-q', '-c', 'CHECKPOINT'], { env }));
}

export function formatRows(rows: BenchRow[]): string {
  const lines = ['| benchmark | lifeline s | bare s | ratio | target | lifeline peak MB | verdict |', '|---|---|---|---|---|---|---|'];
  for (const r of rows) {
    const ratio = r.lifeline.seconds / r.bare.seconds;
    const target = r.maxRatio !== undefined ? `<= ${r.maxRatio}x` : r.minRatio !== undefined ? `>= ${r.minRatio}x (throughput)` : '';
    const throughputRatio = r.bare.seconds / r.lifeline.seconds;
    const timeOk = r.maxRatio === undefined || ratio <= r.maxRatio;
    const throughputOk = r.minRatio === undefined || throughputRatio >= r.minRatio;
    const memOk = r.maxPeakRssMb === undefined || r.lifeline.peakRssMb <= r.maxPeakRssMb;
    const sizeOk = r.maxSizeRatio === undefined || (r.sizeRatio ?? Infinity) <= r.maxSizeRatio;
    const size = r.sizeRatio !== undefined ? `size ${r.sizeRatio.toFixed(2)}x${r.maxSizeRatio ? ` (<= ${r.maxSizeRatio}x)` : ''}; ` : '';
    const shown = r.minRatio !== undefined ? `${throughputRatio.toFixed(2)}x` : `${ratio.toFixed(3)}x`;
    lines.push(
      `| ${r.name} | ${r.lifeline.seconds.toFixed(2)} | ${r.bare.seconds.toFixed(2)} | ${shown} | ${target} | ${r.lifeline.peakRssMb.toFixed(0)}${r.maxPeakRssMb ? ` (<= ${r.maxPeakRssMb})` : ''} | ${timeOk && throughputOk && memOk && sizeOk ? 'meets target' : 'MISSES target'}; ${size}${r.note ?? ''} |`,
    );
  }
  return lines.join('\n');
}
