import { stringify } from 'yaml';
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
    drill: { ...settings.drill, targetUrl: settings.drill.targetUrl ? redactUrl(settings.drill.targetUrl) : undefined },
  };
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
    return {
      json: { config: first.configPath ?? null, valid: true, environments: masked },
      text: `${source}: valid\n${stringify({ environments: JSON.parse(JSON.stringify(masked)) })}`,
    };
  },
};
