import { resolve as resolvePath } from 'node:path';
import { defaultOwner } from '../catalog/lock';
import { Catalog } from '../catalog/store';
import { ComposeDriver, detectComposeCommand } from '../deploy/compose';
import { migrationHeadProbe } from '../deploy/database';
import { deployRelease, rollbackRelease, type DatabaseProbe, type DeployEnvironment, type DeployOutcome } from '../deploy/deploy';
import { readHistory, type HistoryEvent } from '../deploy/history';
import { manifestVerifier } from '../deploy/manifest-verifier';
import { usageError } from '../errors';
import { ComposeRunner, LocalRunner, type Runner } from '../runner/runner';
import { parseDuration } from '../settings/duration';
import type { EnvironmentSettings } from '../settings/resolve';
import { singleCommandAction } from './action-spec';
import { POLICY_INPUTS, verificationPolicyFor } from './policy';
import { environmentFor, type CommandContext, type CommandResult, type CommandSpec, type InputSpec, type OutputSpec } from './spec';

const SHARED_INPUTS: InputSpec[] = [
  { name: 'compose-file', type: 'list', description: "Compose files, in order; default: the environment's compose.files." },
  { name: 'project-name', type: 'string', description: "Compose project name; default: the environment's compose.projectName." },
  ...POLICY_INPUTS,
  { name: 'health-timeout', type: 'string', description: 'How long api, web and worker may take to become healthy, e.g. 90s or 2m; default: compose.healthTimeout (2m).' },
  { name: 'lock-wait', type: 'string', description: 'How long to wait for another deploy, rollback or restore holding the lock, e.g. 5m; default: 0 (fail at once).' },
];

const DEPLOY_OUTPUTS: OutputSpec[] = [
  { name: 'release', description: 'The release now running.' },
  { name: 'previous-release', description: 'The release that ran before (empty on a first deploy).' },
  { name: 'deployment', description: 'Id of the deployment record in the catalog.' },
  { name: 'override-file', description: 'The generated Compose override file that pins the images, kept in the catalog.' },
];

export const deployCommand: CommandSpec = {
  name: 'deploy',
  summary: 'Deploy api, web and worker on the digests of a verified release manifest',
  inputs: [{ name: 'release', type: 'string', description: 'The release version to deploy (its manifest must be in the catalog).', required: true }, ...SHARED_INPUTS],
  outputs: DEPLOY_OUTPUTS,
  implemented: true,
  async run(ctx) {
    const release = ctx.inputs.requiredString('release', 'pass --release <version>, e.g. --release v42');
    const { environment, healthTimeoutSeconds } = await deployEnvironmentFor(ctx);
    const outcome = await deployRelease(environment, { release, healthTimeoutSeconds });
    return outcomeResult(outcome);
  },
};

export const rollbackCommand: CommandSpec = {
  name: 'rollback',
  summary: 'Roll api, web and worker back to a verified earlier release',
  inputs: [
    { name: 'to', type: 'string', description: 'The release to go back to, or "previous" (the one that ran before the current one).', default: 'previous' },
    ...SHARED_INPUTS,
    {
      name: 'allow-schema-ahead',
      type: 'boolean',
      description: "Roll back even though the database is on a newer migration head than the target release expects (only when those migrations are backward compatible).",
      default: 'false',
    },
  ],
  outputs: DEPLOY_OUTPUTS,
  implemented: true,
  async run(ctx) {
    const to = ctx.inputs.requiredString('to', 'pass --to <version> or --to previous');
    const allowSchemaAhead = ctx.inputs.boolean('allow-schema-ahead');
    const { environment, healthTimeoutSeconds } = await deployEnvironmentFor(ctx);
    const outcome = await rollbackRelease(environment, { to, healthTimeoutSeconds, allowSchemaAhead });
    return outcomeResult(outcome);
  },
};

export const historyCommand: CommandSpec = {
  name: 'history',
  summary: "Show the environment's deploy and rollback history",
  inputs: [{ name: 'limit', type: 'string', description: 'Show only the last N events.' }],
  outputs: [],
  implemented: true,
  async run(ctx) {
    const settings = environmentFor(ctx);
    const limitText = ctx.inputs.string('limit');
    const limit = limitText === undefined ? undefined : Number(limitText);
    if (limit !== undefined && (!Number.isInteger(limit) || limit < 1)) throw usageError('BAD_INPUT', `--limit must be a positive whole number (got "${limitText}")`, 'pass --limit 20');
    const all = await readHistory(new Catalog(settings.store), settings.name);
    const events = limit ? all.slice(-limit) : all;
    return { json: events, text: formatHistory(settings.name, events) };
  },
};

export const deployAction = singleCommandAction('deploy', 'Deploy api, web and worker on the image digests of a verified release manifest.', deployCommand);
export const rollbackAction = singleCommandAction('rollback', 'Roll api, web and worker back together to a verified earlier release.', rollbackCommand);

async function deployEnvironmentFor(ctx: CommandContext): Promise<{ environment: DeployEnvironment; healthTimeoutSeconds: number }> {
  const settings = environmentFor(ctx);
  const files = ctx.inputs.list('compose-file').map((file) => resolvePath(ctx.cwd, file));
  const composeFiles = files.length ? files : settings.compose.files;
  if (composeFiles.length === 0) {
    throw usageError('COMPOSE_FILES_MISSING', `no Compose file for environment ${settings.name}`, `pass --compose-file docker-compose.yml, or set compose.files under environments.${settings.name} in lifeline.yml`);
  }
  const healthTimeoutText = ctx.inputs.string('health-timeout');
  const healthTimeoutSeconds = healthTimeoutText ? parseDuration(healthTimeoutText, '--health-timeout') : settings.compose.healthTimeoutSeconds;
  const lockWaitText = ctx.inputs.string('lock-wait');
  const policy = verificationPolicyFor(ctx, settings);
  const catalog = new Catalog(settings.store);
  // The docker CLIs get the caller's environment: DOCKER_HOST (also ssh://), DOCKER_CONFIG, credentials.
  const runner = new LocalRunner({ baseEnv: ctx.env });
  const command = await detectComposeCommand(runner, settings.compose.command, ctx.env.PATH);
  return {
    healthTimeoutSeconds,
    environment: {
      catalog,
      env: settings.name,
      driver: new ComposeDriver(runner, { command, files: composeFiles, projectName: ctx.inputs.string('project-name') ?? settings.compose.projectName }),
      services: settings.compose.services,
      verifier: manifestVerifier(catalog, settings.name, policy),
      logger: ctx.logger,
      owner: defaultOwner(ctx.env),
      lockWaitSeconds: lockWaitText ? parseDuration(lockWaitText, '--lock-wait') : 0,
      database: databaseProbe(settings, command, composeFiles, ctx),
    },
  };
}

function databaseProbe(settings: EnvironmentSettings, composeCommand: readonly string[], composeFiles: string[], ctx: CommandContext): DatabaseProbe | undefined {
  const { url, migrationHeadQuery, service, binDir, database } = settings.postgres;
  if (!url || !migrationHeadQuery) return undefined;
  const runner: Runner = service
    ? new ComposeRunner({ composeCommand: [...composeCommand], files: composeFiles, projectName: settings.compose.projectName, service, baseEnv: ctx.env })
    : new LocalRunner({ binDirs: binDir ? [binDir] : [], baseEnv: ctx.env });
  return migrationHeadProbe(runner, { url, migrationHeadQuery, database });
}

function outcomeResult(outcome: DeployOutcome): CommandResult {
  const seconds = ((outcome.durationsMs.total ?? 0) / 1000).toFixed(1);
  const verb = outcome.action === 'deploy' ? 'deployed' : 'rolled back to';
  const text = `${verb} ${outcome.release}${outcome.from ? ` (from ${outcome.from})` : ''} in ${seconds}s; api, web and worker are healthy\noverride: ${outcome.overrideFile}`;
  const rows = Object.entries(outcome.images)
    .map(([role, image]) => `| ${role} | \`${image}\` |`)
    .join('\n');
  return {
    json: outcome,
    text,
    outputs: { release: outcome.release, 'previous-release': outcome.from ?? '', deployment: outcome.deployment, 'override-file': outcome.overrideFile },
    summary: `### ${outcome.action === 'deploy' ? 'Deploy' : 'Rollback'}: ${outcome.release}\n\n${outcome.from ? `From ${outcome.from}. ` : ''}All three services healthy after ${seconds}s.\n\n| service | image |\n|---|---|\n${rows}\n`,
    annotations: outcome.warnings.map((message) => ({ level: 'warning' as const, message })),
  };
}

function formatHistory(env: string, events: HistoryEvent[]): string {
  if (events.length === 0) return `${env}: no deploys or rollbacks recorded yet`;
  return events
    .map((e) => {
      const total = e.durationsMs.total !== undefined ? ` ${(e.durationsMs.total / 1000).toFixed(1)}s` : '';
      const detail = e.result === 'succeeded' ? '' : ` (${e.failedService ? `${e.failedService}: ` : ''}${(e.reason ?? '').split('\n')[0]}; running: ${e.running ?? 'unknown'})`;
      return `${e.at}  ${e.action.padEnd(8)} ${(e.from ?? '-').padEnd(10)} -> ${e.to.padEnd(10)} ${e.result.padEnd(9)} by ${e.by}${total}${detail}`;
    })
    .join('\n');
}
