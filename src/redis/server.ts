import { mkdtempSync, rmSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { failure } from '../errors';
import { freePort, stopPid, waitFor } from '../runner/ports';
import { LocalRunner, runText } from '../runner/runner';

export interface ThrowawayRedis {
  port: number;
  dir: string;
  url: string;
  pid: number;
  stop(): Promise<void>;
}

export interface RedisServerOptions {
  binDir?: string;
  /** An RDB file to load at start (an isolated restore). */
  rdbFile?: string;
  password?: string;
}

/** Starts a private redis-server on 127.0.0.1 in a temp dir; `stop()` stops it by pid and removes the dir. */
export async function startThrowawayRedis(options: RedisServerOptions = {}): Promise<ThrowawayRedis> {
  const dir = mkdtempSync(join(tmpdir(), 'lifeline-redis-'));
  const port = await freePort();
  const runner = new LocalRunner({ binDirs: options.binDir ? [options.binDir] : [] });
  const args = [
    '--port',
    String(port),
    '--bind',
    '127.0.0.1',
    '--dir',
    dir,
    '--dbfilename',
    'dump.rdb',
    '--appendonly',
    'no',
    '--save',
    '',
    '--daemonize',
    'no',
    '--logfile',
    join(dir, 'redis.log'),
    '--repl-diskless-sync-delay',
    '0',
    ...(options.password ? ['--requirepass', options.password] : []),
  ];
  if (options.rdbFile) {
    const { copyFileSync } = await import('node:fs');
    copyFileSync(options.rdbFile, join(dir, 'dump.rdb'));
  }
  const running = runner.start({ tool: 'redis-server', args });
  running.stdout.resume();
  const pid = running.pid;
  if (!pid) throw failure('REDIS_START_FAILED', 'redis-server did not start');
  const auth = options.password ? `:${encodeURIComponent(options.password)}@` : '';
  const url = `redis://${auth}127.0.0.1:${port}/0`;
  let exited = false;
  running.done.then(() => (exited = true)).catch(() => (exited = true));
  const stop = async () => {
    await stopPid(pid, 'SIGTERM', 15000);
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await waitFor(
      async () => {
        // waitFor treats a throwing check as "not yet": an exited server ends the wait now, not after 60 s.
        if (exited) return true;
        const ping = await runText(runner, { tool: 'redis-cli', args: ['-h', '127.0.0.1', '-p', String(port), 'PING'], env: options.password ? { REDISCLI_AUTH: options.password } : {} });
        // With a dump to load, PING answers LOADING until the dataset is in memory.
        return ping.stdout.trim() === 'PONG';
      },
      { timeoutMs: 60000, what: 'redis-server to answer PING' },
    );
    if (exited) throw failure('REDIS_START_FAILED', 'redis-server exited before it answered PING');
  } catch (error) {
    let log = '';
    try {
      log = readFileSync(join(dir, 'redis.log'), 'utf8').split('\n').slice(-5).join('\n');
    } catch {
      // no log
    }
    await stop();
    throw failure('REDIS_START_FAILED', `the throwaway redis-server did not start: ${log || (error as Error).message}`);
  }
  return { port, dir, url, pid, stop };
}
