import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { LocalRunner } from '../../src/runner/runner';

/** A source that yields some bytes, then fails (a decryption that fails authentication, a file that changed). */
function failingSource(): Readable {
  let sent = false;
  return new Readable({
    read() {
      if (!sent) {
        sent = true;
        this.push(Buffer.from('SELECT 1;\n'));
        return;
      }
      setTimeout(() => this.destroy(new Error('chunk 3 failed authentication')), 20);
    },
  });
}

describe('a tool whose stdin source fails', () => {
  it('is stopped and reported as failed instead of waiting for the rest forever', async () => {
    // `cat` would wait on an open stdin for ever.
    const running = new LocalRunner().start({ tool: 'cat', args: [], stdin: failingSource() });
    running.stdout.resume();
    const result = await running.done;
    expect(result.exitCode === 0 && !result.signal).toBe(false);
    expect(result.stderr).toContain('its input failed: chunk 3 failed authentication');
  }, 10_000);

  it('never reports success, even when the tool would take the truncated input for the whole of it', async () => {
    // Like psql running half a script: reads to end of input, then exits 0.
    const running = new LocalRunner().start({ tool: 'sh', args: ['-c', 'cat >/dev/null; exit 0'], stdin: failingSource() });
    running.stdout.resume();
    const result = await running.done;
    expect(result.exitCode === 0 && !result.signal).toBe(false);
    expect(result.stderr).toMatch(/input failed/);
  }, 10_000);

  it('a source that ends normally leaves the result alone', async () => {
    const running = new LocalRunner().start({ tool: 'sh', args: ['-c', 'cat >/dev/null; exit 0'], stdin: Readable.from([Buffer.from('ok\n')]) });
    running.stdout.resume();
    const result = await running.done;
    expect(result.exitCode).toBe(0);
    expect(result.stderr).toBe('');
  }, 10_000);
});
