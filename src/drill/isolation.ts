import { refusal } from '../errors';
import type { Logger } from '../logger';
import type { PgConnection } from '../runner/postgres-env';
import { sameDatabase } from '../postgres/identity';
import type { Runner } from '../runner/runner';

export { normalizeHost, systemIdentifier } from '../postgres/identity';

/**
 * Refuses (exit 3) a drill target that is the environment's live database: the same host (all
 * loopback spellings are one), port and database name, or the same database name on a cluster
 * with the same system identifier (another address of the same server).
 */
export async function assertIsolatedTarget(live: PgConnection | undefined, target: PgConnection, runner: Runner, logger: Logger): Promise<void> {
  if (!live) {
    logger.warn('no live database URL is configured, so the drill target cannot be compared with it');
    return;
  }
  const fix = 'point --target (or drill.targetUrlEnv) at a separate drill database, e.g. a service container, or omit it to let Lifeline start a throwaway cluster';
  const answer = await sameDatabase(live, target, runner);
  if (answer.same) {
    const how = answer.reason === 'endpoint' ? '' : ` under another address (same system identifier ${answer.systemIdentifier})`;
    throw refusal('DRILL_TARGET_IS_LIVE', `the drill target ${target.host}:${target.port}/${target.database} is the environment's live database${how}`, fix);
  }
  const { sameCluster } = answer;
  if (sameCluster) logger.warn(`the drill database ${target.database} lives on the live cluster: the restore competes with production for CPU and disk`);
}
