// The drill's Redis step: the backup's snapshot is loaded into a private redis-server and must
// hold its keys; a backup without a snapshot skips the step and says why.
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startThrowawayRedis, type ThrowawayRedis } from '../../src/redis/server';
import { lifeline } from '../helpers/cli';
import { createSampleDatabase, dropDatabase, tempDir } from '../helpers/db';

const ENV = 'production';
const PASSWORD = 'drill-redis-secret';

describe('lifeline drill with Redis', () => {
  let work: ReturnType<typeof tempDir>;
  let live: Awaited<ReturnType<typeof createSampleDatabase>>;
  let redis: ThrowawayRedis;
  let configPath: string;

  const cli = (args: string[], env: Record<string, string | undefined>) =>
    lifeline([...args, '--config', configPath, '--env', ENV], { env: { DATABASE_URL: live.url, LIFELINE_STORE: undefined, REDIS_URL: undefined, ...env } });

  beforeAll(async () => {
    work = tempDir();
    live = await createSampleDatabase(1, 'drill_redis');
    // A private server: the suite's shared Redis belongs to everyone's tests.
    redis = await startThrowawayRedis({ password: PASSWORD });
    const commands = [...Array.from({ length: 40 }, (_, i) => `SET session:${i} v${i}`), 'SELECT 3', ...Array.from({ length: 7 }, (_, i) => `SET rate:${i} ${i}`)];
    execFileSync('redis-cli', ['-p', String(redis.port), '--no-auth-warning'], { env: { ...process.env, REDISCLI_AUTH: PASSWORD }, input: `${commands.join('\n')}\n` });
    configPath = join(work.path, 'lifeline.yml');
    writeFileSync(configPath, ['version: 1', `store: ${join(work.path, 'store')}`, 'environments:', `  ${ENV}:`, '    rto: 10m', '    rpo: 1h', ''].join('\n'));
  });

  afterAll(async () => {
    await redis?.stop();
    if (live) await dropDatabase(live.name);
    work?.cleanup();
  });

  it('loads the snapshot into a private redis-server and checks its keys; the password stays out of the output', async () => {
    const backup = await cli(['backup', '--json'], { REDIS_URL: redis.url });
    expect(backup.code, backup.stderr).toBe(0);
    const run = await cli(['drill', '--json'], { REDIS_URL: redis.url });
    expect(run.code, run.stderr).toBe(0);
    const report = JSON.parse(run.stdout);
    expect(report.steps.map((s: { id: string }) => s.id)).toEqual([
      'stop-writes',
      'select-backup',
      'verify-backup',
      'restore',
      'check-data',
      'check-indexes',
      'restore-redis',
      'smoke-queries',
      'start-app',
      'switch-over',
    ]);
    expect(report.steps.find((s: { id: string }) => s.id === 'restore-redis').status).toBe('done');
    const check = report.checks.find((c: { name: string }) => c.name === 'redis snapshot loads with its keys');
    expect(check).toMatchObject({ status: 'pass', step: 'restore-redis' });
    expect(check.detail).toMatch(/^47 keys loaded, snapshot holds 47/);
    expect(report.rto.phases['restore-redis']).toBeGreaterThan(0);
    expect(`${run.stdout}${run.stderr}`).not.toContain(PASSWORD);

    const runbook = await cli(['runbook'], { REDIS_URL: redis.url });
    expect(runbook.stdout).toContain('lifeline redis-restore --env production --backup <backup-id>');
  });

  it('skips the step, saying why, when the backup has no Redis snapshot', async () => {
    const backup = await cli(['backup', '--json'], {});
    expect(backup.code, backup.stderr).toBe(0);
    const run = await cli(['drill', '--json'], { REDIS_URL: redis.url });
    expect(run.code, run.stderr).toBe(0);
    const report = JSON.parse(run.stdout);
    const step = report.steps.find((s: { id: string }) => s.id === 'restore-redis');
    expect(step).toMatchObject({ status: 'skipped', detail: `backup ${JSON.parse(backup.stdout).id} holds no Redis snapshot` });
    expect(report.checks.find((c: { step: string }) => c.step === 'restore-redis')).toMatchObject({ status: 'skipped' });
  });
});
