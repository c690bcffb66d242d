import { stringify } from 'yaml';
import { normalizeHost } from '../drill/isolation';
import { environmentConnection } from '../postgres/connection';
import { redactUrl } from '../settings/secrets';
import { resolveEnvironment, type EnvironmentSettings } from '../settings/resolve';
import { loadConfig } from '../settings/load';
import { environmentFor, type CommandSpec } from './spec';

/** The resolved settings with every secret replaced, safe to print. */
export function maskedSettings(settings: EnvironmentSettings): Record<string, unknown> {
  const { secrets: _secrets, ...rest } = settings;
  return {
    ...rest,
    postgres: { ...settings.postgres, url: settings.postgres.url ? redactUrl(settings.postgres.url) : undefined },
    redis: settings.redis ? { ...settings.redis, url: settings.redis.url ? redactUrl(settings.redis.url) : undefined } : undefined,
    drill: {
      ...settings.drill,
      targetUrl: settings.drill.targetUrl ? redactUrl(settings.drill.targetUrl) : undefined,
      // The names say what the container gets; the values may be API keys.
      appCheck: settings.drill.appCheck ? { ...settings.drill.appCheck, env: Object.fromEntries(Object.keys(settings.drill.appCheck.env).map((name) => [name, '***'])) } : undefined,
    },
    hooks: {
      postRestore: settings.hooks.postRestore.map((hook) =>
        'headers' in hook && hook.headers ? { ...hook, headers: Object.fromEntries(Object.keys(hook.headers).map((name) => [name, '***'])) } : hook,
      ),
    },
    // A webhook's path and a ping's UUID are the credential: never print them.
    notify: { ...settings.notify, webhook: settings.notify.webhook ? '***' : undefined, ping: settings.notify.ping ? '***' : undefined },
  };
}

/** Where each environment's URLs come from: `production: postgres from STAGING_DATABASE_URL (environments.staging.postgres.urlEnv)`. */
export function urlSources(settings: EnvironmentSettings): string[] {
  const pg = settings.postgres.url ? `from ${settings.postgres.urlSource}` : settings.postgres.urlEnv ? `not set (${settings.postgres.urlEnv} is empty)` : 'not set';
  const lines = [`${settings.name}: postgres URL ${pg}`];
  if (settings.redis)
    lines.push(`${settings.name}: redis URL ${settings.redis.url ? `from ${settings.redis.urlSource}` : settings.redis.urlEnv ? `not set (${settings.redis.urlEnv} is empty)` : 'not set'}`);
  return lines;
}

/**
 * Environments whose URLs reach the same server and database (all loopback spellings are one host):
 * a backup or restore of one would act on the other's data.
 */
export function sharedDatabaseWarnings(environments: EnvironmentSettings[]): string[] {
  const byTarget = new Map<string, EnvironmentSettings[]>();
  for (const settings of environments) {
    if (!settings.postgres.url) continue;
    const conn = environmentConnection(settings);
    const key = `${normalizeHost(conn.host)}:${conn.port ?? 5432}/${conn.database}`;
    byTarget.set(key, [...(byTarget.get(key) ?? []), settings]);
  }
  return [...byTarget.entries()]
    .filter(([, list]) => list.length > 1)
    .map(
      ([key, list]) =>
        `environments ${list.map((s) => `${s.name} (URL from ${s.postgres.urlSource})`).join(' and ')} resolve to the same PostgreSQL server and database (${key}); give each environment its own postgres.urlEnv, set to its own database`,
    );
}

/**
 * Schedules that cannot meet the targets: a backup every hour cannot keep a 15-minute RPO, and the
 * release gate then refuses deploys for most of every hour. A quarter of the target is left for the
 * backup's own duration and a late start.
 */
export function scheduleWarnings(settings: EnvironmentSettings): string[] {
  const warnings: string[] = [];
  const human = (seconds: number) => (seconds % 86400 === 0 ? `${seconds / 86400}d` : seconds % 3600 === 0 ? `${seconds / 3600}h` : seconds % 60 === 0 ? `${seconds / 60}m` : `${seconds}s`);
  const every = settings.backupEverySeconds;
  if (settings.rpoSeconds !== undefined && every !== undefined && every > settings.rpoSeconds * 0.75) {
    warnings.push(
      `environment ${settings.name}: backups every ${human(every)} cannot keep an RPO of ${human(settings.rpoSeconds)}: the newest backup is older than the RPO for part of every interval, and the release gate refuses deploys then; back up at least every ${human(Math.max(60, Math.floor((settings.rpoSeconds * 0.75) / 60) * 60))} (backup.every and the schedule), or raise rpo`,
    );
  }
  const drillEvery = settings.drill.everySeconds;
  if (drillEvery !== undefined && drillEvery > settings.drill.maxAgeSeconds * 0.75) {
    warnings.push(
      `environment ${settings.name}: drills every ${human(drillEvery)} cannot keep the newest passing drill younger than drill.maxAge ${human(settings.drill.maxAgeSeconds)}: the release gate will refuse deploys; drill at least every ${human(Math.max(60, Math.floor((settings.drill.maxAgeSeconds * 0.75) / 60) * 60))}, or raise drill.maxAge`,
    );
  }
  return warnings;
}

export const configCheck: CommandSpec = {
  name: 'config check',
  summary: 'Validate lifeline.yml and print the resolved settings of every environment (secrets masked)',
  inputs: [],
  outputs: [],
  implemented: true,
  async run(ctx) {
    const first = environmentFor(ctx);
    const globals = ctx.inputs.globals();
    // With no --env, check every declared environment: a typo in staging must not wait for staging's deploy.
    const names = globals.env || !first.configPath ? [first.name] : Object.keys(loadConfig(first.configPath, { explicit: true }).config.environments);
    const resolved = names.length === 0 ? [first] : names.map((name) => (name === first.name ? first : resolveEnvironment({ ...globals, env: name }, { env: ctx.env, cwd: ctx.cwd })));
    const masked = Object.fromEntries(resolved.map((s) => [s.name, maskedSettings(s)]));
    const source = first.configPath ?? '(no config file: flags and environment variables only)';
    const sources = resolved.flatMap(urlSources);
    const warnings = [...sharedDatabaseWarnings(resolved), ...resolved.flatMap(scheduleWarnings)];
    // On stderr (an annotation in Actions), and in the JSON.
    for (const warning of warnings) ctx.logger.warn(warning);
    return {
      json: { config: first.configPath ?? null, valid: true, environments: masked, urlSources: sources, warnings },
      text: `${source}: valid\n${sources.join('\n')}\n${stringify({ environments: JSON.parse(JSON.stringify(masked)) })}`,
    };
  },
};
