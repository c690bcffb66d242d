// Verify throughput: Lifeline's checksum pass against `openssl dgst -sha256` on the same archive
// (target >= 80% of its throughput), and the full verify (adds pg_restore --list and a complete
// decompression) for reference.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { formatPgUrl } from '../src/runner/postgres-env';
import { cliMeasure } from './drivers/cli';
import { bestOf, measure, type BenchContext, type BenchRow } from './lib';

export default async function verifyBench(ctx: BenchContext): Promise<BenchRow[]> {
  const store = join(ctx.workDir, 'verify-store');
  const cli = (args: string[]) => cliMeasure(ctx, [...args, '--store', store]);
  await cli(['backup', '--database-url', formatPgUrl(ctx.db)]);
  const backupsDir = join(store, 'default', 'backups');
  const id = readdirSync(backupsDir).find((n) => !n.startsWith('.'))!;
  const dir = join(backupsDir, id);
  const openssl = await bestOf(3, () => measure('openssl', ['dgst', '-sha256', join(dir, 'postgres.dump')]));
  // The driver reports the hashing time itself: Node's start-up is not part of the throughput.
  const timing = join(ctx.workDir, 'checksum-seconds');
  const checksums = await bestOf(3, async () => {
    const m = await measure(process.execPath, ['--import', 'tsx', join(ctx.repo, 'bench/drivers/checksums.ts'), dir], { cwd: ctx.repo, stdout: timing });
    return { seconds: Number(readFileSync(timing, 'utf8').trim()), peakRssMb: m.peakRssMb };
  });
  const archiveMb = statSync(join(dir, 'postgres.dump')).size / 1e6;
  const full = await bestOf(1, () => cli(['verify', id]));
  return [
    {
      name: `verify: sha256 of every file vs openssl dgst -sha256 (~${ctx.sizeMb} MB dataset)`,
      lifeline: checksums,
      bare: openssl,
      minRatio: 0.8,
      maxPeakRssMb: 150,
      note: `${archiveMb.toFixed(0)} MB archive; hashing time measured inside the process`,
    },
    { name: 'verify: full (checksums, pg_restore --list, complete decompression) vs openssl dgst', lifeline: full, bare: openssl, note: 'for reference: decompression dominates' },
  ];
}
