import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { LifelineError } from '../../src/errors';
import { startThrowawayRedis } from '../../src/redis/server';

const work = mkdtempSync(join(tmpdir(), 'lifeline-redis-start-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

describe('throwaway redis-server start', () => {
  it('a server that exits while loading (an RDB it cannot read) fails at once with its log, and leaves no directory', async () => {
    const rdb = join(work, 'garbage.rdb');
    writeFileSync(rdb, 'REDIS0011 this is not an RDB file\n'.repeat(100));
    const before = new Set(readdirSync(tmpdir()).filter((n) => n.startsWith('lifeline-redis-') && !n.startsWith('lifeline-redis-start-')));
    const started = Date.now();
    let thrown: unknown;
    try {
      const redis = await startThrowawayRedis({ rdbFile: rdb });
      await redis.stop();
    } catch (error) {
      thrown = error;
    }
    const elapsed = Date.now() - started;
    expect(thrown).toBeInstanceOf(LifelineError);
    expect((thrown as LifelineError).code).toBe('REDIS_START_FAILED');
    // The server's own words, from its log, not a timeout.
    expect((thrown as LifelineError).message).not.toMatch(/timed out/);
    expect((thrown as LifelineError).message).toMatch(/throwaway redis-server did not start: .+/);
    // Not the 60 s PING wait (it used to run to the end because the wait swallowed "exited").
    expect(elapsed).toBeLessThan(30_000);
    const after = readdirSync(tmpdir()).filter((n) => n.startsWith('lifeline-redis-') && !n.startsWith('lifeline-redis-start-') && !before.has(n));
    expect(after.filter((n) => existsSync(join(tmpdir(), n, 'redis.log')))).toEqual([]);
  });
});
