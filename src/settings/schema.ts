import { z } from 'zod';

/** A duration written as `90s`, `15m`, `4h`, `7d`; validated into seconds by the resolver. */
const duration = z.string().regex(/^\d+(\.\d+)?\s*[smhdwSMHDW]?$/, 'a duration such as 90s, 15m, 4h or 7d');
const byteSize = z.union([z.number().int().positive(), z.string().regex(/^\d+(\.\d+)?\s*([KMGT]i?B?|B)?$/i, 'a size such as 500MB or 2GiB')]);
const envVarName = z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'an environment variable name such as DATABASE_URL');

const postgres = z
  .object({
    /** Name of the environment variable that holds the connection URL. */
    urlEnv: envVarName.optional(),
    /** Run the PostgreSQL tools inside this Compose service instead of locally. */
    service: z.string().min(1).optional(),
    database: z.string().min(1).optional(),
    /** Directory of pg_dump/pg_restore/psql when not on PATH (e.g. /usr/lib/postgresql/15/bin). */
    binDir: z.string().min(1).optional(),
    /** Query whose single value is the schema migration head, e.g. Alembic's. */
    migrationHeadQuery: z.string().min(1).optional(),
    /** Legacy: a gzip level for the custom format (0-9, 0 = none); prefer `compress`. */
    compressLevel: z.number().int().min(0).max(9).optional(),
    /** pg_dump compression, METHOD[:LEVEL] (gzip:1, zstd:3, lz4, none); default by the pg_dump version. */
    compress: z.union([z.string().min(1), z.number().int()]).optional(),
    /** How long a backup or restore waits for a table lock (a migration's) before failing with who holds it (default 60s). */
    lockTimeout: duration.optional(),
    /** Physical backups and WAL archiving through pgBackRest. */
    physical: z
      .object({
        stanza: z.string().min(1),
        configFile: z.string().min(1).optional(),
        type: z.enum(['full', 'diff', 'incr']).optional(),
        repoPath: z.string().min(1).optional(),
      })
      .strict()
      .optional(),
  })
  .strict();

const redis = z
  .object({
    urlEnv: envVarName.optional(),
    service: z.string().min(1).optional(),
    binDir: z.string().min(1).optional(),
  })
  .strict();

const composeService = z
  .object({
    /** The service name in the Compose file, when it differs from the role. */
    name: z.string().min(1).optional(),
    /** An HTTP URL that answers 2xx when healthy; otherwise the Compose healthcheck is used. */
    healthUrl: z.string().url().optional(),
  })
  .strict();

const compose = z
  .object({
    files: z.array(z.string().min(1)).min(1).optional(),
    projectName: z.string().min(1).optional(),
    /** `auto` detects `docker compose` (v2) then `docker-compose` (v1). */
    command: z.enum(['auto', 'docker compose', 'docker-compose']).optional(),
    services: z.object({ api: composeService.optional(), web: composeService.optional(), worker: composeService.optional() }).strict().optional(),
    healthTimeout: duration.optional(),
    /** How long every check must keep passing after the first healthy answer (default 5s). */
    settle: duration.optional(),
    /**
     * When the process answering a healthUrl cannot be tied to the service's new container (URL on
     * another host, no permission to read other processes' /proc): true fails, default false warns.
     * Also applies to the drill's application check.
     */
    requireOwnedHealth: z.boolean().optional(),
  })
  .strict();

const retention = z
  .object({
    keepLast: z.number().int().min(1).optional(),
    keepDaily: z.number().int().min(0).optional(),
    keepWeekly: z.number().int().min(0).optional(),
    /** Pre-restore backups are their own class and never count toward the environment's backups. */
    preRestore: z
      .object({ keepLast: z.number().int().min(0).optional(), keepDays: z.number().int().min(0).optional() })
      .strict()
      .optional(),
  })
  .strict();

/** Names the docker CLI itself reads: a container variable of that name would redirect or break the CLI that starts it. */
const DOCKER_CLI_VARIABLE = /^(DOCKER_.*|PATH|HOME)$/;
const DOCKER_CLI_VARIABLE_MESSAGE = 'not DOCKER_*, PATH or HOME: the docker CLI that starts the container reads those itself; give the application another name';
const containerVariable = envVarName.refine((name) => !DOCKER_CLI_VARIABLE.test(name), DOCKER_CLI_VARIABLE_MESSAGE);
/** Checked per key here: zod reports a bad record key only as "Invalid key in record". */
const containerEnv = z.record(z.string(), z.string()).superRefine((env, ctx) => {
  for (const name of Object.keys(env)) {
    const message = !/^[A-Za-z_][A-Za-z0-9_]*$/.test(name) ? 'an environment variable name such as APP_PORT' : DOCKER_CLI_VARIABLE.test(name) ? DOCKER_CLI_VARIABLE_MESSAGE : undefined;
    if (message) ctx.addIssue({ code: 'custom', path: [name], message });
  }
});

const appCheck = z
  .object({
    /** The image to start; default: the api image of the release running in this environment (deploy history). */
    image: z.string().min(1, 'an image reference such as registry.example.com/shop/api:v42').optional(),
    /** The variable the application reads its database URL from; it gets the restored database's URL. */
    databaseUrlEnv: containerVariable.optional(),
    /** Answers 2xx once the application is up; the container runs on the host network, so a 127.0.0.1 URL. */
    healthUrl: z
      .string()
      .url('an http URL such as http://127.0.0.1:8000/health')
      .refine((url) => /^https?:\/\//i.test(url), 'an http:// or https:// URL such as http://127.0.0.1:8000/health'),
    timeout: duration.optional(),
    /** Extra variables for the container (passed through the environment of the docker CLI, never on its command line). */
    env: containerEnv.optional(),
    /** Overrides the image's command, e.g. ["uvicorn", "app.main:app", "--port", "8000"]. */
    command: z.array(z.string().min(1)).min(1, 'at least the program to run, e.g. ["uvicorn", "app.main:app"]').optional(),
  })
  .strict();

const drill = z
  .object({
    /** Oldest acceptable passing drill for the release gate. */
    maxAge: duration.optional(),
    /** How often drills are scheduled (the drill workflow's or cron's schedule): checked against maxAge. */
    every: duration.optional(),
    /** Environment variable holding the URL of an isolated drill database; default: a throwaway cluster. */
    targetUrlEnv: envVarName.optional(),
    smokeSql: z.string().min(1).optional(),
    /** Window over which the largest gap between backups counts toward RPO. */
    window: duration.optional(),
    /** Run the api image against the restored data and wait for its health. */
    appCheck: appCheck.optional(),
  })
  .strict();

const tenantCollection = z
  .object({
    table: z.string().min(1),
    /** The column holding the tenant id, on `table` itself or, with `via`, on the path's last table (default `tenant_id`). */
    column: z.string().min(1).optional(),
    /** A join path to the tenant column: hops `order_id -> orders.id`, each from the previous table. */
    via: z.array(z.string().min(1)).optional(),
    rowCap: z.number().int().positive().optional(),
  })
  .strict();

const tenants = z
  .object({
    format: z.enum(['ndjson', 'csv']).optional(),
    rowCap: z.number().int().positive().optional(),
    byteCap: byteSize.optional(),
    keep: z.number().int().min(1).optional(),
    /** SQL returning the tenant's last write as one timestamp, with `:'tenant'` where the id goes (as a quoted literal); default: the latest timestamp column over the tenant's rows. */
    lastWriteQuery: z.string().min(1).optional(),
    /** A `via` row whose own tenant column names another tenant than its parent's: `fail` the export and plan (default), or `exclude` it and count it. */
    crossTenantRows: z.enum(['fail', 'exclude']).optional(),
    collections: z.array(tenantCollection).optional(),
  })
  .strict();

const manifest = z
  .object({
    publicKey: z.string().min(1).optional(),
    /** Keyless: the trusted signing identity, or a list of them (keep the old workflow commit's identity when upgrading Lifeline). */
    certificateIdentity: z.union([z.string().min(1), z.array(z.string().min(1)).min(1)]).optional(),
    certificateOidcIssuer: z.string().url().optional(),
    /** Keyless: the exact source repository URI the certificate must name (a reusable workflow's identity does not). */
    certificateSourceRepository: z.string().url().optional(),
    /** Keyless: the exact source ref, e.g. refs/heads/main. */
    certificateSourceRef: z.string().min(1).optional(),
    trustedRoot: z.string().min(1).optional(),
  })
  .strict();

const preflight = z
  .object({
    envFile: z.string().min(1).optional(),
    requiredEnv: z.array(envVarName).optional(),
    scripts: z.array(z.string().min(1)).optional(),
    nginxConfig: z.string().min(1).optional(),
    caddyConfig: z.string().min(1).optional(),
    shellcheckSeverity: z.enum(['error', 'warning', 'info', 'style']).optional(),
    allowPrivileged: z.array(z.string()).optional(),
    /** Services allowed `network_mode: host` (test stacks on hosts without a bridge need it). */
    allowHostNetwork: z.array(z.string()).optional(),
    minDockerVersion: z.string().optional(),
    strict: z.boolean().optional(),
  })
  .strict();

/** A credential inside a hook URL ends up in logs, job summaries and proxies' access logs. */
const CREDENTIAL_PARAM = /^(.*token.*|.*secret.*|.*passw(or)?d.*|pwd|.*api[-_]?key.*|key|sig|signature|auth|authorization|credentials?|x-amz-.*)$/i;

export function hookUrlCredential(url: string): string | undefined {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return undefined;
  }
  if (parsed.username || parsed.password) return 'a user name or password (user:password@)';
  for (const name of parsed.searchParams.keys()) if (CREDENTIAL_PARAM.test(name)) return `a credential in the query string (?${name}=)`;
  return undefined;
}

const hook = z.union([
  z
    .object({
      http: z.string().url(),
      method: z.enum(['GET', 'POST', 'PUT']).optional(),
      expectStatus: z.number().int().optional(),
      /** Request headers whose values come from environment variables, e.g. { Authorization: HOOK_AUTHORIZATION }. */
      headersFromEnv: z.record(z.string().regex(/^[A-Za-z0-9-]+$/, 'an HTTP header name such as Authorization'), envVarName).optional(),
    })
    .strict(),
  z.object({ command: z.array(z.string().min(1)).min(1) }).strict(),
]);

const storage = z
  .object({
    provider: z.literal('s3'),
    endpoint: z.string().url().optional(),
    region: z.string().min(1),
    bucket: z.string().min(1),
    prefix: z.string().optional(),
    accessKeyIdEnv: envVarName.optional(),
    secretAccessKeyEnv: envVarName.optional(),
    /** A profile of the AWS shared config/credentials files (AWS_CONFIG_FILE, AWS_SHARED_CREDENTIALS_FILE); not with the *Env keys. */
    profile: z.string().min(1).optional(),
    /** Path-style addressing (bucket in the path); default: on with an endpoint, off for AWS. */
    pathStyle: z.boolean().optional(),
    /** Attempts per request, the first included (the SDK's standard retry mode, with backoff); default 5. */
    maxAttempts: z.number().int().min(1).max(20).optional(),
    /** `sha256`: uploads carry x-amz-checksum-sha256 (default); `none`: no flexible checksum, for providers that reject it (Content-MD5 and x-amz-meta-sha256 stay). */
    checksums: z.enum(['sha256', 'none']).optional(),
    serverSideEncryption: z.enum(['AES256', 'aws:kms']).optional(),
    objectLock: z
      .object({ mode: z.enum(['GOVERNANCE', 'COMPLIANCE']), days: z.number().int().positive() })
      .strict()
      .optional(),
    reviewed: z
      .object({ provider: z.string().min(1), by: z.string().min(1), date: z.string().regex(/^\d{4}-\d{2}-\d{2}$/, 'a date as YYYY-MM-DD') })
      .strict()
      .optional(),
  })
  .strict()
  .refine((s) => !(s.profile && (s.accessKeyIdEnv || s.secretAccessKeyEnv)), 'set profile or accessKeyIdEnv/secretAccessKeyEnv, not both');

/** Who hears about what, and the dead-man's switch. Both URLs are secrets: from the file, or from the variable named. */
const notify = z
  .object({
    /** POST one JSON message per command (Slack/Mattermost incoming-webhook compatible: it has `text`). */
    webhook: z.string().url().optional(),
    webhookEnv: envVarName.optional(),
    /** healthchecks.io convention: URL/start, URL, URL/fail. */
    ping: z.string().url().optional(),
    pingEnv: envVarName.optional(),
    /** The scheduled commands that ping (default: backup). */
    pingCommands: z
      .array(z.enum(['backup', 'verify', 'prune', 'sync', 'drill', 'gate']))
      .min(1)
      .optional(),
    /** Which outcomes post to the webhook (default: failed and refused; drills and gates always). */
    on: z.array(z.enum(['succeeded', 'failed', 'refused'])).optional(),
  })
  .strict()
  .refine((n) => !(n.webhook && n.webhookEnv) && !(n.ping && n.pingEnv), 'set webhook or webhookEnv (ping or pingEnv), not both');

export const environmentSchema = z
  .object({
    /** Recovery point objective: the most data, in time, this environment may lose. */
    rpo: duration.optional(),
    /** Recovery time objective: how long a restore may take. */
    rto: duration.optional(),
    /** Order in which environments are restored after a wider outage (1 first). */
    restorePriority: z.number().int().min(1).optional(),
    /** Who carries out this environment's restore steps (named in the runbook). */
    owner: z.string().min(1).optional(),
    store: z.string().min(1).optional(),
    postgres: postgres.optional(),
    redis: redis.optional(),
    compose: compose.optional(),
    retention: retention.optional(),
    /** How often backups are scheduled (the backup workflow's or cron's schedule): checked against the RPO. */
    backup: z.object({ every: duration.optional() }).strict().optional(),
    drill: drill.optional(),
    tenants: tenants.optional(),
    manifest: manifest.optional(),
    preflight: preflight.optional(),
    hooks: z
      .object({
        postRestore: z
          .array(hook)
          .superRefine((hooks, ctx) => {
            hooks.forEach((h, i) => {
              const credential = 'http' in h ? hookUrlCredential(h.http) : undefined;
              // The message never repeats the URL: it holds the credential.
              if (credential)
                ctx.addIssue({
                  code: 'custom',
                  path: [i, 'http'],
                  message: `the URL carries ${credential}; put it in a header from an environment variable instead: headersFromEnv: { Authorization: HOOK_AUTHORIZATION }`,
                });
            });
          })
          .optional(),
      })
      .strict()
      .optional(),
    storage: storage.optional(),
    notify: notify.optional(),
    /** Encryption at rest with age: every payload Lifeline stores is encrypted to these public keys (`age1...`). */
    encryption: z
      .object({ recipients: z.array(z.string().min(1)).min(1, 'name at least one recipient (age-keygen prints its public key), or remove encryption:') })
      .strict()
      .optional(),
    /** Production turns on the stricter preflight gates. */
    production: z.boolean().optional(),
  })
  .strict();

export const configSchema = z
  .object({
    version: z.literal(1),
    /** Default catalog root for every environment. */
    store: z.string().min(1).optional(),
    environments: z.record(z.string().regex(/^[a-z0-9][a-z0-9_-]*$/, 'lowercase letters, digits, - and _'), environmentSchema),
  })
  .strict();

export type LifelineConfig = z.infer<typeof configSchema>;
export type EnvironmentConfig = z.infer<typeof environmentSchema>;
export type TenantCollectionConfig = z.infer<typeof tenantCollection>;
export type HookConfig = z.infer<typeof hook>;
export type StorageConfig = z.infer<typeof storage>;
