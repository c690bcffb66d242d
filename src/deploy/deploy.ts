import { join } from 'node:path';
import { acquireLock } from '../catalog/lock';
import { newEntryId, type Catalog, type EntryMetadata } from '../catalog/store';
import { failure, isLifelineError, refusal, toLifelineError } from '../errors';
import type { Logger } from '../logger';
import { SERVICE_ROLES, type ComposeSettings, type ServiceRole } from '../settings/resolve';
import type { ComposeDriver } from './compose';
import { waitForHealth, type HealthTarget } from './health';
import { appendHistory, currentRelease, previousRelease, readHistory, type DeployAction, type HistoryEvent } from './history';
import { renderOverride } from './override';
import { assertPinnedImages, type ReleaseVerifier, type VerifiedRelease } from './release';

export const DEPLOYMENT_METADATA = 'deployment.json';
export const OVERRIDE_FILE = 'compose.override.yml';
const LOG_TAIL_LINES = 20;

/** Everything a deploy or rollback of one environment works with, built once at the door. */
export interface DeployEnvironment {
  catalog: Catalog;
  env: string;
  driver: ComposeDriver;
  services: ComposeSettings['services'];
  verifier: ReleaseVerifier;
  logger: Logger;
  /** Who is deploying, for the lock and the history. */
  owner: string;
  /** How long to wait for another deploy's lock; 0 fails at once. */
  lockWaitSeconds?: number;
  /** The database's current migration head; absent when no database is configured. */
  database?: DatabaseProbe;
}

export interface DatabaseProbe {
  migrationHead(): Promise<string | null>;
  /** For the restore command printed by a schema refusal: the URL with its password masked, and the database name. */
  maskedUrl: string;
  name: string;
}

export interface DeployOutcome {
  action: DeployAction;
  release: string;
  from: string | null;
  deployment: string;
  overrideFile: string;
  images: Record<ServiceRole, string>;
  durationsMs: Record<string, number>;
  warnings: string[];
}

interface DeploymentMetadata extends EntryMetadata {
  schemaVersion: 1;
  id: string;
  createdAt: string;
  action: DeployAction;
  release: string;
  from: string | null;
  images: Record<string, string>;
  manifestDigest: string | null;
  by: string;
}

/** `lifeline deploy`: verify the release, then move api, web and worker onto its digests together. */
export async function deployRelease(ctx: DeployEnvironment, options: { release: string; healthTimeoutSeconds: number }): Promise<DeployOutcome> {
  const started = Date.now();
  const target = await verifyOrRecord(ctx, 'deploy', options.release, started);
  const verify = Date.now() - started;
  return withEnvironmentLock(ctx, 'deploy', async () => {
    const history = await readHistory(ctx.catalog, ctx.env);
    return switchRelease(ctx, { action: 'deploy', target, history, started, healthTimeoutSeconds: options.healthTimeoutSeconds, warnings: [], extraDurations: { verify } });
  });
}

/**
 * `lifeline rollback`: like a deploy to an earlier release, after one more check: the database
 * must not be on a newer migration head than the target release expects.
 */
export async function rollbackRelease(ctx: DeployEnvironment, options: { to: string; healthTimeoutSeconds: number; allowSchemaAhead: boolean }): Promise<DeployOutcome> {
  const started = Date.now();
  const version = options.to === 'previous' ? resolvePrevious(ctx, await readHistory(ctx.catalog, ctx.env)) : options.to;
  const target = await verifyOrRecord(ctx, 'rollback', version, started);
  const verify = Date.now() - started;
  return withEnvironmentLock(ctx, 'rollback', async () => {
    const history = await readHistory(ctx.catalog, ctx.env);
    // Another deploy may have finished while we verified: "previous" must still mean the same release.
    if (options.to === 'previous' && resolvePrevious(ctx, history) !== version) {
      throw failure('HISTORY_CHANGED', `the history of ${ctx.env} changed while release ${version} was being verified`, { fix: 're-run the rollback' });
    }
    const warnings: string[] = [];
    const schemaStarted = Date.now();
    try {
      await checkSchema(ctx, target, currentRelease(history)?.release ?? null, options.allowSchemaAhead, warnings);
    } catch (error) {
      if (isLifelineError(error) && error.kind === 'refused') {
        await record(ctx, history, { action: 'rollback', to: target.version, result: 'refused', deployment: null, reason: error.message, durationsMs: { total: Date.now() - started } });
      }
      throw error;
    }
    return switchRelease(ctx, { action: 'rollback', target, history, started, healthTimeoutSeconds: options.healthTimeoutSeconds, warnings, extraDurations: { verify, schemaCheck: Date.now() - schemaStarted } });
  });
}

function resolvePrevious(ctx: DeployEnvironment, history: HistoryEvent[]): string {
  const previous = previousRelease(history);
  if (!previous) {
    throw refusal('NO_PREVIOUS_RELEASE', `the history of ${ctx.env} has no earlier release to roll back to`, `name the release: lifeline rollback --env ${ctx.env} --to <version> (lifeline history --env ${ctx.env} lists what ran)`);
  }
  return previous;
}

async function verifyOrRecord(ctx: DeployEnvironment, action: DeployAction, version: string, started: number): Promise<VerifiedRelease> {
  try {
    const release = await ctx.logger.group(`Verify the manifest of release ${version}`, () => ctx.verifier.verify(version));
    assertPinnedImages(release);
    return release;
  } catch (error) {
    const lifelineError = toLifelineError(error);
    const history = await readHistory(ctx.catalog, ctx.env);
    await record(ctx, history, { action, to: version, result: 'failed', deployment: null, reason: `manifest verification: ${lifelineError.message}`, durationsMs: { total: Date.now() - started } });
    throw lifelineError;
  }
}

async function withEnvironmentLock<T>(ctx: DeployEnvironment, command: string, fn: () => Promise<T>): Promise<T> {
  const lock = await acquireLock(ctx.catalog.envDir(ctx.env), ctx.env, { command: `lifeline ${command}`, owner: ctx.owner, waitSeconds: ctx.lockWaitSeconds ?? 0 });
  try {
    return await fn();
  } finally {
    await lock.release();
  }
}

interface SwitchPlan {
  action: DeployAction;
  target: VerifiedRelease;
  history: HistoryEvent[];
  started: number;
  healthTimeoutSeconds: number;
  warnings: string[];
  extraDurations?: Record<string, number>;
}

async function switchRelease(ctx: DeployEnvironment, plan: SwitchPlan): Promise<DeployOutcome> {
  const { target, action } = plan;
  const current = currentRelease(plan.history);
  const from = current?.release ?? null;
  const durationsMs: Record<string, number> = { ...plan.extraDurations };
  const serviceNames = SERVICE_ROLES.map((role) => ctx.services[role].name);

  const deploymentId = newEntryId();
  // Asking the engine which images it has overlaps with the catalog write (fsyncs).
  const imagesPresent = ctx.driver.imagesPresent(SERVICE_ROLES.map((role) => target.images[role]));
  const overrideFile = await writeDeployment(ctx, deploymentId, action, target, from);
  const base = { action, to: target.version, deployment: deploymentId };
  const time = async <T>(phase: string, fn: () => Promise<T>) => {
    const phaseStarted = Date.now();
    try {
      return await fn();
    } finally {
      durationsMs[phase] = Date.now() - phaseStarted;
    }
  };

  try {
    await time('pull', () =>
      ctx.logger.group(`Pull the images of ${target.version}`, async () => {
        if (await imagesPresent) ctx.logger.info('all three images are already in the engine (same digests): nothing to pull');
        else await ctx.driver.pull(serviceNames, overrideFile);
      }),
    );
  } catch (error) {
    // Nothing was recreated: the old release is still running.
    await record(ctx, plan.history, { ...base, result: 'failed', reason: `pull: ${toLifelineError(error).message}`, durationsMs: { ...durationsMs, total: Date.now() - plan.started } });
    throw error;
  }

  let failedService: string | undefined;
  let reason: string;
  try {
    await time('up', () => ctx.logger.group(`Recreate ${serviceNames.join(', ')} on ${target.version}`, () => ctx.driver.up(serviceNames, overrideFile)));
    const health = await time('health', () =>
      ctx.logger.group('Wait for health', () => waitForHealth(ctx.driver, healthTargets(ctx, target.images), { timeoutSeconds: plan.healthTimeoutSeconds, overrideFile, logger: ctx.logger })),
    );
    if (health.healthy) {
      durationsMs.total = Date.now() - plan.started;
      await record(ctx, plan.history, { ...base, result: 'succeeded', running: target.version, runningDeployment: deploymentId, durationsMs });
      return { action, release: target.version, from, deployment: deploymentId, overrideFile, images: target.images, durationsMs, warnings: plan.warnings };
    }
    failedService = health.service;
    reason = health.reason;
  } catch (error) {
    reason = toLifelineError(error).message;
  }

  const lastLog = failedService ? await ctx.driver.logsTail(failedService, LOG_TAIL_LINES, overrideFile) : undefined;
  const restored = await time('restore', () => restorePrevious(ctx, current?.release ?? null, current?.deployment ?? null, plan.healthTimeoutSeconds));
  durationsMs.total = Date.now() - plan.started;
  await record(ctx, plan.history, {
    ...base,
    result: 'failed',
    running: restored.ok ? from : null,
    runningDeployment: restored.ok ? (current?.deployment ?? null) : null,
    failedService,
    reason,
    durationsMs,
  });
  const what = failedService ? `${failedService} did not get healthy on ${target.version}: ${reason}` : `${action} of ${target.version} failed: ${reason}`;
  throw failure('DEPLOY_UNHEALTHY', `${what}\n${restored.message}${lastLog ? `\nlast lines ${failedService} logged:\n${indent(lastLog)}` : ''}`, {
    fix: failedService ? `fix ${failedService} in a new release; check its logs with: docker compose logs ${failedService}` : 'read the error above, fix it, and re-run',
    details: { failedService: failedService ?? null, restoredTo: restored.ok ? from : null, deployment: deploymentId },
  });
}

function healthTargets(ctx: DeployEnvironment, images: Record<ServiceRole, string>): HealthTarget[] {
  return SERVICE_ROLES.map((role) => ({ service: ctx.services[role].name, healthUrl: ctx.services[role].healthUrl, expectedImage: images[role] }));
}

/** Puts all three services back on the release that ran before, from its recorded override. */
async function restorePrevious(ctx: DeployEnvironment, previous: string | null, previousDeployment: string | null, timeoutSeconds: number): Promise<{ ok: boolean; message: string }> {
  const entry = previousDeployment ? await ctx.catalog.get<DeploymentMetadata>(ctx.env, 'deployments', previousDeployment, DEPLOYMENT_METADATA) : undefined;
  if (!previous || !entry) {
    return { ok: false, message: 'no earlier release deployed by Lifeline is recorded for this environment, so the services were left as they are' };
  }
  const overrideFile = join(entry.dir, OVERRIDE_FILE);
  return ctx.logger.group(`Put api, web and worker back on ${previous}`, async () => {
    try {
      const targets = SERVICE_ROLES.map((role) => {
        const service = ctx.services[role];
        return { service: service.name, healthUrl: service.healthUrl, expectedImage: entry.metadata.images[service.name] };
      });
      await ctx.driver.up(
        targets.map((t) => t.service),
        overrideFile,
      );
      const health = await waitForHealth(ctx.driver, targets, { timeoutSeconds, overrideFile, logger: ctx.logger });
      if (health.healthy) return { ok: true, message: `api, web and worker are back on ${previous} and healthy` };
      return { ok: false, message: `putting the services back on ${previous} did not get them healthy either (${health.service}: ${health.reason}): the environment needs attention now` };
    } catch (error) {
      return { ok: false, message: `putting the services back on ${previous} failed too (${toLifelineError(error).message}): the environment needs attention now` };
    }
  });
}

async function writeDeployment(ctx: DeployEnvironment, id: string, action: DeployAction, target: VerifiedRelease, from: string | null): Promise<string> {
  const images: Record<string, string> = {};
  for (const role of SERVICE_ROLES) images[ctx.services[role].name] = target.images[role];
  const staged = await ctx.catalog.begin(ctx.env, 'deployments', id, DEPLOYMENT_METADATA);
  try {
    await staged.addText(OVERRIDE_FILE, renderOverride(images, `Generated by Lifeline: ${action} of release ${target.version}${target.manifestDigest ? ` (manifest ${target.manifestDigest})` : ''}.\nPins api, web and worker to the digests of the verified manifest. Do not edit: it is the audit record.`));
    const metadata: DeploymentMetadata = {
      schemaVersion: 1,
      id,
      createdAt: new Date().toISOString(),
      action,
      release: target.version,
      from,
      images,
      manifestDigest: target.manifestDigest ?? null,
      by: ctx.owner,
    };
    await staged.commit(metadata);
  } catch (error) {
    await staged.abort();
    throw error;
  }
  return join(ctx.catalog.entryDir(ctx.env, 'deployments', id), OVERRIDE_FILE);
}

async function checkSchema(ctx: DeployEnvironment, target: VerifiedRelease, running: string | null, allowSchemaAhead: boolean, warnings: string[]): Promise<void> {
  const warn = (message: string) => {
    warnings.push(message);
    ctx.logger.warn(message);
  };
  if (!ctx.database) return warn('no database is configured (postgres.migrationHeadQuery and a database URL): the schema check was skipped');
  if (target.migrationHead === null) return warn(`the manifest of ${target.version} records no migration head: the schema check was skipped`);
  const dbHead = await ctx.database.migrationHead();
  if (dbHead === target.migrationHead) return;

  const newer = running && running !== target.version ? await ctx.verifier.verify(running).catch(() => undefined) : undefined;
  const ahead = newer?.migrationHead === dbHead;
  const situation = ahead
    ? `the database is at migration head ${dbHead}, the head of the running release ${running}, which is ahead of ${target.migrationHead} that ${target.version} expects`
    : `the database is at migration head ${dbHead ?? '(none)'}, but ${target.version} expects ${target.migrationHead}${newer ? ` (and the running release ${running} expects ${newer.migrationHead ?? 'none'})` : ''}`;
  if (allowSchemaAhead) return warn(`${situation}; going on because of --allow-schema-ahead`);

  const restoreStep = newer?.backup
    ? `lifeline restore --env ${ctx.env} --backup ${newer.backup.id} --target ${ctx.database.maskedUrl} --confirm ${ctx.database.name}`
    : undefined;
  const ways = [
    `1. if the migrations since ${target.migrationHead} are backward compatible (${target.version} runs on the newer schema), re-run with --allow-schema-ahead:\n     lifeline rollback --env ${ctx.env} --to ${target.version} --allow-schema-ahead`,
    restoreStep
      ? `2. otherwise restore the pre-migration backup recorded in the manifest of ${running} (this loses writes made since it was taken; put the password in the URL), then roll back:\n     ${restoreStep}\n     lifeline rollback --env ${ctx.env} --to ${target.version}`
      : `2. otherwise restore a backup taken before the migration (the manifest of ${running ?? 'the running release'} records none: list them with lifeline backups --env ${ctx.env}), then roll back`,
  ];
  throw refusal(
    'SCHEMA_AHEAD',
    `refusing to roll back to ${target.version}: ${situation}. Rule: a rollback needs the database at the target's migration head; a differing head means code older than the schema.\n${ways.join('\n')}`,
    restoreStep ? `re-run with --allow-schema-ahead, or run: ${restoreStep}` : `re-run with --allow-schema-ahead, or restore a pre-migration backup first`,
    { databaseHead: dbHead, targetHead: target.migrationHead, runningRelease: running, restoreCommand: restoreStep ?? null },
  );
}

type RecordFields = Pick<HistoryEvent, 'action' | 'to' | 'result' | 'deployment' | 'durationsMs'> & Partial<Pick<HistoryEvent, 'running' | 'runningDeployment' | 'failedService' | 'reason'>>;

/** Appends to the history; unless said otherwise, what was running before keeps running. */
async function record(ctx: DeployEnvironment, history: HistoryEvent[], fields: RecordFields): Promise<void> {
  const current = currentRelease(history);
  const event: HistoryEvent = {
    action: fields.action,
    from: current?.release ?? null,
    to: fields.to,
    result: fields.result,
    running: fields.running !== undefined ? fields.running : (current?.release ?? null),
    runningDeployment: fields.runningDeployment !== undefined ? fields.runningDeployment : (current?.deployment ?? null),
    deployment: fields.deployment,
    at: new Date().toISOString(),
    by: ctx.owner,
    ...(fields.failedService ? { failedService: fields.failedService } : {}),
    ...(fields.reason ? { reason: fields.reason } : {}),
    durationsMs: fields.durationsMs,
  };
  await appendHistory(ctx.catalog, ctx.env, event);
}

function indent(text: string): string {
  return text
    .split('\n')
    .map((line) => `    ${line}`)
    .join('\n');
}
