import type { TestProject } from 'vitest/node';
import { startThrowawayCluster, type ThrowawayCluster } from '../../src/postgres/cluster';
import { startThrowawayRedis, type ThrowawayRedis } from '../../src/redis/server';

/**
 * One real PostgreSQL cluster and one real Redis for the whole suite, on free loopback ports.
 * Tests create their own databases; both servers are stopped by pid at the end, even on failure.
 */
let cluster: ThrowawayCluster | undefined;
let redis: ThrowawayRedis | undefined;

export async function setup(project: TestProject): Promise<() => Promise<void>> {
  const teardown = async () => {
    await Promise.allSettled([cluster?.stop(), redis?.stop()]);
  };
  try {
    cluster = await startThrowawayCluster({ fast: true });
    redis = await startThrowawayRedis({ password: 'test-redis-secret' });
  } catch (error) {
    await teardown();
    throw error;
  }
  project.provide('pgUrl', cluster.url);
  project.provide('pgBinDir', cluster.binDir);
  project.provide('redisUrl', redis.url);
  return teardown;
}

declare module 'vitest' {
  export interface ProvidedContext {
    pgUrl: string;
    pgBinDir: string;
    redisUrl: string;
  }
}
