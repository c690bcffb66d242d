// Runs the CLI from source for the benchmarks. Transpiling the CLI through tsx costs several
// seconds on a loaded machine (the shipped bundle starts in well under one), so each bench also
// measures that start-up alone (`lifeline --help`) and reports the command's time without it.
import { join } from 'node:path';
import { bestOf, measure, type BenchContext, type Measurement } from '../lib';

export function cliMeasure(ctx: BenchContext, args: string[]): Promise<Measurement> {
  return measure(process.execPath, ['--import', 'tsx', join(ctx.repo, 'src/cli/index.ts'), ...args], { cwd: ctx.repo });
}

export async function cliStartup(ctx: BenchContext): Promise<Measurement> {
  return bestOf(3, () => cliMeasure(ctx, ['--help']));
}

export function withoutStartup(run: Measurement, startup: Measurement): Measurement {
  return { seconds: Math.max(run.seconds - startup.seconds, 0), peakRssMb: run.peakRssMb };
}
