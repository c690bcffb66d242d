import { parseRecipients } from '../crypto/age';
import { dirname, isAbsolute, resolve as resolvePath } from 'node:path';
import { usageError } from '../errors';
import { fromGzipLevel, parseCompression, type Compression } from './compression';
import { parseDuration, parsePositiveDuration } from './duration';
import { loadConfig, nearest, type LoadedConfig } from './load';
import type { EnvironmentConfig, HookConfig, StorageConfig, TenantCollectionConfig } from './schema';
import { urlSecrets } from './secrets';

/** The flags every command takes; the action inputs of the same names map onto them. */
export interface GlobalInputs {
  config?: string;
  env?: string;
  store?: string;
  databaseUrl?: string;
  redisUrl?: string;
}

export type ServiceRole = 'api' | 'web' | 'worker';
export const SERVICE_ROLES: readonly ServiceRole[] = ['api', 'web', 'worker'];

export interface PostgresSettings {
  url?: string;
  /** Where the URL came from (`--database-url`, `DATABASE_URL`, or the variable `postgres.urlEnv` names), for messages and `config check`. */
  urlSource?: string;
  /** The variable this environment's config names for its URL (postgres.urlEnv), set or not. */
  urlEnv?: string;
  service?: string;
  database?: string;
  binDir?: string;
  migrationHeadQuery?: string;
  compressLevel?: number;
  /** postgres.compress (or the legacy compressLevel as gzip); unset: chosen by the pg_dump version. */
  compress?: Compression;
  /** postgres.lockTimeout in seconds. */
  lockTimeoutSeconds?: number;
  physical?: { stanza: string; configFile?: string; type: 'full' | 'diff' | 'incr'; repoPath?: string };
}

export interface RedisSettings {
  url?: string;
  /** Where the URL came from, as for PostgreSQL. */
  urlSource?: string;
  urlEnv?: string;
  service?: string;
  binDir?: string;
}

export interface ComposeSettings {
  files: string[];
  projectName?: string;
  command: 'auto' | 'docker compose' | 'docker-compose';
  services: Record<ServiceRole, { name: string; healthUrl?: string }>;
  healthTimeoutSeconds: number;
  /** After the first healthy answer, how long every check must keep passing with no restart or exit. */
  settleSeconds: number;
  /** A health answer that cannot be tied to the new container fails (true) or warns (false, the default). */
  requireOwnedHealth: boolean;
}

/** Off-host object storage with its credentials resolved from the named environment variables. */
export interface StorageSettings extends Omit<StorageConfig, 'prefix'> {
  /** Key prefix, normalised to end with '/' (or empty). */
  prefix: string;
  /** Undefined when the variables are not set; the storage commands then say which to set. */
  credentials?: { accessKeyId: string; secretAccessKey: string; sessionToken?: string };
  /** The variable names the credentials come from, for error messages. */
  credentialEnv: { accessKeyId: string; secretAccessKey: string };
}

/** The drill's optional start of the application image against the restored database. */
export interface AppCheckSettings {
  /** Undefined: the api image of the release running in the environment (deploy history). */
  image?: string;
  /** The variable the container gets the restored database's URL in. */
  databaseUrlEnv: string;
  healthUrl: string;
  timeoutSeconds: number;
  env: Record<string, string>;
  command?: string[];
}

export interface EnvironmentSettings {
  name: string;
  production: boolean;
  configPath?: string;
  /** Directory that relative paths in the config are resolved against. */
  baseDir: string;
  store: string;
  rpoSeconds?: number;
  rtoSeconds?: number;
  restorePriority: number;
  owner?: string;
  postgres: PostgresSettings;
  redis?: RedisSettings;
  compose: ComposeSettings;
  retention: { keepLast: number; keepDaily: number; keepWeekly: number; preRestore: { keepLast: number; keepDays: number } };
  /** backup.every: how often backups are scheduled. */
  backupEverySeconds?: number;
  drill: { maxAgeSeconds: number; everySeconds?: number; targetUrl?: string; smokeSql?: string; windowSeconds: number; appCheck?: AppCheckSettings };
  tenants: { format: 'ndjson' | 'csv'; rowCap: number; byteCap: number; keep: number; lastWriteQuery?: string; crossTenantRows: 'fail' | 'exclude'; collections: TenantCollectionConfig[] };
  manifest: { publicKey?: string; certificateIdentity?: string | string[]; certificateOidcIssuer?: string; certificateSourceRepository?: string; certificateSourceRef?: string; trustedRoot?: string };
  preflight: NonNullable<EnvironmentConfig['preflight']>;
  hooks: { postRestore: ResolvedHook[] };
  storage?: StorageSettings;
  notify: NotifySettings;
  /** `encryption.recipients`, validated: payloads are stored as age files encrypted to them. */
  encryption?: { recipients: string[] };
  /** Values that must be masked wherever text is printed. */
  secrets: string[];
}

export type NotifyOutcome = 'succeeded' | 'failed' | 'refused';
export interface NotifySettings {
  webhook?: string;
  ping?: string;
  pingCommands: string[];
  /** The outcomes that post to the webhook; drills and gates post every outcome unless `on` was set. */
  on: NotifyOutcome[];
  onConfigured: boolean;
}

export interface ResolveOptions {
  /** The process environment; the domain never reads `process.env` itself. */
  env: Record<string, string | undefined>;
  cwd: string;
}

export const DEFAULT_ENVIRONMENT = 'default';
export const DEFAULT_CONFIG_PATH = 'lifeline.yml';
export const DEFAULT_STORE = '.lifeline';

/** Loads the configuration and resolves one environment: flags win over environment variables, which win over the file. */
export function resolveEnvironment(rawInputs: GlobalInputs, rawOptions: ResolveOptions): EnvironmentSettings {
  const { inputs, options } = withoutEmptyValues(rawInputs, rawOptions);
  const explicitConfig = inputs.config ?? options.env.LIFELINE_CONFIG;
  const configPath = configFileIn(options.cwd, explicitConfig ?? DEFAULT_CONFIG_PATH);
  const loaded = loadConfig(configPath, { explicit: explicitConfig !== undefined });
  return resolveFromConfig(loaded, inputs, options);
}

/**
 * `cwd` + the config path, written without path.resolve on purpose: the bundler's asset relocator
 * reads `resolve(<unknown>, 'lifeline.yml')` as a glob and copies every lifeline.yml it finds on
 * the build machine into dist/.
 */
function configFileIn(cwd: string, path: string): string {
  return isAbsolute(path) ? path : `${cwd.replace(/\/+$/, '')}/${path.replace(/^\.\//, '')}`;
}

/**
 * An empty value means "not set": GitHub passes an unset secret or input as an empty string, and
 * `LIFELINE_STORE=` must not turn the current directory into the catalog.
 */
function withoutEmptyValues(inputs: GlobalInputs, options: ResolveOptions): { inputs: GlobalInputs; options: ResolveOptions } {
  const env: Record<string, string | undefined> = {};
  for (const [key, value] of Object.entries(options.env)) if (value !== undefined && value !== '') env[key] = value;
  const cleaned: GlobalInputs = {};
  for (const [key, value] of Object.entries(inputs) as [keyof GlobalInputs, string | undefined][]) if (value !== undefined && value.trim() !== '') cleaned[key] = value;
  return { inputs: cleaned, options: { ...options, env } };
}

export function resolveFromConfig(loaded: LoadedConfig, rawInputs: GlobalInputs, rawOptions: ResolveOptions): EnvironmentSettings {
  const { inputs, options } = withoutEmptyValues(rawInputs, rawOptions);
  const { config } = loaded;
  const name = inputs.env ?? options.env.LIFELINE_ENV ?? DEFAULT_ENVIRONMENT;
  const declared = Object.keys(config.environments);
  const envConfig: EnvironmentConfig | undefined = config.environments[name];
  if (!envConfig && declared.length > 0 && name !== DEFAULT_ENVIRONMENT) {
    const suggestion = nearest(name, declared);
    throw usageError(
      'UNKNOWN_ENVIRONMENT',
      `environment "${name}" is not declared in ${loaded.path}`,
      suggestion ? `did you mean --env ${suggestion}? Declared: ${declared.join(', ')}` : `declare it under environments: in ${loaded.path}, or use one of: ${declared.join(', ')}`,
    );
  }
  // The implicit `default` environment, undeclared in a config that encrypts another environment's
  // backups: its payloads would be written in plaintext (from the same DATABASE_URL), silently.
  const encrypting = declared.filter((n) => config.environments[n]?.encryption);
  if (!envConfig && name === DEFAULT_ENVIRONMENT && encrypting.length > 0) {
    throw usageError(
      'UNKNOWN_ENVIRONMENT',
      `environment "${name}" is not declared in ${loaded.path}, which encrypts the backups of ${encrypting.join(', ')}: without --env, Lifeline would use "${name}" and write its backups in plaintext`,
      `pass --env ${encrypting.length === 1 ? encrypting[0] : 'NAME'} (or set LIFELINE_ENV); declared: ${declared.join(', ')}`,
    );
  }
  const env = envConfig ?? {};
  const baseDir = loaded.path ? dirname(loaded.path) : options.cwd;
  const abs = (p: string | undefined) => (p === undefined ? undefined : isAbsolute(p) ? p : resolvePath(baseDir, p));
  const absCwd = (p: string | undefined) => (p === undefined ? undefined : resolvePath(options.cwd, p));
  const secrets: string[] = [];

  const store = absCwd(inputs.store) ?? absCwd(options.env.LIFELINE_STORE) ?? abs(env.store) ?? abs(config.store) ?? resolvePath(options.cwd, DEFAULT_STORE);

  const pg = env.postgres ?? {};
  const pgChoice = chooseUrl(inputs.databaseUrl, '--database-url', 'DATABASE_URL', pg.urlEnv, `environments.${name}.postgres.urlEnv`, options.env);
  const pgUrl = pgChoice.url;
  const urlSource = pgChoice.source;
  if (pgUrl !== undefined) validateUrl(pgUrl, ['postgres:', 'postgresql:'], urlSource ?? 'database URL', 'postgres://user:password@host:5432/dbname');
  secrets.push(...urlSecrets(pgUrl));

  let redisSettings: RedisSettings | undefined;
  const redisChoice = chooseUrl(inputs.redisUrl, '--redis-url', 'REDIS_URL', env.redis?.urlEnv, `environments.${name}.redis.urlEnv`, options.env);
  const redisUrl = redisChoice.url;
  if (redisUrl !== undefined || env.redis) {
    if (redisUrl !== undefined) validateUrl(redisUrl, ['redis:', 'rediss:'], redisChoice.source ?? 'Redis URL', 'redis://:password@host:6379/0');
    secrets.push(...urlSecrets(redisUrl));
    redisSettings = { url: redisUrl, urlSource: redisChoice.source, urlEnv: env.redis?.urlEnv, service: env.redis?.service, binDir: abs(env.redis?.binDir) };
  }

  const composeCfg = env.compose ?? {};
  const services = {} as ComposeSettings['services'];
  for (const role of SERVICE_ROLES) {
    const svc = composeCfg.services?.[role];
    services[role] = { name: svc?.name ?? role, healthUrl: svc?.healthUrl };
  }

  const drillCfg = env.drill ?? {};
  const drillTarget = drillCfg.targetUrlEnv ? options.env[drillCfg.targetUrlEnv] : undefined;
  secrets.push(...urlSecrets(drillTarget));
  // Values handed to the application container are as secret as the database URL it gets.
  // Masked wherever text is printed, except plain numbers (a PORT of 18000 would otherwise turn every
  // "18000" in every message, health URLs included, into ***); config check shows all of them as ***.
  secrets.push(...Object.values(drillCfg.appCheck?.env ?? {}).filter((value) => !/^\d{1,6}$/.test(value)));

  const storage = env.storage ? resolveStorage(env.storage, options.env) : undefined;
  if (storage?.credentials) secrets.push(storage.credentials.secretAccessKey, ...(storage.credentials.sessionToken ? [storage.credentials.sessionToken] : []));

  const notifyCfg = env.notify ?? {};
  const notifyUrl = (value: string | undefined, variable: string | undefined, key: string): string | undefined => {
    const url = value ?? (variable ? options.env[variable] || undefined : undefined);
    if (url === undefined) return undefined;
    // The whole URL is the secret (a Slack webhook's path, a healthchecks.io UUID).
    secrets.push(url);
    validateUrl(url, ['http:', 'https:'], variable ? `${variable} (environments.${name}.notify.${key}Env)` : `environments.${name}.notify.${key}`, 'https://hooks.slack.com/services/...');
    return url;
  };
  const notify: NotifySettings = {
    webhook: notifyUrl(notifyCfg.webhook, notifyCfg.webhookEnv, 'webhook'),
    ping: notifyUrl(notifyCfg.ping, notifyCfg.pingEnv, 'ping'),
    pingCommands: notifyCfg.pingCommands ?? ['backup'],
    on: notifyCfg.on ?? ['failed', 'refused'],
    onConfigured: notifyCfg.on !== undefined,
  };

  const tenantsCfg = env.tenants ?? {};
  return {
    name,
    production: env.production ?? name === 'production',
    configPath: loaded.path,
    baseDir,
    store,
    rpoSeconds: env.rpo ? parseDuration(env.rpo, `environments.${name}.rpo`) : undefined,
    rtoSeconds: env.rto ? parseDuration(env.rto, `environments.${name}.rto`) : undefined,
    restorePriority: env.restorePriority ?? 100,
    owner: env.owner,
    postgres: {
      url: pgUrl,
      urlSource,
      urlEnv: pg.urlEnv,
      service: pg.service,
      database: pg.database,
      binDir: abs(pg.binDir),
      migrationHeadQuery: pg.migrationHeadQuery,
      compressLevel: pg.compressLevel,
      compress: resolveCompression(pg.compress, pg.compressLevel, `environments.${name}.postgres`),
      lockTimeoutSeconds: pg.lockTimeout ? parsePositiveDuration(pg.lockTimeout, `environments.${name}.postgres.lockTimeout`) : undefined,
      physical: pg.physical ? { stanza: pg.physical.stanza, configFile: abs(pg.physical.configFile), type: pg.physical.type ?? 'full', repoPath: abs(pg.physical.repoPath) } : undefined,
    },
    redis: redisSettings,
    compose: {
      files: (composeCfg.files ?? []).map((f) => abs(f)!),
      projectName: composeCfg.projectName,
      command: composeCfg.command ?? 'auto',
      services,
      healthTimeoutSeconds: composeCfg.healthTimeout ? parseDuration(composeCfg.healthTimeout, `environments.${name}.compose.healthTimeout`) : 120,
      settleSeconds: composeCfg.settle ? parseDuration(composeCfg.settle, `environments.${name}.compose.settle`) : 5,
      requireOwnedHealth: composeCfg.requireOwnedHealth ?? false,
    },
    retention: {
      keepLast: env.retention?.keepLast ?? 7,
      keepDaily: env.retention?.keepDaily ?? 7,
      keepWeekly: env.retention?.keepWeekly ?? 4,
      preRestore: { keepLast: env.retention?.preRestore?.keepLast ?? 3, keepDays: env.retention?.preRestore?.keepDays ?? 7 },
    },
    backupEverySeconds: env.backup?.every ? parseDuration(env.backup.every, `environments.${name}.backup.every`) : undefined,
    drill: {
      maxAgeSeconds: drillCfg.maxAge ? parseDuration(drillCfg.maxAge, `environments.${name}.drill.maxAge`) : 7 * 86400,
      everySeconds: drillCfg.every ? parseDuration(drillCfg.every, `environments.${name}.drill.every`) : undefined,
      targetUrl: drillTarget,
      smokeSql: abs(drillCfg.smokeSql),
      windowSeconds: drillCfg.window ? parseDuration(drillCfg.window, `environments.${name}.drill.window`) : 7 * 86400,
      appCheck: drillCfg.appCheck
        ? {
            image: drillCfg.appCheck.image,
            databaseUrlEnv: drillCfg.appCheck.databaseUrlEnv ?? 'DATABASE_URL',
            healthUrl: drillCfg.appCheck.healthUrl,
            timeoutSeconds: drillCfg.appCheck.timeout
              ? parsePositiveDuration(drillCfg.appCheck.timeout, `environments.${name}.drill.appCheck.timeout`, 'give the application time to start, e.g. 60s')
              : 60,
            env: drillCfg.appCheck.env ?? {},
            command: drillCfg.appCheck.command,
          }
        : undefined,
    },
    tenants: {
      format: tenantsCfg.format ?? 'ndjson',
      rowCap: tenantsCfg.rowCap ?? 1_000_000,
      byteCap: parseByteSize(tenantsCfg.byteCap ?? '10GiB'),
      keep: tenantsCfg.keep ?? 3,
      lastWriteQuery: tenantsCfg.lastWriteQuery,
      crossTenantRows: tenantsCfg.crossTenantRows ?? 'fail',
      collections: tenantsCfg.collections ?? [],
    },
    manifest: {
      publicKey: abs(env.manifest?.publicKey),
      certificateIdentity: env.manifest?.certificateIdentity,
      certificateOidcIssuer: env.manifest?.certificateOidcIssuer,
      certificateSourceRepository: env.manifest?.certificateSourceRepository,
      certificateSourceRef: env.manifest?.certificateSourceRef,
      trustedRoot: abs(env.manifest?.trustedRoot),
    },
    preflight: {
      ...env.preflight,
      envFile: abs(env.preflight?.envFile),
      scripts: env.preflight?.scripts,
      nginxConfig: abs(env.preflight?.nginxConfig),
      caddyConfig: abs(env.preflight?.caddyConfig),
    },
    hooks: { postRestore: resolveHooks(env.hooks?.postRestore ?? [], name, options.env, secrets) },
    storage,
    notify,
    ...(env.encryption ? { encryption: { recipients: parseRecipients(env.encryption.recipients, `environments.${name}.encryption.recipients`) } } : {}),
    secrets,
  };
}

/**
 * An environment's URL: the flag (given for this one command) wins; then the variable the
 * environment's config names; the generic variable (DATABASE_URL, REDIS_URL) applies only where the
 * config names none, so a production URL in DATABASE_URL never reaches `--env staging`. A named
 * variable that is unset leaves the URL unset (the command then says to set it), never the generic one.
 */
function chooseUrl(flag: string | undefined, flagName: string, generic: string, named: string | undefined, namedKey: string, env: ResolveOptions['env']): { url?: string; source?: string } {
  if (flag !== undefined) return { url: flag, source: flagName };
  if (named) return env[named] === undefined ? {} : { url: env[named], source: `${named} (${namedKey})` };
  if (env[generic] !== undefined) return { url: env[generic], source: generic };
  return {};
}

function resolveStorage(config: StorageConfig, env: ResolveOptions['env']): StorageSettings {
  const credentialEnv = { accessKeyId: config.accessKeyIdEnv ?? 'AWS_ACCESS_KEY_ID', secretAccessKey: config.secretAccessKeyEnv ?? 'AWS_SECRET_ACCESS_KEY' };
  // With a profile, the SDK's chain reads the shared files (and skips the AWS_* key variables, as the SDK does).
  const accessKeyId = config.profile ? undefined : env[credentialEnv.accessKeyId];
  const secretAccessKey = config.profile ? undefined : env[credentialEnv.secretAccessKey];
  // A session token only accompanies the default AWS variables (temporary credentials from OIDC).
  const sessionToken = config.accessKeyIdEnv === undefined ? env.AWS_SESSION_TOKEN || undefined : undefined;
  const prefix = (config.prefix ?? '').replace(/^\/+|\/+$/g, '');
  const storage: StorageSettings = { ...config, prefix: prefix ? `${prefix}/` : '', credentialEnv };
  // Not enumerable, so printing or serialising the settings (config check, --json) never carries the keys.
  Object.defineProperty(storage, 'credentials', { value: accessKeyId && secretAccessKey ? { accessKeyId, secretAccessKey, sessionToken } : undefined, enumerable: false });
  return storage;
}

function validateUrl(url: string, protocols: string[], source: string, example: string): void {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw usageError('BAD_URL', `${source} is not a valid URL`, `write it as ${example}`);
  }
  if (!protocols.includes(parsed.protocol)) {
    throw usageError('BAD_URL', `${source} uses the scheme "${parsed.protocol}"; expected ${protocols.join(' or ')}`, `write it as ${example}`);
  }
}

const SIZE_UNITS: Record<string, number> = { B: 1, K: 1e3, KB: 1e3, KIB: 1024, M: 1e6, MB: 1e6, MIB: 1024 ** 2, G: 1e9, GB: 1e9, GIB: 1024 ** 3, T: 1e12, TB: 1e12, TIB: 1024 ** 4 };

export function parseByteSize(value: number | string): number {
  if (typeof value === 'number') return value;
  const match = /^(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?$/i.exec(value.trim());
  const unit = (match?.[2] ?? 'B').toUpperCase();
  if (!match || SIZE_UNITS[unit] === undefined) throw usageError('BAD_SIZE', `"${value}" is not a size`, 'write a number with B, KB, MB, GB, KiB, MiB or GiB');
  return Math.round(Number(match[1]) * SIZE_UNITS[unit]!);
}

/** `postgres.compress`, else the legacy `compressLevel` as a gzip level; both at once is ambiguous. */
function resolveCompression(compress: string | number | undefined, level: number | undefined, where: string): Compression | undefined {
  if (compress !== undefined && level !== undefined) {
    throw usageError('CONFIG_INVALID', `${where}: set compress or compressLevel, not both`, `remove ${where}.compressLevel (compressLevel: N is the same as compress: gzip:N)`);
  }
  if (compress !== undefined) return parseCompression(String(compress), `${where}.compress`);
  return level === undefined ? undefined : fromGzipLevel(level);
}

/** A post-restore hook as it runs: headers resolved from their environment variables (registered as secrets). */
export type ResolvedHook = HookConfig & { headers?: Record<string, string> };

function resolveHooks(hooks: HookConfig[], env: string, vars: Record<string, string | undefined>, secrets: string[]): ResolvedHook[] {
  return hooks.map((hook, i) => {
    if (!('http' in hook) || !hook.headersFromEnv) return hook;
    const headers: Record<string, string> = {};
    for (const [header, variable] of Object.entries(hook.headersFromEnv)) {
      const value = vars[variable];
      if (!value)
        throw usageError(
          'HOOK_HEADER_UNSET',
          `environments.${env}.hooks.postRestore[${i}].headersFromEnv.${header}: the environment variable ${variable} is unset or empty`,
          `export ${variable} (in Actions: env: ${variable}: \${{ secrets.... }}) or remove the header`,
        );
      headers[header] = value;
      secrets.push(value);
    }
    return { ...hook, headers };
  });
}
