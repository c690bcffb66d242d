import { open, type FileHandle } from 'node:fs/promises';
import { PassThrough, type Writable } from 'node:stream';
import type { StagedEntry, StoredFile } from '../catalog/store';
import { failure, isLifelineError } from '../errors';
import { describeFilesystemError } from '../catalog/fs-errors';
import type { Logger } from '../logger';
import { pgEnv, type PgConnection } from '../runner/postgres-env';
import { describeExit, lastLines, type Runner, type RunningTool, type ToolResult } from '../runner/runner';
import { POSTGRES_ARCHIVE_FILE, type BackupFile, type VerificationCheck } from './metadata';
import { progressReporter, type ProgressSink } from '../postgres/progress';
import { fullReadArgs, pgRestoreCheck } from './verify';
import { compressArchive } from './archive-compress';
import { COLLECT_EVERY, collectYoungGarbage } from './collect-garbage';

export interface VerifiedDumpOptions {
  runner: Runner;
  conn: PgConnection;
  /** pg_dump's arguments (format, compression, snapshot, ...); it writes the archive to stdout. */
  pgDumpArgs: string[];
  staged: StagedEntry;
  /** Feed the archive to `pg_restore` as it is written, and list the finished file. */
  verify: boolean;
  /** gzip level at which Lifeline compresses the archive pg_dump writes uncompressed (archive-compress.ts); undefined: stored as pg_dump wrote it. */
  compressLevel?: number;
  logger: Logger;
  progress?: ProgressSink;
}

export interface VerifiedDump {
  archive: BackupFile;
  /** What was checked (empty without `verify`): the same names `lifeline verify` reports. */
  checks: VerificationCheck[];
}

/** Bytes queued for pg_restore before the stream waits for it: bounded memory whatever the size. */
const READER_BUFFER = 1024 * 1024;
/** The blocks pg_dump writes its stdout in (stdbuf -o, local tools): 64 wake-ups fewer per 256 KB. */
const PG_DUMP_STDOUT_BLOCK = 256 * 1024;
/**
 * What small pieces are gathered into before they go on to the file and the reader. Pieces read
 * from a pg_dump under stdbuf are already this size and go on as they are: gathering them into
 * 512 KB (as before stdbuf) only added a copy, and ~10 MB to the peak memory of a 1 GB backup.
 */
const BATCH = 64 * 1024;

/**
 * Runs pg_dump into the staged entry and, with `verify`, into `pg_restore --file=/dev/null` at the
 * same time: one pass writes, hashes and reads back every data block (pg_restore inflates each
 * one to write the script), so a verified backup costs no second read of the archive. The slowest
 * of the file and the reader paces pg_dump. Any failure (pg_dump, the disk, the reader) kills what
 * still runs and throws; the caller aborts the staged entry, so nothing lists.
 *
 * `abort` stops it from outside (the inspection running beside it failed); the promise then
 * rejects with the given error.
 */
export function startVerifiedDump(options: VerifiedDumpOptions): { done: Promise<VerifiedDump>; abort(error: Error): void } {
  const { runner, staged } = options;
  // pg_dump's stdio writes its stdout in 4 KB pieces; through stdbuf, in 256 KB ones. Each piece
  // wakes this process, which on a 2-core host preempts pg_dump or its reader: at gzip level 1 the
  // larger pieces took ~0.35 s off a 7 s backup of the 1 GB bench dataset (3 alternating runs;
  // 1 MB pieces gained no more). No change was measured at level 6, where pg_dump's own compression dominates.
  const dump = runner.start({ tool: 'pg_dump', args: options.pgDumpArgs, env: pgEnv(options.conn), stdoutBlockBytes: PG_DUMP_STDOUT_BLOCK });
  let aborted: Error | undefined;
  let reader: RunningTool | undefined;
  let readerFailedFirst = false;
  const stopAll = () => {
    dump.kill('SIGTERM');
    reader?.kill('SIGTERM');
  };
  const done = (async (): Promise<VerifiedDump> => {
    // Encrypted entries: the file is `postgres.dump.age`, written through age; pg_restore reads the plaintext side.
    const file = staged.addWriter(POSTGRES_ARCHIVE_FILE);
    const writeback = earlyWriteback(staged.path(file.name));
    const feed = options.verify ? new PassThrough({ highWaterMark: READER_BUFFER }) : undefined;
    if (feed) {
      reader = runner.start({ tool: 'pg_restore', args: fullReadArgs(runner), stdin: feed });
      // With --file=- (a container's pg_restore) the script comes back here: discard it.
      reader.stdout.resume();
    }
    let readerResult: ToolResult | undefined;
    const readerDone = reader?.done.then((r) => (readerResult = r));
    readerDone?.catch(() => {});
    const onBytes = progressReporter(options.logger, 'pg_dump', options.progress);
    let bytes = 0;
    let written: StoredFile;
    // Pieces arrive as they are read (64 KB at most, a few KB from a pg_dump without stdbuf);
    // handing each on as it comes costs a file write, a pipe write and a hash call per piece.
    // They are gathered up to BATCH bytes first (bounded memory, the same bytes in order).
    const pending: Buffer[] = [];
    let pendingBytes = 0;
    const forward = async (): Promise<boolean> => {
      if (!pendingBytes) return true;
      const chunk = pending.length === 1 ? pending[0]! : Buffer.concat(pending, pendingBytes);
      pending.length = 0;
      pendingBytes = 0;
      const waits: Promise<unknown>[] = [];
      if (!file.stream.write(chunk)) waits.push(drained(file.stream));
      writeback.advance(chunk.length);
      // A reader that already exited reads no more: its verdict comes from its exit status.
      if (feed && !readerResult && !feed.write(chunk)) waits.push(Promise.race([drained(feed), readerDone]));
      if (waits.length) await Promise.all(waits);
      // A reader that failed mid-stream already condemned the archive: stop pg_dump now.
      if (readerResult && readerResult.exitCode !== 0) {
        readerFailedFirst = true;
        return false;
      }
      return true;
    };
    try {
      const archiveBytes = options.compressLevel === undefined ? (dump.stdout as AsyncIterable<Buffer>) : compressArchive(dump.stdout as AsyncIterable<Buffer>, options.compressLevel);
      let sinceCollected = 0;
      for await (const chunk of archiveBytes) {
        if (aborted) break;
        bytes += chunk.length;
        // The pipe's reads are short-lived buffers (collect-garbage.ts). Lifeline's own compression
        // counts and collects what it allocates itself, reads included.
        if (options.compressLevel === undefined) {
          sinceCollected += chunk.length;
          if (sinceCollected >= COLLECT_EVERY) {
            sinceCollected = 0;
            collectYoungGarbage();
          }
        }
        onBytes(bytes);
        pending.push(chunk);
        pendingBytes += chunk.length;
        if (pendingBytes >= BATCH && !(await forward())) break;
      }
      if (!aborted && !readerFailedFirst) await forward();
      if (aborted || readerFailedFirst) stopAll();
      file.stream.end();
      feed?.end();
      await writeback.close();
      written = await file.done();
    } catch (error) {
      // Writing failed (disk full, ...): stop pg_dump rather than leave it blocked on a full pipe
      // (before waiting for a write-back in flight, which a failing disk may make slow). An archive
      // found cut short at its end leaves pg_dump alone: it closed its output and its exit says why.
      const formatError = isLifelineError(error) && error.code === 'ARCHIVE_FORMAT_UNEXPECTED';
      const cutShort = formatError && error.details?.endOfStream === true;
      if (cutShort) {
        reader?.kill('SIGTERM');
        // ... unless it does not exit (a wrapper that closed its output and hangs on).
        const exited = await Promise.race([
          dump.done.then(
            () => true,
            () => true,
          ),
          new Promise<false>((resolve) => setTimeout(resolve, 10_000, false).unref()),
        ]);
        if (!exited) stopAll();
      } else stopAll();
      feed?.destroy();
      file.stream.destroy();
      await writeback.close();
      // The file's own pipeline rejects too; it is the same error, already handled here.
      const [dumped] = await Promise.all([dump.done.catch(() => undefined), readerDone?.catch(() => {}), file.done().catch(() => {})]);
      if (aborted) throw aborted;
      if (cutShort) {
        // An archive cut short by pg_dump's failure (killed, or an error exit): pg_dump's error says why.
        if (dumped && dumped.exitCode !== 0)
          throw failure('PG_DUMP_FAILED', `pg_dump failed (${describeExit(dumped)}): ${lastLines(dumped.stderr)}`, { fix: 'read the pg_dump error above; nothing was added to the catalog' });
        throw error;
      }
      if (formatError) throw error;
      // ENOSPC, EROFS, EACCES: the path, what was not written and the fix, in one message.
      throw (
        describeFilesystemError(error, 'nothing was added to the catalog', staged.dir) ??
        failure('BACKUP_WRITE_FAILED', `writing the archive into ${staged.finalDir} failed: ${(error as Error).message}`, {
          fix: 'free space in the backup store (or prune old backups) and retry',
          cause: error,
        })
      );
    }
    const dumped = await dump.done;
    const read = readerDone ? await readerDone : undefined;
    if (aborted) throw aborted;
    // pg_dump's own failure explains a truncated archive better than the reader's complaint about
    // it, unless the reader failed first and pg_dump was stopped because of it.
    if (dumped.exitCode !== 0 && !readerFailedFirst) {
      throw failure('PG_DUMP_FAILED', `pg_dump failed (${describeExit(dumped)}): ${lastLines(dumped.stderr)}`, { fix: 'read the pg_dump error above; nothing was added to the catalog' });
    }
    const archive: BackupFile = { ...written };
    if (!read) return { archive, checks: [] };
    if (read.exitCode !== 0 || readerFailedFirst) {
      throw failure('ARCHIVE_UNREADABLE', `pg_restore could not read the archive pg_dump wrote (${describeExit(read)}): ${lastLines(read.stderr, 3)}`, {
        fix: 'nothing was added to the catalog; retry the backup, and if it fails again check the host (memory errors, pg_dump and pg_restore of the same version)',
      });
    }
    const checks: VerificationCheck[] = [
      { name: `${archive.name} checksum`, ok: true, detail: `sha256 ${archive.sha256} (hashed as it was written)` },
      {
        name: 'archive decompresses end to end',
        ok: true,
        detail: `every data block read by pg_restore as it was written${archive.encryption ? ` (the plaintext side, sha256 ${archive.encryption.plaintextSha256}, before encryption)` : ''}`,
      },
    ];
    if (archive.encryption) {
      // The stored file is ciphertext and the backup has no identity: the reader above read every
      // plaintext byte that was encrypted, and its table of contents with them.
      return {
        archive,
        checks: [
          checks[0]!,
          { name: 'archive table of contents', ok: true, detail: 'read by pg_restore in the stream (the stored age file itself is read back only by a verify with an identity)' },
          checks[1]!,
        ],
      };
    }
    // The table of contents of the finished file (cheap): what a restore reads first.
    const list = await pgRestoreCheck(runner, staged.path(POSTGRES_ARCHIVE_FILE), 'archive table of contents', ['--list'], (out) => `${out.lines} entries`);
    if (!list.ok) throw failure('ARCHIVE_UNREADABLE', `pg_restore --list cannot read the written archive: ${list.detail}`, { fix: 'nothing was added to the catalog; retry the backup' });
    return { archive, checks: [checks[0]!, list, checks[1]!] };
  })();
  done.catch(() => {});
  return {
    done,
    abort(error: Error) {
      if (aborted) return;
      aborted = error;
      stopAll();
    },
  };
}

/** Written archive bytes after which the file's dirty pages are written back while pg_dump still runs. */
const WRITEBACK_EVERY = 32 * 1024 * 1024;

/**
 * Starts writing the archive back to disk while it is still being dumped (fdatasync on a second,
 * read-only descriptor, one call at a time, off the main thread), so the fsync after the last byte
 * has only the tail left: it was some 0.15 s per 100 MB of archive on the clock. An error here is
 * ignored: the final fsync of the file reports it.
 */
function earlyWriteback(path: string): { advance(bytes: number): void; close(): Promise<void> } {
  // Opened on first use: by then the file's own stream has created it.
  let opened: Promise<FileHandle | undefined> | undefined;
  let pending = 0;
  let syncing: Promise<unknown> | undefined;
  let closed = false;
  return {
    advance(bytes: number) {
      pending += bytes;
      if (pending < WRITEBACK_EVERY || syncing || closed) return;
      pending = 0;
      opened ??= open(path, 'r').catch(() => undefined);
      syncing = opened
        .then((handle) => handle?.datasync())
        .catch(() => {})
        .finally(() => (syncing = undefined));
    },
    async close() {
      if (closed) return;
      closed = true;
      await syncing;
      await (await opened)?.close().catch(() => {});
    },
  };
}

/** Resolves when `stream` wants more; rejects when it failed or closed (so a dead stream never hangs the dump). */
function drained(stream: Writable): Promise<void> {
  if (stream.destroyed) return Promise.reject(stream.errored ?? new Error('the stream was closed'));
  return new Promise((resolve, reject) => {
    const settle = (error?: Error | null) => {
      stream.off('drain', onDrain);
      stream.off('error', onError);
      stream.off('close', onClose);
      if (error) reject(error);
      else resolve();
    };
    const onDrain = () => settle();
    const onError = (error: Error) => settle(error);
    const onClose = () => settle(stream.errored ?? new Error('the stream was closed'));
    stream.on('drain', onDrain);
    stream.on('error', onError);
    stream.on('close', onClose);
  });
}
