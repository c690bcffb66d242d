// Backup wall time, with DEFAULT flags (verification included), against bare `pg_dump -Fc` to a
// file (issue 18): the default `lifeline backup` <= 0.7x the default `pg_dump -Fc` at <= 1.25x its
// size; with the compression pinned to pg_dump's (`--compress gzip:6`) <= 1.05x of `pg_dump -Fc
// -Z6`. Runs alternate, bare first; best of three each. Also prints how the dataset compresses.
import { readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { generateIdentity, identityToRecipient } from 'age-encryption';
import { join } from 'node:path';
import { formatPgUrl, pgEnv } from '../src/runner/postgres-env';
import { cliMeasure } from './drivers/cli';
import { compareInterleaved, measure, type BenchContext, type BenchRow, type Measurement } from './lib';

export default async function backupBench(ctx: BenchContext): Promise<BenchRow[]> {
  const url = formatPgUrl(ctx.db);
  const env = { ...process.env, ...(pgEnv(ctx.db) as NodeJS.ProcessEnv) };
  let run = 0;
  const sizes = new Map<string, number>();
  const keepLargest = (key: string, bytes: number) => sizes.set(key, Math.max(sizes.get(key) ?? 0, bytes));

  // The bare side is pg_dump as its manual says to run it, `pg_dump -Fc -f FILE`, which fsyncs the
  // file before it exits (as Lifeline does before it lists a backup). `--no-sync` below is shown too.
  const bare = (args: string[], key: string) => async (): Promise<Measurement> => {
    const file = join(ctx.workDir, `bare-${run++}.dump`);
    const m = await measure('pg_dump', ['--format=custom', ...args, '-f', file], { env });
    keepLargest(key, statSync(file).size);
    rmSync(file, { force: true });
    return m;
  };
  const lifeline = (args: string[], key: string) => async (): Promise<Measurement> => {
    const store = join(ctx.workDir, `backup-store-${run++}`);
    const m = await cliMeasure(ctx, ['backup', ...args, '--store', store], { env: { DATABASE_URL: url } });
    const backups = join(store, 'default', 'backups');
    const id = readdirSync(backups).find((n) => !n.startsWith('.'))!;
    const stored = readdirSync(join(backups, id)).find((n) => n.startsWith('postgres.dump'))!;
    keepLargest(key, statSync(join(backups, id, stored)).size);
    rmSync(store, { recursive: true, force: true });
    return m;
  };

  // How the dataset compresses: the uncompressed archive against pg_dump's default gzip 6.
  const raw = join(ctx.workDir, 'raw.dump');
  await measure('pg_dump', ['--format=custom', '--compress=0', '--no-sync'], { env, stdout: raw });
  const rawBytes = statSync(raw).size;
  rmSync(raw, { force: true });

  const defaults = await compareInterleaved(3, bare([], 'bare-default'), lifeline([], 'lifeline-default'));
  // The same against pg_dump told not to fsync (`--no-sync`, not a default): a faster baseline than the target's.
  const noSync = await compareInterleaved(2, bare(['--no-sync'], 'bare-nosync'), lifeline([], 'lifeline-default'));
  // The same default backup with encryption.recipients set (#21): every payload encrypted with age as it streams.
  const recipient = await identityToRecipient(await generateIdentity());
  const encryptedConfig = join(ctx.workDir, 'encrypted.yml');
  writeFileSync(encryptedConfig, `version: 1\nenvironments:\n  default:\n    encryption: { recipients: [${recipient}] }\n`);
  const encrypted = await compareInterleaved(3, lifeline([], 'lifeline-default'), lifeline(['--config', encryptedConfig], 'lifeline-encrypted'));
  const pinned = await compareInterleaved(3, bare(['--compress=6'], 'bare-z6'), lifeline(['--compress', 'gzip:6'], 'lifeline-z6'));

  const mb = (bytes: number) => `${(bytes / 1e6).toFixed(0)} MB`;
  const sizeRatio = sizes.get('lifeline-default')! / sizes.get('bare-default')!;
  process.stderr.write(`dataset: ${mb(rawBytes)} uncompressed archive, ${mb(sizes.get('bare-default')!)} at pg_dump's default gzip 6: ${(rawBytes / sizes.get('bare-default')!).toFixed(1)}:1\n`);
  return [
    {
      name: `backup, default flags (verified in the same pass, gzip:1) vs default pg_dump -Fc -f FILE (gzip 6, fsyncs), ~${ctx.sizeMb} MB dataset`,
      lifeline: defaults.lifeline,
      bare: defaults.bare,
      maxRatio: 0.7,
      maxPeakRssMb: 150,
      sizeRatio,
      maxSizeRatio: 1.25,
      note: `archive ${mb(sizes.get('lifeline-default')!)} vs ${mb(sizes.get('bare-default')!)}; data compresses ${(rawBytes / sizes.get('bare-default')!).toFixed(1)}:1 at gzip 6; includes start-up, exact counts, fingerprint, globals`,
    },
    {
      name: `backup, default flags vs pg_dump -Fc --no-sync (no fsync; shown, not a target), ~${ctx.sizeMb} MB dataset`,
      lifeline: noSync.lifeline,
      bare: noSync.bare,
      maxPeakRssMb: 150,
      note: 'pg_dump without its fsync; Lifeline still fsyncs the archive and its entry before it lists the backup',
    },
    {
      name: `backup with encryption.recipients (age, in the stream) vs the same default backup unencrypted, ~${ctx.sizeMb} MB dataset`,
      lifeline: encrypted.lifeline,
      bare: encrypted.bare,
      maxRatio: 1.1,
      maxPeakRssMb: 150,
      sizeRatio: sizes.get('lifeline-encrypted')! / sizes.get('lifeline-default')!,
      note: `encrypted backup vs bare default pg_dump -Fc: ${(encrypted.lifeline.seconds / defaults.bare.seconds).toFixed(2)}x (not interleaved with it); the age file is the archive plus 64 KiB chunk tags`,
    },
    {
      name: `backup --compress gzip:6 (verified) vs pg_dump -Fc -Z6 -f FILE, ~${ctx.sizeMb} MB dataset`,
      lifeline: pinned.lifeline,
      bare: pinned.bare,
      maxRatio: 1.05,
      maxPeakRssMb: 150,
      sizeRatio: sizes.get('lifeline-z6')! / sizes.get('bare-z6')!,
      note: 'same compression as the bare dump: what the in-stream verification and the rest cost',
    },
  ];
}
