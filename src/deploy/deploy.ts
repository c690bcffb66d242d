import { join } from 'node:path';
import type { CorruptLine } from '../catalog/journal';
import { acquireLock, lockStatus, type LockStatus } from '../catalog/lock';
import { newEntryId, type Catalog, type EntryMetadata } from '../catalog/store';
import { failure, isLifelineError, refusal, toLifelineError } from '../errors';
import type { Logger } from '../logger';
import { SERVICE_ROLES, type ComposeSettings, type ServiceRole } from '../settings/resolve';
import type { ComposeDriver } from '../runner/compose';
import { httpStatus, waitForHealth, type HealthTarget } from './health';
import {
  appendHistory,
  currentRelease,
  describeCorruptLines,
  loadHistory,
  printable,
  readHistory,
  trustedPrevious,
  unfinishedEvent,
  type DeployAction,
  type History,
  type HistoryEvent,
} from './history';
import { renderOverride } from './override';
import { assertPinnedImages, type ReleaseVerifier, type VerifiedRelease } from './release';
import { assertNotRevoked, describeRevocation, loadRevocations, revocationsForDeploy, type Revocation } from './revocation';
import { describeState, observeRunning, reconcile, releasesMentioned, unreconciledRefusal, type Reconciliation } from './state';

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
  /** `compose.requireOwnedHealth`: a health answer that cannot be tied to the new container fails instead of warning. */
  requireOwnedHealth?: boolean;
  /** False when the docker CLI talks to an engine on another host (its pids cannot be looked up here). */
  engineOnThisHost?: boolean;
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

export interface SwitchOptions {
  healthTimeoutSeconds: number;
  /** After the first healthy answer, how long every check must keep passing (no restart, no exit). */
  settleSeconds?: number;
}

/** `lifeline deploy`: verify the release, then move api, web and worker onto its digests together. */
export async function deployRelease(ctx: DeployEnvironment, options: SwitchOptions & { release: string }): Promise<DeployOutcome> {
  const started = Date.now();
  assertNotRevoked(ctx.env, options.release, await revocationsForDeploy(ctx.catalog, ctx.env), 'deploy');
  const target = await verifyOrRecord(ctx, 'deploy', options.release, started);
  const verify = Date.now() - started;
  return withEnvironmentLock(ctx, 'deploy', async () => {
    const history = await readHistoryReporting(ctx);
    const observed = await observeAndReconcile(ctx, history, { underLock: true });
    if (!observed.result.consistent) throw await refuseAndRecord(ctx, history, 'deploy', target.version, observed.result, started);
    return switchRelease(ctx, { action: 'deploy', target, history, observed, started, options, warnings: [], extraDurations: { verify } });
  });
}

/**
 * `lifeline rollback`: like a deploy to an earlier release, after one more check: the database
 * must not be on a newer migration head than the target release expects. A rollback to a named
 * release is also the way out of a history that does not match what runs: it is allowed then,
 * with nothing to put back if it fails.
 */
export async function rollbackRelease(ctx: DeployEnvironment, options: SwitchOptions & { to: string; allowSchemaAhead: boolean }): Promise<DeployOutcome> {
  const started = Date.now();
  const revoked = await revocationsForDeploy(ctx.catalog, ctx.env);
  const version = options.to === 'previous' ? resolvePrevious(ctx, await readHistoryReporting(ctx, false), revoked) : options.to;
  assertNotRevoked(ctx.env, version, revoked, 'roll back to');
  const target = await verifyOrRecord(ctx, 'rollback', version, started);
  const verify = Date.now() - started;
  return withEnvironmentLock(ctx, 'rollback', async () => {
    const history = await readHistoryReporting(ctx);
    // Another deploy may have finished while we verified: "previous" must still mean the same release.
    if (options.to === 'previous' && resolvePrevious(ctx, history, revoked) !== version) {
      throw failure('HISTORY_CHANGED', `the history of ${ctx.env} changed while release ${version} was being verified`, { fix: 're-run the rollback' });
    }
    const observed = await observeAndReconcile(ctx, history, { underLock: true });
    const warnings: string[] = [];
    if (!observed.result.consistent) {
      // "previous" means nothing when the history is not what runs; a named release is the documented fix.
      if (options.to === 'previous') throw await refuseAndRecord(ctx, history, 'rollback', version, observed.result, started);
      const message = `the history did not match what runs; rolling back to ${version} as asked, with nothing to put back if it fails:\n${describeState(observed.result)}`;
      warnings.push(message);
      ctx.logger.warn(message);
    }
    const schemaStarted = Date.now();
    try {
      const running = observed.result.consistent ? (currentRelease(history.events)?.release ?? null) : observed.result.state.release;
      await checkSchema(ctx, target, running, options.allowSchemaAhead, warnings);
    } catch (error) {
      if (isLifelineError(error) && error.kind === 'refused') {
        await record(ctx, history.events, { action: 'rollback', to: target.version, result: 'refused', deployment: null, reason: error.message, durationsMs: { total: Date.now() - started } });
      }
      throw error;
    }
    return switchRelease(ctx, { action: 'rollback', target, history, observed, started, options, warnings, extraDurations: { verify, schemaCheck: Date.now() - schemaStarted } });
  });
}

/**
 * `lifeline history reconcile`: when the history does not match what runs but all three services
 * run one verified, unrevoked release, records that release as running once it passes the same
 * health wait and settle window as a deploy. Anything else is refused: `rollback --to` fixes it.
 */
export async function acceptRunningRelease(ctx: DeployEnvironment, options: SwitchOptions): Promise<{ release: string; changed: boolean; state: Reconciliation }> {
  const started = Date.now();
  return withEnvironmentLock(ctx, 'history reconcile', async () => {
    const history = await readHistoryReporting(ctx);
    const { result, verified } = await observeAndReconcile(ctx, history, { underLock: true });
    if (result.consistent) {
      ctx.logger.info(`the history already matches what runs (${result.claimed}): nothing to record`);
      return { release: result.claimed!, changed: false, state: result };
    }
    const release = result.state.release;
    const fix = `put all three on a release you choose: lifeline rollback --env ${ctx.env} --to <release>`;
    if (!release || !result.state.allRunning) {
      throw refusal('CANNOT_ACCEPT_RUNNING', `api, web and worker do not all run one verified release, so there is nothing to accept:\n${describeState(result)}`, fix, {
        running: result.state.services,
      });
    }
    assertNotRevoked(ctx.env, release, await revocationsForDeploy(ctx.catalog, ctx.env), 'accept');
    const images = verified.get(release)!.images;
    const health = await ctx.logger.group(`Check that ${release} is healthy`, () =>
      waitForHealth(ctx.driver, healthTargets(ctx, images), { timeoutSeconds: options.healthTimeoutSeconds, settleSeconds: options.settleSeconds, logger: ctx.logger, ...ownership(ctx) }),
    );
    if (!health.healthy) throw refusal('CANNOT_ACCEPT_RUNNING', `${health.service} on ${release} is not healthy (${health.reason}), so it is not recorded as running`, fix);
    const unfinished = result.unfinished;
    await record(ctx, history.events, {
      action: 'reconcile',
      from: result.claimed,
      to: release,
      result: 'succeeded',
      running: release,
      runningDeployment: unfinished?.to === release ? unfinished.deployment : null,
      deployment: null,
      reason: `accepted what runs: ${result.differences.join('; ')}`,
      durationsMs: { total: Date.now() - started },
    });
    return { release, changed: true, state: result };
  });
}

/** What `lifeline status` prints: the history's claim, what runs, and whether a deploy holds the lock. */
export async function environmentStatus(ctx: DeployEnvironment): Promise<{ result: Reconciliation; corrupt: CorruptLine[]; lock: LockStatus; revoked: string[] }> {
  const history = await readHistoryReporting(ctx);
  const { result } = await observeAndReconcile(ctx, history, { underLock: false });
  const lock = await lockStatus(ctx.catalog.envDir(ctx.env));
  const { revoked } = await loadRevocations(ctx.catalog, ctx.env);
  return { result, corrupt: history.corrupt, lock, revoked: [...revoked.keys()] };
}

/**
 * The verified release the history says runs, for the drill's application image: its manifest is
 * verified again here, so a hand-edited deployment.json in the catalog is never what is started.
 * Undefined when nothing deployed by Lifeline is recorded; refused when the history cannot say.
 */
export async function verifiedRunningRelease(catalog: Catalog, env: string, verifier: ReleaseVerifier): Promise<VerifiedRelease | undefined> {
  const history = await loadHistory(catalog, env);
  const unfinished = unfinishedEvent(history.events);
  if (unfinished) {
    throw refusal(
      'HISTORY_UNRECONCILED',
      `a ${unfinished.action} of ${printable(unfinished.to)} in ${env} never recorded its end, so the running release is unknown`,
      `run lifeline status --env ${env}, then the fix it prints`,
    );
  }
  const current = currentRelease(history.events)?.release;
  if (!current) return undefined;
  return verifier.verify(current);
}

async function readHistoryReporting(ctx: DeployEnvironment, warn = true): Promise<History> {
  const history = await loadHistory(ctx.catalog, ctx.env);
  if (warn && history.corrupt.length) ctx.logger.warn(describeCorruptLines(ctx.catalog, ctx.env, history.corrupt));
  return history;
}

interface Observed {
  result: Reconciliation;
  verified: Map<string, VerifiedRelease>;
}

/**
 * Compares the history with the containers. A deploy killed before it recreated anything (the
 * same containers still run) is closed here with a line saying so; anything else is left for the
 * caller to refuse or report.
 */
async function observeAndReconcile(ctx: DeployEnvironment, history: History, options: { underLock: boolean }): Promise<Observed> {
  if (history.events.length === 0) {
    const { state, verified } = await observeRunning(ctx.driver, ctx.services, ctx.verifier, []);
    return { result: reconcile(history, state), verified };
  }
  const { state, verified } = await observeRunning(ctx.driver, ctx.services, ctx.verifier, releasesMentioned(history));
  let result = reconcile(history, state);
  const unfinished = result.unfinished;
  const before = unfinished?.containers;
  const now = state.services.map((s) => s.containerId).filter((id): id is string => id !== null);
  // Only under the lock: without it, an unfinished record may be a deploy that is running right now.
  if (options.underLock && unfinished && before && unfinished.from && state.release === unfinished.from && state.allRunning && now.length === before.length && now.every((id) => before.includes(id))) {
    const previous = currentRelease(history.events.slice(0, history.events.lastIndexOf(unfinished)));
    const event: HistoryEvent = {
      action: unfinished.action,
      from: unfinished.from,
      to: unfinished.to,
      result: 'failed',
      running: unfinished.from,
      runningDeployment: previous?.deployment ?? null,
      deployment: unfinished.deployment,
      at: new Date().toISOString(),
      by: ctx.owner,
      reason: `interrupted before any container was recreated (found the same containers still running ${unfinished.from})`,
      durationsMs: {},
    };
    await appendHistory(ctx.catalog, ctx.env, event);
    ctx.logger.warn(`a ${unfinished.action} of ${printable(unfinished.to)} was interrupted before it changed any container; recorded that ${unfinished.from} still runs`);
    history.events.push(event);
    history.lines.push(Number.MAX_SAFE_INTEGER);
    result = reconcile(history, state);
  }
  return { result, verified };
}

async function refuseAndRecord(ctx: DeployEnvironment, history: History, action: DeployAction, to: string, result: Reconciliation, started: number): Promise<Error> {
  const error = unreconciledRefusal(ctx.env, result, ctx.catalog, history);
  // A refused line keeps what the history knew (a still-unfinished record stays the last word on that).
  if (!result.unfinished)
    await record(ctx, history.events, { action, to, result: 'refused', deployment: null, reason: 'the history does not match what runs', durationsMs: { total: Date.now() - started } });
  return error;
}

function resolvePrevious(ctx: DeployEnvironment, history: History, revoked: Map<string, Revocation>): string {
  const previous = trustedPrevious(history, new Set(revoked.keys()));
  const skipped = previous.skippedRevoked.length ? ` (skipped revoked: ${previous.skippedRevoked.map((r) => `${r}, ${describeRevocation(revoked.get(r)!)}`).join('; ')})` : '';
  if (!previous.release) {
    const cut = previous.cutAtLine !== undefined ? `; only the events after line ${previous.cutAtLine} count, because ${describeCorruptLines(ctx.catalog, ctx.env, history.corrupt)}` : '';
    throw refusal(
      'NO_PREVIOUS_RELEASE',
      `the history of ${ctx.env} has no earlier release to roll back to${skipped}${cut}`,
      `name the release: lifeline rollback --env ${ctx.env} --to <version> (lifeline history --env ${ctx.env} lists what ran)`,
    );
  }
  if (skipped) ctx.logger.warn(`previous is ${previous.release}${skipped}`);
  if (previous.cutAtLine !== undefined) ctx.logger.warn(`previous is ${previous.release}, from the events after line ${previous.cutAtLine} of the history only`);
  return previous.release;
}

async function verifyOrRecord(ctx: DeployEnvironment, action: DeployAction, version: string, started: number): Promise<VerifiedRelease> {
  try {
    const release = await ctx.logger.group(`Verify the manifest of release ${JSON.stringify(version)}`, () => ctx.verifier.verify(version));
    assertPinnedImages(release);
    return release;
  } catch (error) {
    const lifelineError = toLifelineError(error);
    const history = await readHistory(ctx.catalog, ctx.env);
    // A rejected name is recorded quoted: whatever it holds (a newline, an escape), it stays one value.
    await record(ctx, history, {
      action,
      to: JSON.stringify(version),
      result: 'failed',
      deployment: null,
      reason: `manifest verification: ${lifelineError.message}`,
      durationsMs: { total: Date.now() - started },
    });
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
  history: History;
  observed: Observed;
  started: number;
  options: SwitchOptions;
  warnings: string[];
  extraDurations?: Record<string, number>;
}

async function switchRelease(ctx: DeployEnvironment, plan: SwitchPlan): Promise<DeployOutcome> {
  const { target, action } = plan;
  const events = plan.history.events;
  const consistent = plan.observed.result.consistent;
  // With a history that matches what runs, the release it names is what a failure puts back; otherwise nothing is.
  const from = consistent ? (currentRelease(events)?.release ?? null) : plan.observed.result.state.release;
  const putBack = consistent ? from : null;
  const durationsMs: Record<string, number> = { ...plan.extraDurations };
  const serviceNames = SERVICE_ROLES.map((role) => ctx.services[role].name);
  const state = plan.observed.result.state;
  const previousContainers = state.services.map((s) => s.containerId).filter((id): id is string => id !== null);

  await refuseStrayHealthAnswers(ctx, plan, from);

  const deploymentId = newEntryId();
  // Asking the engine which images it has overlaps with the catalog write (fsyncs).
  const imagesPresent = ctx.driver.imagesPresent(SERVICE_ROLES.map((role) => target.images[role]));
  const overrideFile = await writeDeployment(ctx, deploymentId, action, target, from);
  const base = { action, to: target.version, deployment: deploymentId, from };
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
    await record(ctx, events, { ...base, result: 'failed', reason: `pull: ${toLifelineError(error).message}`, durationsMs: { ...durationsMs, total: Date.now() - plan.started } });
    throw error;
  }

  // The in-progress record: from here on a kill leaves a history that says "unknown" until reconciled.
  await record(ctx, events, { ...base, result: 'started', running: null, runningDeployment: null, containers: previousContainers, durationsMs: {} });
  ctx.logger.info(`recorded the ${action} of ${target.version} as started`);

  let failedService: string | undefined;
  let reason: string;
  const healthOptions = {
    timeoutSeconds: plan.options.healthTimeoutSeconds,
    settleSeconds: plan.options.settleSeconds,
    previousContainers: new Set(previousContainers),
    overrideFile,
    logger: ctx.logger,
    ...ownership(ctx),
  };
  let failureFix: string | undefined;
  try {
    await time('up', () => ctx.logger.group(`Recreate ${serviceNames.join(', ')} on ${target.version}`, () => ctx.driver.up(serviceNames, overrideFile)));
    const health = await time('health', () => ctx.logger.group('Wait for health', () => waitForHealth(ctx.driver, healthTargets(ctx, target.images), healthOptions)));
    plan.warnings.push(...health.warnings);
    if (health.healthy) {
      durationsMs.total = Date.now() - plan.started;
      await record(ctx, events, { ...base, result: 'succeeded', running: target.version, runningDeployment: deploymentId, durationsMs });
      return { action, release: target.version, from, deployment: deploymentId, overrideFile, images: target.images, durationsMs, warnings: plan.warnings };
    }
    failedService = health.service;
    reason = health.reason;
    failureFix = health.fix;
  } catch (error) {
    reason = toLifelineError(error).message;
  }

  const lastLog = failedService ? await ctx.driver.logsTail(failedService, LOG_TAIL_LINES, overrideFile) : undefined;
  const restored = await time('restore', () => restorePrevious(ctx, putBack, plan.options));
  durationsMs.total = Date.now() - plan.started;
  await record(ctx, events, {
    ...base,
    result: 'failed',
    running: restored.ok ? putBack : null,
    runningDeployment: restored.ok ? restored.deployment : null,
    failedService,
    reason,
    durationsMs,
  });
  const what = failedService ? `${failedService} did not get healthy on ${target.version}: ${reason}` : `${action} of ${target.version} failed: ${reason}`;
  const recovery = restored.ok
    ? ''
    : `\nthe history now says the running release is unknown: see lifeline status --env ${ctx.env}, then put all three on a release with lifeline rollback --env ${ctx.env} --to <release>`;
  throw failure('DEPLOY_UNHEALTHY', `${what}\n${restored.message}${recovery}${lastLog ? `\nlast lines ${failedService} logged:\n${indent(lastLog)}` : ''}`, {
    fix: failureFix ?? (failedService ? `fix ${failedService} in a new release; check its logs with: docker compose logs ${failedService}` : 'read the error above, fix it, and re-run'),
    details: { failedService: failedService ?? null, restoredTo: restored.ok ? putBack : null, deployment: deploymentId },
  });
}

/**
 * A health URL that already answers while its service has no running container is answered by
 * something else (a stray process on the port): its answer could not prove the new release healthy.
 */
async function refuseStrayHealthAnswers(ctx: DeployEnvironment, plan: SwitchPlan, from: string | null): Promise<void> {
  for (const role of SERVICE_ROLES) {
    const { name, healthUrl } = ctx.services[role];
    if (!healthUrl) continue;
    const running = plan.observed.result.state.services.some((s) => s.service === name && s.status === 'running');
    if (running) continue;
    const answer = await httpStatus(healthUrl);
    if (!answer.answered) continue;
    const message = `${healthUrl} already answers (${answer.detail}) while no container of ${name} runs: something else answers it, so its answer could not prove ${plan.target.version} healthy`;
    await record(ctx, plan.history.events, {
      action: plan.action,
      from,
      to: plan.target.version,
      result: 'refused',
      deployment: null,
      reason: message,
      durationsMs: { total: Date.now() - plan.started },
    });
    throw refusal('HEALTH_URL_ANSWERED_BY_OTHER', message, `stop what listens on that port (ss -ltnp), or point compose.services.${role}.healthUrl at the port ${name} listens on, then re-run`);
  }
}

/** How the health wait ties each health URL's answer to the new container. */
function ownership(ctx: DeployEnvironment): { requireOwnedHealth?: boolean; engineOnThisHost?: boolean } {
  return { requireOwnedHealth: ctx.requireOwnedHealth, engineOnThisHost: ctx.engineOnThisHost };
}

function healthTargets(ctx: DeployEnvironment, images: Record<ServiceRole, string>): HealthTarget[] {
  return SERVICE_ROLES.map((role) => ({ service: ctx.services[role].name, healthUrl: ctx.services[role].healthUrl, expectedImage: images[role] }));
}

/**
 * Puts all three services back on the release that ran before. The override is rebuilt from that
 * release's manifest, verified again now, never taken from the catalog's earlier deployment files
 * (which anyone with write access to the catalog could have edited).
 */
async function restorePrevious(ctx: DeployEnvironment, previous: string | null, options: SwitchOptions): Promise<{ ok: boolean; message: string; deployment: string | null }> {
  if (!previous) {
    return { ok: false, deployment: null, message: 'no earlier release known to be running is recorded for this environment, so the services were left as they are' };
  }
  return ctx.logger.group(`Put api, web and worker back on ${previous}`, async () => {
    let release: VerifiedRelease;
    try {
      release = await ctx.verifier.verify(previous);
      assertPinnedImages(release);
    } catch (error) {
      return {
        ok: false,
        deployment: null,
        message: `the manifest of ${previous} does not verify (${toLifelineError(error).message}), so the services were not put back on it: the environment needs attention now`,
      };
    }
    try {
      const deploymentId = newEntryId();
      const overrideFile = await writeDeployment(ctx, deploymentId, 'rollback', release, null);
      await ctx.driver.up(
        SERVICE_ROLES.map((role) => ctx.services[role].name),
        overrideFile,
      );
      const health = await waitForHealth(ctx.driver, healthTargets(ctx, release.images), {
        timeoutSeconds: options.healthTimeoutSeconds,
        settleSeconds: options.settleSeconds,
        overrideFile,
        logger: ctx.logger,
        ...ownership(ctx),
      });
      const warned = health.warnings.length ? ` (warning: ${health.warnings.join('; ')})` : '';
      if (health.healthy) return { ok: true, deployment: deploymentId, message: `api, web and worker are back on ${previous} and healthy${warned}` };
      return {
        ok: false,
        deployment: null,
        message: `putting the services back on ${previous} did not get them healthy either (${health.service}: ${health.reason}): the environment needs attention now`,
      };
    } catch (error) {
      return { ok: false, deployment: null, message: `putting the services back on ${previous} failed too (${toLifelineError(error).message}): the environment needs attention now` };
    }
  });
}

async function writeDeployment(ctx: DeployEnvironment, id: string, action: DeployAction, target: VerifiedRelease, from: string | null): Promise<string> {
  const images: Record<string, string> = {};
  for (const role of SERVICE_ROLES) images[ctx.services[role].name] = target.images[role];
  const staged = await ctx.catalog.begin(ctx.env, 'deployments', id, DEPLOYMENT_METADATA);
  try {
    await staged.addText(
      OVERRIDE_FILE,
      renderOverride(
        images,
        `Generated by Lifeline: ${action} of release ${target.version}${target.manifestDigest ? ` (manifest ${target.manifestDigest})` : ''}.\nPins api, web and worker to the digests of the verified manifest. Do not edit: it is the audit record.`,
      ),
    );
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
    ? `DATABASE_URL=<${ctx.database.maskedUrl} with its password> lifeline restore --env ${ctx.env} --backup ${newer.backup.id} --target-env DATABASE_URL --confirm ${ctx.database.name}`
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

type RecordFields = Pick<HistoryEvent, 'action' | 'to' | 'result' | 'deployment' | 'durationsMs'> &
  Partial<Pick<HistoryEvent, 'from' | 'running' | 'runningDeployment' | 'failedService' | 'reason' | 'containers'>>;

/** Appends to the history; unless said otherwise, what was running before keeps running. */
async function record(ctx: DeployEnvironment, history: HistoryEvent[], fields: RecordFields): Promise<void> {
  const current = currentRelease(history);
  const event: HistoryEvent = {
    action: fields.action,
    from: fields.from !== undefined ? fields.from : (current?.release ?? null),
    to: fields.to,
    result: fields.result,
    running: fields.running !== undefined ? fields.running : (current?.release ?? null),
    runningDeployment: fields.runningDeployment !== undefined ? fields.runningDeployment : (current?.deployment ?? null),
    deployment: fields.deployment,
    at: new Date().toISOString(),
    by: ctx.owner,
    ...(fields.failedService ? { failedService: fields.failedService } : {}),
    ...(fields.reason ? { reason: fields.reason } : {}),
    ...(fields.containers ? { containers: fields.containers } : {}),
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
