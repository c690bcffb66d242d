import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { once } from 'node:events';
import { Readable } from 'node:stream';
import { text } from 'node:stream/consumers';
import { afterAll, describe, expect, it } from 'vitest';
import { tarStream } from '../../src/catalog/tar';
import { isLifelineError, type LifelineError } from '../../src/errors';
import type { Logger } from '../../src/logger';
import { readContainerFile, replaceContainerData } from '../../src/redis/container-files';
import { waitForPong, type RedisPersistence } from '../../src/redis/live-server';
import type { Runner, RunningTool, ToolInvocation } from '../../src/runner/runner';

// The engine's container and server steps (src/redis/) against a runner that answers like docker
// and redis-cli do when things go wrong: each failure is a LifelineError with a code, exit 1 and a fix.

interface Answer {
  exitCode: number;
  stdout?: Buffer | string;
  stderr?: string;
}

function scriptedRunner(answer: (invocation: ToolInvocation) => Answer | Promise<Answer>): Runner & { calls: ToolInvocation[]; killed: string[] } {
  const calls: ToolInvocation[] = [];
  const killed: string[] = [];
  return {
    where: 'a scripted runner',
    calls,
    killed,
    start(invocation): RunningTool {
      calls.push(invocation);
      let kill: (signal: NodeJS.Signals) => void = () => {};
      const stdout = new Readable({ read() {} });
      const done = (async () => {
        // Reads stdin like docker cp does, until it ends or the tool is killed.
        const stdin = invocation.stdin ? Promise.race([text(invocation.stdin).catch(() => ''), new Promise<string>((resolve) => (kill = () => resolve('killed')))]) : undefined;
        if ((await stdin) === 'killed') {
          stdout.push(null);
          return { exitCode: null, signal: 'SIGTERM' as const, stderr: '' };
        }
        const a = await answer(invocation);
        // The output is read before the tool counts as done, as with a real process.
        const ended = once(stdout, 'end');
        if (a.stdout !== undefined) stdout.push(a.stdout);
        stdout.push(null);
        await ended;
        return { exitCode: a.exitCode, signal: null, stderr: a.stderr ?? '' };
      })();
      return {
        stdout,
        done,
        kill(signal = 'SIGTERM') {
          killed.push(signal);
          kill(signal);
        },
      };
    },
  };
}

const logged: string[] = [];
const logger = { info: (m: string) => logged.push(m), warn: (m: string) => logged.push(`warn: ${m}`) } as unknown as Logger;
const dir = mkdtempSync(join(tmpdir(), 'lifeline-redis-steps-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const persistence: RedisPersistence = { dir: '/data', dbfilename: 'dump.rdb', appendonly: true, appenddirname: 'appendonlydir', appendfilename: 'appendonly.aof' };
const owner = { uid: 999, gid: 999 };

async function failureOf(promise: Promise<unknown>): Promise<LifelineError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(isLifelineError(error)).toBe(true);
  return error as LifelineError;
}

describe('redis/container-files: docker cp in and out of the container', () => {
  it('a manifest docker cp cannot read is a failure with a code and a fix; a missing one is no manifest', async () => {
    const denied = scriptedRunner(() => ({ exitCode: 1, stderr: 'Error response from daemon: permission denied' }));
    const error = await failureOf(readContainerFile(denied, 'c0ffee1234567890', '/data/appendonlydir/appendonly.aof.manifest'));
    expect(error.code).toBe('CONTAINER_FILE_UNREADABLE');
    expect(error.exitCode).toBe(1);
    expect(error.message).toBe('reading /data/appendonlydir/appendonly.aof.manifest from the container failed (docker cp exit 1): Error response from daemon: permission denied');
    expect(error.fix).toContain('c0ffee123456');

    const missing = scriptedRunner(() => ({ exitCode: 1, stderr: 'Error response from daemon: Could not find the file /data/appendonlydir/appendonly.aof.manifest in container c0ffee' }));
    expect(await readContainerFile(missing, 'c0ffee', '/data/appendonlydir/appendonly.aof.manifest')).toBeUndefined();
  });

  it('a "manifest" larger than 1 MiB is refused as one, and a real one is read out of its tar', async () => {
    const huge = scriptedRunner(() => ({ exitCode: 0, stdout: Buffer.alloc(1024 * 1024 + 1) }));
    const error = await failureOf(readContainerFile(huge, 'c0ffee', '/data/appendonlydir/appendonly.aof.manifest'));
    expect(error.code).toBe('CONTAINER_FILE_UNREADABLE');
    expect(error.message).toBe('/data/appendonlydir/appendonly.aof.manifest is larger than a manifest should be (1048577 bytes)');
    expect(error.fix).toBeTruthy();

    const manifest = 'file appendonly.aof.7.base.rdb seq 7 type b\n';
    const tar = Buffer.from(
      await tarStream([{ name: 'appendonly.aof.manifest', text: manifest }])
        .toArray()
        .then((chunks) => Buffer.concat(chunks)),
    );
    const ok = scriptedRunner(() => ({ exitCode: 0, stdout: tar }));
    expect((await readContainerFile(ok, 'c0ffee', '/data/appendonlydir/appendonly.aof.manifest'))?.toString('utf8')).toBe(manifest);
  });

  it('a snapshot file that changed size since the catalog recorded it stops before docker cp starts', async () => {
    const path = join(dir, 'redis.rdb');
    writeFileSync(path, 'REDIS0011 and then some');
    const runner = scriptedRunner(() => ({ exitCode: 0 }));
    const error = await failureOf(replaceContainerData(runner, 'c0ffee', { ...persistence, appendonly: false }, owner, { path, expectedBytes: 5 }, logger));
    expect(error.code).toBe('SNAPSHOT_CHANGED');
    expect(runner.calls).toEqual([]);
  });

  it('a snapshot stream that fails while it is copied in kills docker cp and names the cause', async () => {
    const runner = scriptedRunner((invocation) => (invocation.args[0] === 'cp' && invocation.args[2] === '-' ? { exitCode: 1, stderr: 'No such file' } : { exitCode: 0 }));
    const failing = () =>
      Promise.resolve(
        new Readable({
          read() {
            this.destroy(new Error('age: chunk 3 failed authentication'));
          },
        }),
      );
    const error = await failureOf(replaceContainerData(runner, 'c0ffee', persistence, owner, { open: failing, size: 100 }, logger));
    expect(error.code).toBe('REDIS_COPY_FAILED');
    expect(error.message).toBe('the snapshot failed while it was copied in: age: chunk 3 failed authentication');
    expect(error.fix).toBeTruthy();
    expect(runner.killed).toEqual(['SIGTERM']);
  });

  it('docker cp failing on its own is a failure with its stderr and a fix', async () => {
    const path = join(dir, 'ok.rdb');
    writeFileSync(path, 'REDIS0011');
    const runner = scriptedRunner(() => ({ exitCode: 1, stderr: 'Error response from daemon: no space left on device' }));
    const error = await failureOf(replaceContainerData(runner, 'c0ffee', { ...persistence, appendonly: false }, owner, { path, expectedBytes: 9 }, logger));
    expect(error.code).toBe('REDIS_COPY_FAILED');
    expect(error.message).toBe('docker cp exit 1: Error response from daemon: no space left on device');
    expect(error.fix).toContain('/data');
  });
});

describe('redis/live-server: waiting for PONG', () => {
  it('a container that exited while the server loaded its data is said at once, with a code and a fix', async () => {
    const runner = scriptedRunner(() => ({ exitCode: 1, stderr: 'Could not connect to Redis at 127.0.0.1:6379: Connection refused' }));
    const started = Date.now();
    const error = await failureOf(
      waitForPong(runner, { host: '127.0.0.1', port: 6379, tls: false }, { timeoutMs: 60_000, logger, containerState: async () => ({ running: false, status: 'exited', exitCode: 1 }) }),
    );
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(error.code).toBe('REDIS_START_FAILED');
    expect(error.message).toBe('the container exited (exited, exit code 1)');
    expect(error.fix).toBeTruthy();
  });

  it('a server that answers LOADING until the deadline times out naming its last answer; a failing inspect is no verdict', async () => {
    logged.length = 0;
    const runner = scriptedRunner(() => ({ exitCode: 0, stdout: 'LOADING Redis is loading the dataset in memory\n' }));
    const error = await failureOf(
      waitForPong(
        runner,
        { host: '127.0.0.1', port: 6379, tls: false },
        {
          timeoutMs: 600,
          logger,
          containerState: async () => {
            throw new Error('docker inspect failed');
          },
        },
      ),
    );
    expect(error.code).toBe('REDIS_START_FAILED');
    expect(error.message).toBe('no PONG within 1 s (last answer: LOADING Redis is loading the dataset in memory)');
    expect(logged).toEqual(['     LOADING the dataset']);
  });
});
