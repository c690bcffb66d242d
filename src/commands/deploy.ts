import { resolve as resolvePath } from 'node:path';
import { defaultOwner } from '../catalog/lock';
import { Catalog } from '../catalog/store';
import { migrationHeadProbe } from '../deploy/database';
import { acceptRunningRelease, deployRelease, environmentStatus, rollbackRelease, type DatabaseProbe, type DeployEnvironment, type DeployOutcome } from '../deploy/deploy';
import { describeCorruptLines, loadHistory, printable, unfinishedEvent, type HistoryEvent } from '../deploy/history';
import { describeRevocation, loadRevocations, revokeRelease, type Revocation } from '../deploy/revocation';
import { describeState } from '../deploy/state';
import { listReleases } from '../manifest/create';
import { manifestVerifier } from '../deploy/manifest-verifier';
import { usageError } from '../errors';
import { engineOnThisHost } from '../runner/listeners';
import { ComposeDriver, detectComposeCommand } from '../runner/compose';
import { composeRunner, localToolsRunner } from '../runner/factory';
import type { Runner } from '../runner/runner';
import { parseDuration } from '../settings/duration';
import { renderMarkdownTable } from '../report/table';
import type { EnvironmentSettings } from '../settings/resolve';
import { singleCommandAction } from './action-spec';
import { parsePolicyInputs, POLICY_INPUTS, verificationPolicyFor, type PolicyInputs } from './policy';
import { declaredInputs, environmentFor, type CommandContext, type CommandResult, type CommandSpec, type DeclaredInputs, type DeclaredName, type InputSpec, type OutputSpec } from './spec';

const SHARED_INPUTS = [
  { name: 'compose-file', type: 'list', description: "Compose files, in order; default: the environment's compose.files." },
  { name: 'project-name', type: 'string', description: "Compose project name; default: the environment's compose.projectName." },
  ...POLICY_INPUTS,
  { name: 'health-timeout', type: 'string', description: 'How long api, web and worker may take to become healthy, e.g. 90s or 2m; default: compose.healthTimeout (2m).' },
  {
    name: 'settle',
    type: 'string',
    description: 'After the first healthy answer, how long every check must keep passing with no container restarted or exited, e.g. 10s; default: compose.settle (5s).',
  },
  { name: 'lock-wait', type: 'string', description: 'How long to wait for another deploy, rollback or restore holding the lock, e.g. 5m; default: 0 (fail at once).' },
] as const satisfies readonly InputSpec[];

/** The inputs deploy, rollback, status and history reconcile share; durations in seconds, undefined: the environment's. */
export interface SharedDeployInputs {
  /** Resolved from the working directory; empty: the environment's compose.files. */
  composeFiles: string[];
  projectName: string | undefined;
  policy: PolicyInputs;
  healthTimeoutSeconds: number | undefined;
  settleSeconds: number | undefined;
  lockWaitSeconds: number;
}

export function parseSharedDeployInputs(ctx: CommandContext, inputs: DeclaredInputs<DeclaredName<typeof SHARED_INPUTS>>): SharedDeployInputs {
  const duration = (name: 'health-timeout' | 'settle' | 'lock-wait') => {
    const text = inputs.string(name);
    return text ? parseDuration(text, `--${name}`) : undefined;
  };
  return {
    composeFiles: inputs.list('compose-file').map((file) => resolvePath(ctx.cwd, file)),
    healthTimeoutSeconds: duration('health-timeout'),
    settleSeconds: duration('settle'),
    lockWaitSeconds: duration('lock-wait') ?? 0,
    policy: parsePolicyInputs(ctx, inputs),
    projectName: inputs.string('project-name'),
  };
}

const DEPLOY_OUTPUTS: OutputSpec[] = [
  { name: 'release', description: 'The release now running.' },
  { name: 'previous-release', description: 'The release that ran before (empty on a first deploy).' },
  { name: 'deployment', description: 'Id of the deployment record in the catalog.' },
  { name: 'override-file', description: 'The generated Compose override file that pins the images, kept in the catalog.' },
];

const DEPLOY_INPUTS = [
  { name: 'release', type: 'string', description: 'The release version to deploy (its manifest must be in the catalog).', required: true },
  ...SHARED_INPUTS,
] as const satisfies readonly InputSpec[];

export const deployCommand: CommandSpec = {
  name: 'deploy',
  summary: 'Deploy api, web and worker on the digests of a verified release manifest',
  inputs: [...DEPLOY_INPUTS],
  outputs: DEPLOY_OUTPUTS,
  implemented: true,
  async run(ctx) {
    const inputs = declaredInputs(ctx, DEPLOY_INPUTS);
    const release = inputs.requiredString('release', 'pass --release <version>, e.g. --release v42');
    const { environment, healthTimeoutSeconds, settleSeconds } = await deployEnvironmentFor(ctx, parseSharedDeployInputs(ctx, inputs));
    const outcome = await deployRelease(environment, { release, healthTimeoutSeconds, settleSeconds });
    return outcomeResult(outcome);
  },
};

const ROLLBACK_INPUTS = [
  { name: 'to', type: 'string', description: 'The release to go back to, or "previous" (the one that ran before the current one).', default: 'previous' },
  ...SHARED_INPUTS,
  {
    name: 'allow-schema-ahead',
    type: 'boolean',
    description: 'Roll back even though the database is on a newer migration head than the target release expects (only when those migrations are backward compatible).',
    default: 'false',
  },
] as const satisfies readonly InputSpec[];

export const rollbackCommand: CommandSpec = {
  name: 'rollback',
  summary: 'Roll api, web and worker back to a verified earlier release',
  inputs: [...ROLLBACK_INPUTS],
  outputs: DEPLOY_OUTPUTS,
  implemented: true,
  async run(ctx) {
    const inputs = declaredInputs(ctx, ROLLBACK_INPUTS);
    const to = inputs.requiredString('to', 'pass --to <version> or --to previous');
    const allowSchemaAhead = inputs.boolean('allow-schema-ahead');
    const { environment, healthTimeoutSeconds, settleSeconds } = await deployEnvironmentFor(ctx, parseSharedDeployInputs(ctx, inputs));
    const outcome = await rollbackRelease(environment, { to, healthTimeoutSeconds, settleSeconds, allowSchemaAhead });
    return outcomeResult(outcome);
  },
};

const HISTORY_INPUTS = [{ name: 'limit', type: 'string', description: 'Show only the last N events.' }] as const satisfies readonly InputSpec[];

export const historyCommand: CommandSpec = {
  name: 'history',
  summary: "Show the environment's deploy and rollback history",
  inputs: [...HISTORY_INPUTS],
  outputs: [],
  implemented: true,
  async run(ctx) {
    const settings = environmentFor(ctx);
    const limitText = declaredInputs(ctx, HISTORY_INPUTS).string('limit');
    const limit = limitText === undefined ? undefined : Number(limitText);
    if (limit !== undefined && (!Number.isInteger(limit) || limit < 1)) throw usageError('BAD_INPUT', `--limit must be a positive whole number (got "${limitText}")`, 'pass --limit 20');
    const catalog = new Catalog(settings.store);
    const history = await loadHistory(catalog, settings.name);
    if (history.corrupt.length) ctx.logger.warn(describeCorruptLines(catalog, settings.name, history.corrupt));
    const { revoked } = await loadRevocations(catalog, settings.name);
    const unfinished = unfinishedEvent(history.events);
    // A `started` line that its deploy ended says nothing more; one that was never ended is the news.
    const shown = history.events.filter((e) => e.result !== 'started' || e === unfinished);
    const events = limit ? shown.slice(-limit) : shown;
    const notes = [
      unfinished
        ? `NOTE: the ${unfinished.action} of ${printable(unfinished.to)} started at ${unfinished.at} never recorded its end (still running, or killed): what runs is unknown to the history. lifeline status --env ${settings.name} shows what actually runs.`
        : '',
      ...[...revoked.values()].map((r) => `revoked: ${printable(r.release)} (${printable(describeRevocation(r))})`),
    ].filter(Boolean);
    return {
      json: events.map((e) => (revoked.has(e.to) ? { ...e, revoked: true } : e)),
      text: [formatHistory(settings.name, events, revoked), ...notes].join('\n'),
    };
  },
};

export const historyReconcileCommand: CommandSpec = {
  name: 'history reconcile',
  summary: 'After an interrupted deploy: record what api, web and worker actually run, when it is one verified, healthy release',
  inputs: [...SHARED_INPUTS],
  outputs: [{ name: 'release', description: 'The release recorded as running.' }],
  implemented: true,
  async run(ctx) {
    const { environment, healthTimeoutSeconds, settleSeconds } = await deployEnvironmentFor(ctx, parseSharedDeployInputs(ctx, declaredInputs(ctx, SHARED_INPUTS)));
    const accepted = await acceptRunningRelease(environment, { healthTimeoutSeconds, settleSeconds });
    const text = accepted.changed
      ? `recorded ${accepted.release} as running in ${environment.env} (api, web and worker run it and are healthy)`
      : `${environment.env}: the history already matches what runs (${accepted.release})`;
    return { json: { release: accepted.release, changed: accepted.changed }, text, outputs: { release: accepted.release } };
  },
};

export const statusCommand: CommandSpec = {
  name: 'status',
  summary: 'Show what api, web and worker actually run (docker inspect), which release that is, and whether the history agrees',
  inputs: [...SHARED_INPUTS],
  outputs: [],
  implemented: true,
  async run(ctx) {
    const { environment } = await deployEnvironmentFor(ctx, parseSharedDeployInputs(ctx, declaredInputs(ctx, SHARED_INPUTS)));
    const status = await environmentStatus(environment);
    const { result, lock } = status;
    const inProgress = lock.held && !lock.stale && result.unfinished;
    const verdict = result.consistent
      ? result.claimed === null
        ? 'no deploy by Lifeline is recorded yet: the history claims nothing'
        : `the history agrees: ${result.claimed} runs`
      : inProgress
        ? `a ${result.unfinished!.action} holds the lock and is in progress (${lock.info?.owner ?? 'unknown'}, pid ${lock.info?.pid ?? '?'})`
        : `the history does NOT match what runs:\n${result.differences.map((d) => `  - ${d}`).join('\n')}\nfix: lifeline rollback --env ${environment.env} --to <release>${result.state.release && result.state.allRunning ? `, or lifeline history reconcile --env ${environment.env} to record ${result.state.release}` : ''}`;
    const revoked = result.state.release && status.revoked.includes(result.state.release) ? `\nWARNING: ${result.state.release} is revoked` : '';
    return {
      json: {
        environment: environment.env,
        consistent: result.consistent,
        historySays: result.unfinished ? null : result.claimed,
        running: result.state.release,
        services: result.state.services,
        differences: result.differences,
        unfinished: result.unfinished ?? null,
        inProgress: Boolean(inProgress),
        corruptHistoryLines: status.corrupt,
      },
      text: `${environment.env}:\n${describeState(result)}\n${verdict}${revoked}`,
    };
  },
};

const REVOKE_INPUTS = [
  { name: 'release', type: 'string', description: 'The release version to revoke.', required: true },
  { name: 'reason', type: 'string', description: 'Why (recorded and shown with every refusal), e.g. "worker crashes after 3s".', required: true },
  {
    name: 'signing-key',
    type: 'string',
    description: 'ECDSA P-256 private key to sign the revocation: a PEM file path, or the PEM itself (default: LIFELINE_SIGNING_KEY); without one it is recorded unsigned. Masked in logs.',
  },
] as const satisfies readonly InputSpec[];

export const releaseRevokeCommand: CommandSpec = {
  name: 'release revoke',
  summary: 'Revoke a release: deploy and rollback refuse it from now on, and rollback --to previous skips it',
  positional: 'release',
  inputs: [...REVOKE_INPUTS],
  outputs: [],
  implemented: true,
  async run(ctx) {
    const settings = environmentFor(ctx);
    const inputs = declaredInputs(ctx, REVOKE_INPUTS);
    const release = inputs.requiredString('release', 'pass the release: lifeline release revoke v42 --reason "..."');
    const reason = inputs.requiredString('reason', 'pass --reason "what is wrong with it"');
    const signingKey = inputs.string('signing-key') ?? ctx.env.LIFELINE_SIGNING_KEY;
    const revocation = await revokeRelease({
      catalog: new Catalog(settings.store),
      env: settings.name,
      release,
      reason,
      by: defaultOwner(ctx.env),
      signingKey,
      logger: ctx.logger,
    });
    return { json: { ...revocation, signed: Boolean(revocation.bundle), bundle: undefined }, text: `${settings.name}: release ${release} ${describeRevocation(revocation)}` };
  },
};

export const releasesCommand: CommandSpec = {
  name: 'releases',
  summary: 'List the release manifests in the catalog, with revocations',
  inputs: [],
  outputs: [],
  implemented: true,
  async run(ctx) {
    const settings = environmentFor(ctx);
    const catalog = new Catalog(settings.store);
    const releases = await listReleases(catalog, settings.name);
    const { revoked } = await loadRevocations(catalog, settings.name);
    const rows = releases.map((r) => ({
      release: r.id,
      createdAt: r.metadata.createdAt,
      digest: r.metadata.digest,
      signing: r.metadata.signing,
      revoked: revoked.get(r.id) ? { ...revoked.get(r.id)!, bundle: undefined, signed: Boolean(revoked.get(r.id)!.bundle) } : null,
    }));
    const text = rows.length
      ? rows
          .map((r) =>
            `${printable(r.release).padEnd(14)} ${printable(String(r.createdAt))}  ${printable(String(r.digest)).slice(0, 19)}  ${r.revoked ? `REVOKED ${printable(describeRevocation(revoked.get(r.release)!))}` : ''}`.trimEnd(),
          )
          .join('\n')
      : `${settings.name}: no releases in the catalog`;
    return { json: rows, text };
  },
};

export const deployAction = singleCommandAction('deploy', 'Deploy api, web and worker on the image digests of a verified release manifest.', deployCommand);
export const rollbackAction = singleCommandAction('rollback', 'Roll api, web and worker back together to a verified earlier release.', rollbackCommand);

async function deployEnvironmentFor(ctx: CommandContext, input: SharedDeployInputs): Promise<{ environment: DeployEnvironment; healthTimeoutSeconds: number; settleSeconds: number }> {
  const settings = environmentFor(ctx);
  const files = input.composeFiles;
  const composeFiles = files.length ? files : settings.compose.files;
  if (composeFiles.length === 0) {
    throw usageError(
      'COMPOSE_FILES_MISSING',
      `no Compose file for environment ${settings.name}`,
      `pass --compose-file docker-compose.yml, or set compose.files under environments.${settings.name} in lifeline.yml`,
    );
  }
  const healthTimeoutSeconds = input.healthTimeoutSeconds ?? settings.compose.healthTimeoutSeconds;
  const settleSeconds = input.settleSeconds ?? settings.compose.settleSeconds;
  const policy = verificationPolicyFor(input.policy, settings);
  const catalog = new Catalog(settings.store);
  // The docker CLIs get the caller's environment: DOCKER_HOST (also ssh://), DOCKER_CONFIG, credentials.
  const runner = localToolsRunner(undefined, ctx.env);
  const command = await detectComposeCommand(runner, settings.compose.command, ctx.env.PATH);
  const projectName = input.projectName ?? settings.compose.projectName;
  return {
    healthTimeoutSeconds,
    settleSeconds,
    environment: {
      catalog,
      env: settings.name,
      driver: new ComposeDriver(runner, { command, files: composeFiles, projectName }),
      services: settings.compose.services,
      verifier: manifestVerifier(catalog, settings.name, policy),
      logger: ctx.logger,
      owner: defaultOwner(ctx.env),
      lockWaitSeconds: input.lockWaitSeconds,
      database: databaseProbe(settings, composeFiles, projectName, ctx),
      requireOwnedHealth: settings.compose.requireOwnedHealth,
      engineOnThisHost: engineOnThisHost(ctx.env),
    },
  };
}

function databaseProbe(settings: EnvironmentSettings, composeFiles: string[], projectName: string | undefined, ctx: CommandContext): DatabaseProbe | undefined {
  const { url, migrationHeadQuery, service, binDir, database } = settings.postgres;
  if (!url || !migrationHeadQuery) return undefined;
  // In the db service: docker exec on its container id, like every other PostgreSQL tool with
  // postgres.service (a Compose v1 `exec` costs 2-10 s), in the project the deploy drives.
  const runner: Runner | (() => Promise<Runner>) = service ? () => composeRunner({ ...settings.compose, files: composeFiles, projectName }, service) : localToolsRunner(binDir, ctx.env);
  return migrationHeadProbe(runner, { url, migrationHeadQuery, database });
}

function outcomeResult(outcome: DeployOutcome): CommandResult {
  const seconds = ((outcome.durationsMs.total ?? 0) / 1000).toFixed(1);
  const verb = outcome.action === 'deploy' ? 'deployed' : 'rolled back to';
  const warned = outcome.warnings.map((w) => `WARNING: ${w}`).join('\n');
  const text = `${verb} ${outcome.release}${outcome.from ? ` (from ${outcome.from})` : ''} in ${seconds}s; api, web and worker are healthy\noverride: ${outcome.overrideFile}${warned ? `\n${warned}` : ''}`;
  // Image references are code spans (they hold no pipe or newline: the deploy checked them as references).
  const table = renderMarkdownTable({ headers: ['service', 'image'], rows: Object.entries(outcome.images).map(([role, image]) => [role, `\`${image}\``]) }, { escape: 'none' });
  return {
    json: outcome,
    text,
    outputs: { release: outcome.release, 'previous-release': outcome.from ?? '', deployment: outcome.deployment, 'override-file': outcome.overrideFile },
    summary: `### ${outcome.action === 'deploy' ? 'Deploy' : 'Rollback'}: ${outcome.release}\n\n${outcome.from ? `From ${outcome.from}. ` : ''}All three services healthy after ${seconds}s.\n\n${table}\n${outcome.warnings.length ? `\n**Warnings**\n\n${outcome.warnings.map((w) => `- ${w}`).join('\n')}\n` : ''}`,
    annotations: outcome.warnings.map((message) => ({ level: 'warning' as const, message })),
  };
}

function formatHistory(env: string, events: HistoryEvent[], revoked: Map<string, Revocation>): string {
  if (events.length === 0) return `${env}: no deploys or rollbacks recorded yet`;
  // Every value is escaped: a name or reason holding a newline cannot print a line of its own.
  return events
    .map((e) => {
      const total = e.durationsMs.total !== undefined ? ` ${(e.durationsMs.total / 1000).toFixed(1)}s` : '';
      const detail =
        e.result === 'succeeded' || e.result === 'started'
          ? ''
          : ` (${e.failedService ? `${printable(e.failedService)}: ` : ''}${printable((e.reason ?? '').split('\n')[0])}; running: ${printable(e.running, 'unknown')})`;
      const mark = revoked.has(e.to) ? ' [revoked]' : '';
      return `${printable(e.at)}  ${e.action.padEnd(8)} ${printable(e.from).padEnd(10)} -> ${printable(e.to).padEnd(10)} ${e.result.padEnd(9)} by ${printable(e.by)}${total}${detail}${mark}`;
    })
    .join('\n');
}
