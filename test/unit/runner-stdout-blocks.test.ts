import { describe, expect, it } from 'vitest';
import { findExecutable, LocalRunner, type RunningTool } from '../../src/runner/runner';

async function output(running: RunningTool): Promise<{ text: string; exitCode: number | null; signal: string | null }> {
  const parts: Buffer[] = [];
  for await (const chunk of running.stdout as AsyncIterable<Buffer>) parts.push(chunk);
  const result = await running.done;
  return { text: Buffer.concat(parts).toString('utf8'), exitCode: result.exitCode, signal: result.signal };
}

describe('stdoutBlockBytes: a local tool writes its stdout in large blocks (stdbuf)', () => {
  it('runs the tool under stdbuf -o<N>: the tool sees the setting, and its output is unchanged', async () => {
    expect(findExecutable('stdbuf'), 'coreutils stdbuf is on PATH here').toBeDefined();
    // `env` (coreutils) prints its environment: stdbuf passes the buffer size to the tool there.
    const wrapped = await output(new LocalRunner().start({ tool: 'env', args: [], stdoutBlockBytes: 256 * 1024 }));
    expect(wrapped.exitCode).toBe(0);
    expect(wrapped.text).toMatch(/^_STDBUF_O=262144$/m);
    const plain = await output(new LocalRunner().start({ tool: 'env', args: [] }));
    expect(plain.text).not.toMatch(/_STDBUF_O=/);
  });

  it('keeps the tool exit status and signals (stdbuf execs the tool in the same process)', async () => {
    const failed = await output(new LocalRunner().start({ tool: 'sh', args: ['-c', 'exit 7'], stdoutBlockBytes: 1 << 20 }));
    expect(failed.exitCode).toBe(7);
    const running = new LocalRunner().start({ tool: 'sleep', args: ['30'], stdoutBlockBytes: 1 << 20 });
    running.kill('SIGKILL');
    const killed = await output(running);
    expect(killed.signal).toBe('SIGKILL');
  });

  it('without stdbuf on PATH the tool runs as it is; a missing tool is still TOOL_MISSING', async () => {
    const runner = new LocalRunner({ binDirs: ['/usr/bin'], baseEnv: { PATH: '/nonexistent' } });
    const plain = await output(runner.start({ tool: 'env', args: [], stdoutBlockBytes: 1 << 20 }));
    expect(plain.exitCode).toBe(0);
    expect(plain.text).not.toMatch(/_STDBUF_O=/);
    const missing = new LocalRunner().start({ tool: 'no-such-tool-lifeline', args: [], stdoutBlockBytes: 1 << 20 });
    await expect(missing.done).rejects.toMatchObject({ code: 'TOOL_MISSING' });
  });
});
