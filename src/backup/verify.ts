import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { withLock } from '../catalog/lock';
import type { Catalog } from '../catalog/store';
import { failure, isLifelineError } from '../errors';
import { checkSums, SUMS_FILE } from '../catalog/sums';
import { entryFilePath } from '../catalog/confine';
import type { Logger } from '../logger';
import { describeExit, lastLines, type Runner, type ToolInvocation } from '../runner/runner';
import { LocalRunner } from '../runner/runner';
import { checkRdb, rdbCheckFromStdin } from '../redis/snapshot';
import { BACKUP_METADATA_FILE, type BackupEntry, type BackupFile, type BackupMetadata, type VerificationCheck } from './metadata';
import { IDENTITY_FIX, type AgeIdentity } from '../crypto/age';
import type { Progress } from '../report/progress';
import { isEncrypted, openPlaintext, requireIdentityFor, runReadingStream } from '../crypto/payload';

export interface VerifyOptions {
  /** Runs pg_restore; a Compose runner gets the archive on stdin. */
  runner: Runner;
  /** Runs redis-check-rdb: on this host, or in the Redis service (made only when the backup holds a snapshot). */
  redisRunner?: Runner | (() => Promise<Runner>);
  logger: Logger;
  /** Only the checksums (what a restore checks before touching anything). */
  checksumsOnly?: boolean;
  /** The age identity: an encrypted backup's contents are checked only with it. */
  identity?: AgeIdentity;
  /** Shows which check runs, k of n (src/report/progress.ts). */
  progress?: Progress;
}

export interface VerifyReport {
  backupId: string;
  ok: boolean;
  checks: VerificationCheck[];
  /** False when the backup is encrypted and no identity was given: only the ciphertext checksums were checked. */
  contentsChecked?: boolean;
}

/**
 * Checks a backup end to end: every file against SHA256SUMS (and SHA256SUMS against backup.json),
 * that pg_restore reads the archive's table of contents, that every data block decompresses,
 * and that the Redis snapshot parses. Never throws for a bad backup: the report says what failed.
 */
export async function verifyBackup(entry: BackupEntry, options: VerifyOptions): Promise<VerifyReport> {
  const files = Object.values(entry.metadata.files).filter((f): f is BackupFile => Boolean(f));
  // Progress: the step running, of the reads this verify makes (each file hashed, then the archive
  // and the Redis snapshot read by their tools); the bytes pg_restore reads are not visible from here.
  const progress = options.progress && !options.progress.silent ? options.progress : undefined;
  const contentSteps = options.checksumsOnly ? 0 : files.some(isEncrypted) ? (options.identity ? files.length : 0) : 2 + (entry.metadata.files.redis ? 1 : 0);
  const totalSteps = files.length + contentSteps;
  let stepsDone = 0;
  const step = (name: string) => {
    progress?.phase(`verify ${entry.id}: ${name}`, { unit: 'count', noun: 'reads', total: totalSteps, steps: true });
    progress?.update(Math.min(stepsDone, totalSteps));
  };
  const add = (check: VerificationCheck) => options.logger.info(`${check.ok ? 'ok  ' : 'FAIL'} ${check.name}: ${check.detail}`);
  try {
    return await verifyChecks(entry, options, files, add, step, () => void stepsDone++);
  } finally {
    progress?.update(Math.min(stepsDone, totalSteps));
    progress?.end();
  }
}

async function verifyChecks(
  entry: BackupEntry,
  options: VerifyOptions,
  files: BackupFile[],
  add: (check: VerificationCheck) => void,
  step: (name: string) => void,
  stepDone: () => void,
): Promise<VerifyReport> {
  const checks: VerificationCheck[] = [];
  const record = (check: VerificationCheck) => {
    checks.push(check);
    add(check);
  };
  step('checksums');
  const sumsOk = await checkChecksums(entry, record, () => {
    stepDone();
    step('checksums');
  });
  if (!options.checksumsOnly && files.some(isEncrypted)) {
    if (!options.identity) {
      options.logger.warn(
        `backup ${entry.id} is encrypted with age and no identity was given: only the checksums of the encrypted files were checked, NOT their contents; ${IDENTITY_FIX} for the full check`,
      );
      return { backupId: entry.id, ok: checks.every((c) => c.ok), checks, contentsChecked: false };
    }
    if (sumsOk) {
      step('decrypting every payload');
      for (const check of await verifyEncryptedContents(entry, files, options)) record(check);
    }
    return { backupId: entry.id, ok: checks.every((c) => c.ok), checks, contentsChecked: sumsOk };
  }
  if (!options.checksumsOnly) {
    // Reached only when every name passed the confined checksum pass; checked again at the point of use.
    const archive = sumsOk ? await entryFilePath(entry.dir, entry.metadata.files.postgres.name) : '';
    // A corrupt file is already known: reading it further would only add noise.
    if (sumsOk) {
      step('table of contents');
      record(await pgRestoreCheck(options.runner, archive, 'archive table of contents', ['--list'], (out) => `${out.lines} entries`));
      stepDone();
      step('reading the archive (pg_restore)');
      record(await pgRestoreCheck(options.runner, archive, 'archive decompresses end to end', fullReadArgs(options.runner), () => 'every data block read'));
      const redis = entry.metadata.files.redis;
      stepDone();
      if (redis) {
        step('the Redis snapshot (redis-check-rdb)');
        // A missing tool or a stopped Redis service is a failed check with its fix, never an exception.
        const check = await redisSnapshotCheck(options.redisRunner, await entryFilePath(entry.dir, redis.name));
        record({ name: `${redis.name} (redis-check-rdb)`, ok: check.ok, detail: check.detail });
      }
    }
  }
  return { backupId: entry.id, ok: checks.every((c) => c.ok), checks };
}

async function redisSnapshotCheck(source: VerifyOptions['redisRunner'], path: string): Promise<{ ok: boolean; detail: string }> {
  try {
    const runner = typeof source === 'function' ? await source() : (source ?? new LocalRunner());
    return await checkRdb(runner, path);
  } catch (error) {
    const fix = isLifelineError(error) && error.fix ? `; fix: ${error.fix}` : '';
    return { ok: false, detail: `redis-check-rdb could not run: ${(error as Error).message}${fix}` };
  }
}

/**
 * The full check of an encrypted backup, each payload decrypted in the stream (never on disk):
 * the archive into `pg_restore` (every block read), the Redis snapshot into `redis-check-rdb`,
 * and every payload's plaintext against the sha256 and size backup.json records.
 */
async function verifyEncryptedContents(entry: BackupEntry, files: BackupFile[], options: VerifyOptions): Promise<VerificationCheck[]> {
  const checks: VerificationCheck[] = [];
  const identity = options.identity!;
  try {
    requireIdentityFor(files, identity, `backup ${entry.id}`);
  } catch (error) {
    return [{ name: 'decryption', ok: false, detail: (error as Error).message }];
  }
  const archive = entry.metadata.files.postgres;
  const describeFailure = (r: { result: { exitCode: number | null; signal: NodeJS.Signals | null; stderr: string }; sourceError?: Error }, tool: string) =>
    r.sourceError ? r.sourceError.message : `${tool} ${describeExit(r.result as never)}: ${lastLines(r.result.stderr, 3)}`;
  try {
    const plain = await openPlaintext(entry.dir, archive, identity, `backup ${entry.id}`);
    const read = await runReadingStream(options.runner, { tool: 'pg_restore', args: fullReadArgs(options.runner) }, plain);
    const ok = read.result.exitCode === 0 && read.complete;
    checks.push({ name: 'archive decompresses end to end', ok, detail: ok ? 'every data block read by pg_restore, decrypted in the stream' : describeFailure(read, 'pg_restore') });
    checks.push({
      name: `${archive.name} plaintext`,
      ok,
      detail: ok ? `sha256 ${archive.encryption?.plaintextSha256 ?? archive.sha256}, ${archive.encryption?.plaintextBytes ?? archive.bytes} bytes, as recorded` : 'not confirmed (see above)',
    });
  } catch (error) {
    checks.push({ name: 'archive decompresses end to end', ok: false, detail: (error as Error).message });
  }
  const redis = entry.metadata.files.redis;
  if (redis) {
    try {
      const plain = await openPlaintext(entry.dir, redis, identity, `backup ${entry.id}`);
      let output = '';
      const source = options.redisRunner;
      const redisRunner = typeof source === 'function' ? await source() : (source ?? new LocalRunner());
      const { stdin: _stdin, ...invocation } = rdbCheckFromStdin(plain);
      const read = await runReadingStream(redisRunner, invocation, plain, (chunk) => {
        if (output.length < 65536) output += chunk.toString('utf8');
      });
      const ok = read.result.exitCode === 0 && read.complete && /RDB looks OK/.test(`${output}\n${read.result.stderr}`);
      const keys = /(\d+) keys read/.exec(`${output}\n${read.result.stderr}`)?.[1] ?? '0';
      checks.push({
        name: `${redis.name} (redis-check-rdb)`,
        ok,
        detail: ok
          ? `RDB looks OK, ${keys} keys (decrypted in the stream), plaintext as recorded`
          : read.sourceError
            ? read.sourceError.message
            : `redis-check-rdb: ${lastLines(`${output}\n${read.result.stderr}`, 3)}`,
      });
    } catch (error) {
      checks.push({ name: `${redis.name} (redis-check-rdb)`, ok: false, detail: (error as Error).message });
    }
  }
  const globals = entry.metadata.files.globals;
  if (globals) {
    try {
      const plain = await openPlaintext(entry.dir, globals, identity, `backup ${entry.id}`);
      for await (const _chunk of plain) {
        // read to the end: the transform checks the plaintext there
      }
      checks.push({ name: `${globals.name} plaintext`, ok: true, detail: 'decrypts, sha256 and size as recorded' });
    } catch (error) {
      checks.push({ name: `${globals.name} plaintext`, ok: false, detail: (error as Error).message });
    }
  }
  return checks;
}

async function checkChecksums(entry: BackupEntry, add: (check: VerificationCheck) => void, onFile?: () => void): Promise<boolean> {
  let results;
  try {
    // Only the files backup.json names may be hashed: any other SHA256SUMS line is a failed check.
    results = await checkSums(entry.dir, { listed: Object.values(entry.metadata.files).flatMap((f) => (f ? [f.name] : [])), onFile });
  } catch (error) {
    add({ name: SUMS_FILE, ok: false, detail: `cannot read ${SUMS_FILE}: ${(error as Error).message}` });
    return false;
  }
  let ok = true;
  for (const r of results) {
    const detail = r.error ? r.error : r.ok ? `sha256 ${r.actual}` : `sha256 is ${r.actual}, ${SUMS_FILE} says ${r.expected}`;
    add({ name: `${r.file} checksum`, ok: r.ok, detail });
    ok &&= r.ok;
  }
  // Each file backup.json names must be listed with the same hash: a missing line is not a pass.
  const listed = new Map(results.map((r) => [r.file, r.expected]));
  for (const file of Object.values(entry.metadata.files)) {
    if (!file) continue;
    const expected = listed.get(file.name);
    if (expected !== file.sha256) {
      add({ name: `${file.name} recorded`, ok: false, detail: expected ? `${SUMS_FILE} and ${BACKUP_METADATA_FILE} disagree` : `${file.name} is missing from ${SUMS_FILE}` });
      ok = false;
    }
  }
  return ok;
}

/** Where pg_restore reads the archive: the path for local tools, stdin inside a container. */
export function archiveInput(runner: Runner, path: string): Pick<ToolInvocation, 'args' | 'stdin'> {
  return runner instanceof LocalRunner ? { args: [path] } : { args: [], stdin: createReadStream(path, { highWaterMark: 1024 * 1024 }) };
}

/**
 * pg_restore's arguments to read a whole archive without a database: it writes the script, so
 * every data block is inflated. A container's pg_restore writes it to stdout, for the caller to discard.
 */
export function fullReadArgs(runner: Runner): string[] {
  return [runner instanceof LocalRunner ? '--file=/dev/null' : '--file=-'];
}

export async function pgRestoreCheck(runner: Runner, archive: string, name: string, args: string[], describe: (out: { bytes: number; lines: number }) => string): Promise<VerificationCheck> {
  const input = archiveInput(runner, archive);
  try {
    const running = runner.start({ tool: 'pg_restore', args: [...args, ...input.args], stdin: input.stdin });
    let bytes = 0;
    let lines = 0;
    running.stdout.on('data', (chunk: Buffer) => {
      bytes += chunk.length;
      for (let i = chunk.indexOf(10); i !== -1; i = chunk.indexOf(10, i + 1)) lines++;
    });
    const result = await running.done;
    if (result.exitCode !== 0) return { name, ok: false, detail: `pg_restore ${describeExit(result)}: ${lastLines(result.stderr, 3)}` };
    return { name, ok: true, detail: describe({ bytes, lines }) };
  } catch (error) {
    return { name, ok: false, detail: (error as Error).message };
  }
}

export interface RecordVerificationOptions {
  now?: Date;
  /** How long to wait for the environment lock (a prune or restore holding it). */
  lockWaitSeconds?: number;
  /** The caller already holds the environment lock. */
  lockHeld?: boolean;
}

/**
 * Records a verification in backup.json, so listings and retention can see it. Under the
 * environment lock (so a prune cannot delete the entry meanwhile) and only into the entry that was
 * verified, still whole: its backup.json, SHA256SUMS and every file it names are there with the
 * hashes that were checked. An entry deleted while it was being verified stays deleted: nothing
 * is recorded and the verification fails (exit 1).
 */
export async function recordVerification(catalog: Catalog, env: string, entry: BackupEntry, report: VerifyReport, options: RecordVerificationOptions = {}): Promise<BackupEntry> {
  const record = async (): Promise<BackupEntry> => {
    const gone = (why: string) =>
      failure('BACKUP_GONE', `backup ${entry.id} ${why} while it was being verified, so the result was not recorded (it ${report.ok ? 'passed' : 'failed'} its checks)`, {
        fix: `list what is left with: lifeline backups --env ${env}; verify another backup (lifeline verify latest --env ${env})`,
      });
    const current = await catalog.get<BackupMetadata>(env, 'backups', entry.id, BACKUP_METADATA_FILE);
    if (!current) throw gone('was deleted');
    if (JSON.stringify(current.metadata.files) !== JSON.stringify(entry.metadata.files)) throw gone('was replaced');
    // A pass is recorded only into an entry that is still whole. A failure is recorded whenever the
    // entry itself is still there: a file replaced by a FIFO, or a name pointing outside the entry,
    // must leave the backup marked failed, never listed as verified from an earlier run.
    if (report.ok) {
      const names = [SUMS_FILE, ...Object.values(current.metadata.files).flatMap((f) => (f ? [f.name] : []))];
      for (const name of names) {
        if (!(await fileExists(join(current.dir, name)))) throw gone(`lost ${name}`);
      }
    }
    // An encrypted backup verified without an identity says so in the record too: its checksums passed, its contents were not read.
    const metadata: BackupMetadata = {
      ...current.metadata,
      verified: { at: (options.now ?? new Date()).toISOString(), ok: report.ok, checks: report.checks, ...(report.contentsChecked === false ? { contentsChecked: false } : {}) },
    };
    if (!(await catalog.rewriteExistingMetadata(current, BACKUP_METADATA_FILE, metadata))) throw gone('was deleted');
    return { ...current, metadata };
  };
  if (options.lockHeld) return record();
  return withLock(catalog.envDir(env), env, { command: `verify ${entry.id} (recording the result)`, waitSeconds: options.lockWaitSeconds ?? 60 }, record);
}

async function fileExists(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isFile();
  } catch {
    return false;
  }
}
