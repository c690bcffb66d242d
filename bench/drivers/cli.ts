// Runs the CLI for the benchmarks the way operators run it: the shipped bundle through
// bin/lifeline.js (dist/cli, with Node's compile cache). Benchmarks measure what is in dist/, so
// rebuild it after changing src/ (`node scripts/build.mjs cli`). BENCH_FROM_SOURCE=1 runs src/
// through tsx instead, which adds seconds of transpiling to every call: no ratio taken that way
// says anything about the product.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { measure, type BenchContext, type Measurement } from '../lib';

export function cliArgv(repo: string): string[] {
  if (process.env.BENCH_FROM_SOURCE === '1') return ['--import', 'tsx', join(repo, 'src/cli/index.ts')];
  const bundle = join(repo, 'dist/cli/index.js');
  if (!existsSync(bundle)) throw new Error(`${bundle} is missing: build it first with node scripts/build.mjs cli (or set BENCH_FROM_SOURCE=1)`);
  return [join(repo, 'bin/lifeline.js')];
}

export function cliMeasure(ctx: BenchContext, args: string[], options: { env?: NodeJS.ProcessEnv } = {}): Promise<Measurement> {
  return measure(process.execPath, [...cliArgv(ctx.repo), ...args], { cwd: ctx.repo, env: options.env });
}
