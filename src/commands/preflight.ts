import { isAbsolute, resolve } from 'node:path';
import { usageError } from '../errors';
import { formatFindingsMarkdown, formatFindingsText, findingAnnotations } from '../preflight/report';
import { runPreflight, type PreflightSettings } from '../preflight/run';
import type { ShellcheckSeverity } from '../preflight/scripts';
import { SERVICE_ROLES } from '../settings/resolve';
import { singleCommandAction } from './action-spec';
import { declaredInputs, environmentFor, type CommandContext, type CommandSpec, type InputSpec } from './spec';

const SEVERITIES = ['error', 'warning', 'info', 'style'] as const;

const PREFLIGHT_INPUTS = [
  { name: 'compose-file', type: 'list', description: 'Compose files to merge and check, in order (default: compose.files from the config).' },
  { name: 'env-file', type: 'string', description: 'The environment file the deploy uses (default: preflight.envFile). Only key names are ever printed.' },
  { name: 'required-env', type: 'list', description: 'Keys the environment file must set (default: preflight.requiredEnv, else the keys of a .env.example beside it).' },
  { name: 'script', type: 'list', description: 'Shell script globs for bash -n and shellcheck (default: preflight.scripts).' },
  { name: 'nginx-config', type: 'string', description: 'nginx configuration to test with nginx -t and the TLS gates (default: preflight.nginxConfig).' },
  { name: 'caddy-config', type: 'string', description: 'Caddyfile to validate and gate (default: preflight.caddyConfig).' },
  { name: 'shellcheck-severity', type: 'string', description: 'Lowest shellcheck severity that fails (default: preflight.shellcheckSeverity or warning).', choices: SEVERITIES },
  { name: 'min-docker-version', type: 'string', description: 'Oldest acceptable Docker engine (default: preflight.minDockerVersion or 20.10.0).' },
  { name: 'strict', type: 'boolean', description: 'Warnings fail too (default: preflight.strict).', default: 'false' },
] as const satisfies readonly InputSpec[];

export const preflightCommand: CommandSpec = {
  name: 'preflight',
  summary: 'Check Docker, Compose, scripts, environment values, edge config and security gates',
  implemented: true,
  inputs: [...PREFLIGHT_INPUTS],
  outputs: [
    { name: 'failures', description: 'Number of failed checks.' },
    { name: 'warnings', description: 'Number of warnings.' },
    { name: 'findings', description: 'The findings as a JSON array of { check, status, file, line, message, fix }.' },
    { name: 'files', description: 'Every file preflight read or was pointed at, as a JSON array of { path, role, status, by } (status read, missing, unreadable, not parsed or no match).' },
  ],
  async run(ctx: CommandContext) {
    const environment = environmentFor(ctx);
    const input = parsePreflightInputs(ctx);
    const settings = preflightSettings(ctx, environment, input);
    const strict = input.strict || environment.preflight.strict === true;
    const report = await ctx.logger.group(`Preflight for ${environment.name}${environment.production ? ' (production gates)' : ''}`, () => runPreflight(settings, ctx.logger));
    const failed = report.failures > 0 || (strict && report.warnings > 0);
    const verdict = `${report.failures} failed, ${report.warnings} warning${report.warnings === 1 ? '' : 's'}, ${report.findings.length - report.failures - report.warnings} passed${strict ? ' (strict: warnings fail)' : ''}`;
    // Every key present on every row (null when unknown), so scripts can rely on the shape.
    const rows = report.findings.map((f) => ({ check: f.check, status: f.status, file: f.file ?? null, line: f.line ?? null, message: f.message, fix: f.fix ?? null }));
    return {
      json: { verdict, failed, failures: report.failures, warnings: report.warnings, findings: rows, files: report.files },
      text: formatFindingsText(report.findings, verdict, report.files),
      summary: formatFindingsMarkdown(report.findings, verdict, environment.name, report.files),
      annotations: findingAnnotations(report.findings),
      outputs: { failures: String(report.failures), warnings: String(report.warnings), findings: JSON.stringify(rows), files: JSON.stringify(report.files) },
      exitCode: failed ? 1 : 0,
      failureMessage: failed ? `preflight failed: ${verdict}` : undefined,
    };
  },
};

/** The preflight flags; paths resolved from the working directory, empty lists and undefined meaning "the config's". */
export interface PreflightInputs {
  composeFiles: string[];
  envFile: string | undefined;
  requiredEnv: string[];
  scripts: string[];
  nginxConfig: string | undefined;
  caddyConfig: string | undefined;
  shellcheckSeverity: ShellcheckSeverity | undefined;
  minDockerVersion: string | undefined;
  strict: boolean;
}

export function parsePreflightInputs(ctx: CommandContext): PreflightInputs {
  const inputs = declaredInputs(ctx, PREFLIGHT_INPUTS);
  const fromCwd = (path: string | undefined) => (path === undefined ? undefined : isAbsolute(path) ? path : resolve(ctx.cwd, path));
  const composeFiles = inputs.list('compose-file').map((f) => fromCwd(f)!);
  const scripts = inputs.list('script');
  const nginxConfig = fromCwd(inputs.string('nginx-config'));
  const caddyConfig = fromCwd(inputs.string('caddy-config'));
  if (nginxConfig && caddyConfig) throw usageError('BAD_INPUT', 'give either --nginx-config or --caddy-config, not both', 'pass the configuration of the edge proxy you deploy');
  const requiredEnv = inputs.list('required-env');
  for (const key of requiredEnv) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(key)) throw usageError('BAD_INPUT', `--required-env ${key} is not an environment variable name`, 'pass names such as DATABASE_URL');
  }
  return {
    composeFiles,
    scripts,
    nginxConfig,
    caddyConfig,
    requiredEnv,
    minDockerVersion: inputs.string('min-docker-version'),
    envFile: fromCwd(inputs.string('env-file')),
    shellcheckSeverity: inputs.string('shellcheck-severity') as ShellcheckSeverity | undefined,
    strict: inputs.boolean('strict'),
  };
}

/** Flags win over the environment's config; flag paths are relative to the working directory, config paths to the config's. */
function preflightSettings(ctx: CommandContext, environment: ReturnType<typeof environmentFor>, input: PreflightInputs): PreflightSettings {
  const config = environment.preflight;
  const { nginxConfig, caddyConfig } = input;
  const minDockerVersion = input.minDockerVersion ?? config.minDockerVersion;
  if (minDockerVersion !== undefined && !/^\d+(\.\d+){0,2}$/.test(minDockerVersion)) {
    throw usageError('BAD_INPUT', `the minimum Docker version "${minDockerVersion}" is not a version`, 'write it as 24.0 or 20.10.7');
  }
  const edgeFromFlags = nginxConfig !== undefined || caddyConfig !== undefined;
  return {
    environment: environment.name,
    production: environment.production,
    cwd: ctx.cwd,
    toolEnv: ctx.env,
    composeFiles: input.composeFiles.length ? input.composeFiles : environment.compose.files,
    composeCommand: environment.compose.command,
    appServices: SERVICE_ROLES.map((role) => environment.compose.services[role].name),
    postgresService: environment.postgres.service,
    redisService: environment.redis?.service,
    allowPrivileged: config.allowPrivileged ?? [],
    allowHostNetwork: config.allowHostNetwork ?? [],
    minDockerVersion,
    envFile: input.envFile ?? config.envFile,
    requiredEnv: input.requiredEnv.length ? input.requiredEnv : (config.requiredEnv ?? []),
    scripts: input.scripts.length ? { patterns: input.scripts, baseDir: ctx.cwd } : { patterns: config.scripts ?? [], baseDir: environment.baseDir },
    shellcheckSeverity: (input.shellcheckSeverity ?? config.shellcheckSeverity ?? 'warning') as ShellcheckSeverity,
    nginxConfig: edgeFromFlags ? nginxConfig : config.nginxConfig,
    caddyConfig: edgeFromFlags ? caddyConfig : config.caddyConfig,
    databaseUrl: environment.postgres.url,
    postgresBinDir: environment.postgres.binDir,
    physical: environment.postgres.physical,
    store: environment.store,
    capabilities: {
      compose: environment.compose,
      postgresService: environment.postgres.service,
      postgresBinDir: environment.postgres.binDir,
      drillTarget: Boolean(environment.drill.targetUrl),
      redisConfigured: Boolean(environment.redis),
      redisService: environment.redis?.service,
      redisBinDir: environment.redis?.binDir,
    },
  };
}

export const preflightAction = singleCommandAction('preflight', 'Pre-deploy checks: Docker, Compose, shell scripts, environment values, edge config, security gates.', preflightCommand);
