import type { Logger } from '../logger';
import { LocalRunner } from '../runner/runner';
import { existsSync } from 'node:fs';
import { checkComposeDebug, checkEnvFiles, projectDirOf } from './compose-env';
import { ComposeSources } from './compose-source';
import { checkComposeGates, composeModel } from './compose-gates';
import { checkCommandSecrets } from './compose-secrets';
import { checkComposeConfig, checkDockerEngine, detectCompose, DEFAULT_MIN_DOCKER_VERSION } from './docker';
import { checkEdge } from './edge';
import { checkEnvValues } from './env-values';
import { displayPath, fail, FilesRead, notChecked, type CheckContext, type FileRead, type Finding } from './findings';
import { checkScripts, type ScriptPatterns, type ShellcheckSeverity } from './scripts';
import { composeRunner, localToolsRunner } from '../runner/factory';
import type { ComposeCommandSetting } from '../runner/compose';
import { checkCapabilityTools, type CapabilityToolSettings } from './capability-tools';
import { checkCatalogSpace, checkPgBackRest, checkPgDumpVersion, type PhysicalBackupSettings } from './tools';

/** Everything one preflight run looks at, resolved from flags and lifeline.yml at the door. */
export interface PreflightSettings {
  environment: string;
  production: boolean;
  cwd: string;
  /** The environment the tools run with (DOCKER_HOST, PATH, ...). */
  toolEnv: Record<string, string | undefined>;
  composeFiles: string[];
  composeCommand: ComposeCommandSetting;
  appServices: string[];
  postgresService?: string;
  redisService?: string;
  allowPrivileged: string[];
  allowHostNetwork: string[];
  minDockerVersion?: string;
  envFile?: string;
  requiredEnv: string[];
  scripts: ScriptPatterns;
  shellcheckSeverity: ShellcheckSeverity;
  nginxConfig?: string;
  caddyConfig?: string;
  databaseUrl?: string;
  postgresBinDir?: string;
  physical?: PhysicalBackupSettings;
  store: string;
  /** What each configured capability needs, where it runs (#19): see capability-tools.ts. */
  capabilities?: Omit<CapabilityToolSettings, 'environment' | 'store' | 'path'>;
}

export interface PreflightReport {
  findings: Finding[];
  failures: number;
  warnings: number;
  /** Every file the checks read or were pointed at, with what became of it. */
  files: FileRead[];
}

/** Runs every family of checks (concurrently: most time is spent waiting on tools) and collects the findings in a fixed order. */
export async function runPreflight(settings: PreflightSettings, logger: Logger): Promise<PreflightReport> {
  const files = new FilesRead({ cwd: settings.cwd });
  const ctx: CheckContext = { production: settings.production, cwd: settings.cwd, files };
  const baseEnv = { ...settings.toolEnv } as NodeJS.ProcessEnv;
  const runner = new LocalRunner({ baseEnv });
  const postgresRunner = localToolsRunner(settings.postgresBinDir, baseEnv);
  // pgBackRest works on the cluster's files, so it runs as their owner.
  const pgbackrestRunner = new LocalRunner({ baseEnv, asUser: 'postgres' });

  const timed = async (family: string, run: () => Promise<Finding[]>): Promise<Finding[]> => {
    const started = Date.now();
    const findings = await run();
    logger.debug(`preflight ${family}: ${findings.length} findings in ${Date.now() - started} ms`);
    return findings;
  };

  const dockerFamily = timed('docker', async () => {
    const needed = settings.composeFiles.length > 0;
    const [engine, cli] = await Promise.all([
      checkDockerEngine(runner, ctx, { needed, minVersion: settings.minDockerVersion ?? DEFAULT_MIN_DOCKER_VERSION }),
      needed ? detectCompose(runner, ctx, settings.composeCommand, settings.toolEnv.PATH) : Promise.resolve(undefined),
    ]);
    const validation = await checkComposeConfig(runner, ctx, cli, settings.composeFiles, settings.composeCommand);
    if (!needed) return [...engine, ...validation.findings];
    const sources = ComposeSources.load(settings.composeFiles);
    for (const file of settings.composeFiles) {
      files.add(file, 'Compose file', 'compose.*', sources.paths.includes(file) ? 'read' : existsSync(file) ? 'not parsed' : 'missing');
    }
    for (const extended of sources.extendedFiles) files.add(extended.path, `Compose file extended by ${extended.by}`, 'compose.*', extended.status);
    const extendsFindings = sources.unresolvedExtends.map((u) =>
      fail({
        check: 'compose.extends',
        file: displayPath(ctx, u.file),
        line: u.line,
        message: `service ${u.service} extends ${u.base}${u.from ? ` from ${u.from}` : ''}, which preflight does not resolve (${u.reason}): its settings were not examined`,
        fix: 'point extends at an existing file and service (paths are relative to the file that names them), or copy the settings into the service',
      }),
    );
    const model = composeModel(validation.merged, sources);
    const gates = checkComposeGates(model, sources, ctx, {
      appServices: settings.appServices,
      allowPrivileged: settings.allowPrivileged,
      allowHostNetwork: settings.allowHostNetwork,
      postgresService: settings.postgresService,
      redisService: settings.redisService,
    });
    return [
      ...engine,
      ...validation.findings,
      ...extendsFindings,
      ...gates,
      ...checkCommandSecrets(sources, ctx),
      ...checkComposeDebug(model, sources, ctx),
      ...checkEnvFiles(sources, ctx, { projectDir: projectDirOf(settings.composeFiles), envFile: settings.envFile }),
    ];
  });
  const scriptsFamily = timed('scripts', () => checkScripts(runner, ctx, settings.scripts, settings.shellcheckSeverity));
  const envFamily = timed('env', async () => checkEnvValues(ctx, { envFile: settings.envFile, requiredKeys: settings.requiredEnv }));
  const edgeFamily = timed('edge', () => checkEdge(runner, ctx, { nginxConfig: settings.nginxConfig, caddyConfig: settings.caddyConfig, path: settings.toolEnv.PATH }));
  const toolsFamily = timed('tools', async () => [
    ...(settings.postgresService ? await pgDumpInService(settings, ctx) : await checkPgDumpVersion(postgresRunner, ctx, settings.databaseUrl)),
    ...(await checkPgBackRest(pgbackrestRunner, ctx, settings.physical)),
    ...(await checkCatalogSpace(ctx, settings.store, settings.environment)),
    ...(settings.capabilities ? await checkCapabilityTools({ ...settings.capabilities, environment: settings.environment, store: settings.store, path: settings.toolEnv.PATH }) : []),
  ]);

  const findings = (await Promise.all([dockerFamily, scriptsFamily, envFamily, edgeFamily, toolsFamily])).flat();
  if (settings.physical?.configFile) files.add(settings.physical.configFile, 'pgBackRest configuration', 'pgbackrest check', existsSync(settings.physical.configFile) ? 'read' : 'missing');
  return {
    files: files.list(),
    findings,
    failures: findings.filter((f) => f.status === 'fail').length,
    warnings: findings.filter((f) => f.status === 'warn').length,
  };
}

/** pg_dump in the db service's container when it runs (docker exec on its id); a stopped service is not checked. */
async function pgDumpInService(settings: PreflightSettings, ctx: CheckContext): Promise<Finding[]> {
  const service = settings.postgresService!;
  const inService = settings.capabilities ? await composeRunner(settings.capabilities.compose, service).catch(() => undefined) : undefined;
  if (!inService)
    return [
      notChecked(
        'tools.pg_dump',
        `pg_dump runs inside the Compose service ${service}, which is not running`,
        `start the stack, then run lifeline preflight again (or compare: docker compose exec ${service} pg_dump --version)`,
      ),
    ];
  return checkPgDumpVersion(inService, ctx, settings.databaseUrl);
}
