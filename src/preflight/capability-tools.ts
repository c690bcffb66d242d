import { Catalog, type EntryMetadata } from '../catalog/store';
import { composeRunner } from '../runner/factory';
import { drillServerImage } from '../postgres/container-cluster';
import { postgresServerBinDirs } from '../runner/postgres-binaries';
import { drillRedisImage } from '../redis/container-server';
import { findExecutable, runText } from '../runner/runner';
import type { ComposeSettings } from '../settings/resolve';
import { fail, notChecked, pass, type Finding } from './findings';

export interface CapabilityToolSettings {
  environment: string;
  store: string;
  compose: ComposeSettings;
  postgresService?: string;
  postgresBinDir?: string;
  /** The drill restores into a configured database (drill.targetUrlEnv): no throwaway server is needed. */
  drillTarget: boolean;
  redisConfigured: boolean;
  redisService?: string;
  redisBinDir?: string;
  path?: string;
}

/**
 * For each configured capability, the tools it will need, where it will run them: the throwaway
 * PostgreSQL server of a drill (the db service's image with postgres.service, else this host's
 * server binaries of the backups' major), the Redis tools (in the redis service, else here). Each
 * failure names the install command. A service that is not running is "not checked" (preflight
 * runs before a deploy starts it).
 */
export async function checkCapabilityTools(settings: CapabilityToolSettings): Promise<Finding[]> {
  return [...(await drillPostgres(settings)), ...(await redisTools(settings))];
}

/** The major of the newest backup's server, when there is one: the throwaway server must be that major or newer. */
async function newestBackupMajor(settings: CapabilityToolSettings): Promise<number | undefined> {
  try {
    const [newest] = await new Catalog(settings.store).list<EntryMetadata & { serverVersion?: string }>(settings.environment, 'backups', 'backup.json');
    const major = Number(/^(\d+)/.exec(newest?.metadata.serverVersion ?? '')?.[1]);
    return Number.isFinite(major) && major > 0 ? major : undefined;
  } catch {
    return undefined;
  }
}

async function serviceRunning(compose: ComposeSettings, service: string) {
  try {
    return await composeRunner(compose, service);
  } catch {
    return undefined;
  }
}

async function drillPostgres(settings: CapabilityToolSettings): Promise<Finding[]> {
  const check = 'tools.drill-postgres';
  if (settings.drillTarget) return [pass({ check, message: 'drills restore into the configured drill database (drill.targetUrlEnv): no throwaway server needed' })];
  if (settings.postgresService) {
    const service = settings.postgresService;
    const running = await serviceRunning(settings.compose, service);
    if (!running)
      return [notChecked(check, `the drill's throwaway PostgreSQL comes from service ${service}'s image, and ${service} is not running`, `start the stack, then run lifeline preflight again`)];
    try {
      const image = await drillServerImage(running, service);
      return [pass({ check, message: `drills start their throwaway PostgreSQL from service ${service}'s image (${image.slice(7, 19)}): initdb, postgres, psql and pg_restore are in it` })];
    } catch (error) {
      return [
        fail({
          check,
          message: (error as Error).message.replace(/; nothing was restored and no drill report was written$/, ''),
          fix: (error as { fix?: string }).fix ?? `use an image for ${service} with the PostgreSQL server binaries`,
        }),
      ];
    }
  }
  const major = await newestBackupMajor(settings);
  const dirs = postgresServerBinDirs(settings.postgresBinDir).filter((dir) => findExecutable('initdb', [dir], '') && findExecutable('pg_ctl', [dir], ''));
  const majorOf = (dir: string) => Number(/\/(\d+)\/bin\/?$/.exec(dir)?.[1]);
  const usable = major ? dirs.filter((dir) => !(majorOf(dir) < major)) : dirs;
  const install = `apt-get install postgresql-${major ?? '<major of your server>'}`;
  if (usable.length === 0) {
    return [
      fail({
        check,
        message: dirs.length
          ? `drills start a throwaway PostgreSQL here, and the server binaries found (${dirs.join(', ')}) are older than the backups' major ${major}`
          : `drills start a throwaway PostgreSQL here, and no server binaries (initdb, pg_ctl) are installed${major ? ` (the backups are of PostgreSQL ${major})` : ''}`,
        fix: `${install}, or set postgres.binDir, or set postgres.service so drills use the db service's image, or drill.targetUrlEnv to drill into a separate database`,
      }),
    ];
  }
  return [pass({ check, message: `drills start their throwaway PostgreSQL from ${usable[0]}${major ? ` (backups are of PostgreSQL ${major})` : ''}` })];
}

const REDIS_TOOLS = ['redis-cli', 'redis-check-rdb', 'redis-server'];

async function redisTools(settings: CapabilityToolSettings): Promise<Finding[]> {
  const check = 'tools.redis';
  if (!settings.redisConfigured) return [pass({ check, message: 'Redis is not configured: no Redis tools needed' })];
  if (settings.redisService) {
    const service = settings.redisService;
    const running = await serviceRunning(settings.compose, service);
    if (!running) return [notChecked(check, `the Redis tools run in service ${service}, which is not running`, 'start the stack, then run lifeline preflight again')];
    const probe = await runText(running, { tool: 'sh', args: ['-c', `for t in ${REDIS_TOOLS.join(' ')}; do command -v "$t" >/dev/null 2>&1 || echo "$t"; done`] }).catch((error: Error) => ({
      exitCode: 1,
      stdout: '',
      stderr: error.message,
      signal: null,
    }));
    const missing = probe.stdout
      .split('\n')
      .map((l) => l.trim())
      .filter(Boolean);
    if (probe.exitCode !== 0)
      return [
        fail({ check, message: `cannot look for the Redis tools in service ${service}: ${probe.stderr.trim().split('\n').slice(-1)[0]}`, fix: `check that the ${service} image has a shell (sh)` }),
      ];
    if (missing.length)
      return [
        fail({
          check,
          message: `service ${service} lacks ${missing.join(', ')} (backups check their snapshot with redis-check-rdb; drills load it with redis-server)`,
          fix: `use an image for ${service} that has them (the official redis images do)`,
        }),
      ];
    // The drill's throwaway Redis comes from the same image.
    try {
      await drillRedisImage(running, service, { who: 'a drill', consequence: 'drills with Redis would be refused' });
    } catch (error) {
      return [fail({ check, message: (error as Error).message, fix: (error as { fix?: string }).fix ?? '' })];
    }
    return [pass({ check, message: `${REDIS_TOOLS.join(', ')} are in service ${service}; drills load snapshots into a container of its image` })];
  }
  const dirs = settings.redisBinDir ? [settings.redisBinDir] : [];
  const missing = REDIS_TOOLS.filter((tool) => !findExecutable(tool, dirs, settings.path ?? process.env.PATH ?? ''));
  if (missing.length) {
    return [
      fail({
        check,
        message: `${missing.join(', ')} ${missing.length > 1 ? 'are' : 'is'} not installed on this host (backups snapshot and check Redis with them; drills load the snapshot into redis-server)`,
        fix: 'apt-get install redis-server redis-tools, or set redis.binDir, or set redis.service to run them in the Redis container',
      }),
    ];
  }
  return [pass({ check, message: `${REDIS_TOOLS.join(', ')} are installed on this host` })];
}
