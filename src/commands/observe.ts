import { Catalog } from '../catalog/store';
import { isLifelineError, toLifelineError } from '../errors';
import { redactSecretsInText, type Logger } from '../logger';
import { deliver, pingUrl } from '../notify/deliver';
import { NOTIFYING_COMMANDS, shouldPost, webhookMessage, type CommandOutcome, type Objectives } from '../notify/message';
import type { EnvironmentSettings, NotifyOutcome } from '../settings/resolve';
import { environmentFor, type CommandContext, type CommandResult, type CommandSpec } from './spec';

/** Every notifying command's outcome, one JSON line each; `lifeline metrics` reads the last gate and sync from it. */
export const RUNS_LOG = 'runs.log';
const LOG_TAIL_LINES = 40;

export interface RunRecord {
  at: string;
  command: string;
  outcome: NotifyOutcome;
  durationSeconds: number;
  entryId?: string;
}

/**
 * Runs a command and tells whoever the environment's `notify:` names: the healthchecks-style ping
 * (start, then success or fail with the log's last lines) and the webhook message. Delivery
 * problems are warnings; the command's own result or error is returned unchanged.
 */
export async function runObserved(command: CommandSpec, ctx: CommandContext): Promise<CommandResult> {
  if (!(NOTIFYING_COMMANDS as readonly string[]).includes(command.name)) return command.run(ctx);
  let settings: EnvironmentSettings;
  try {
    settings = environmentFor(ctx);
  } catch {
    // The command reports its own configuration error.
    return command.run(ctx);
  }
  const secrets = new Set(settings.secrets);
  const tail: string[] = [];
  const logger = recordingLogger(ctx.logger, tail, secrets);
  const mask = (text: string) => {
    let masked = redactSecretsInText(text);
    for (const secret of secrets) if (secret.length >= 4) masked = masked.split(secret).join('***');
    return masked;
  };
  const { notify } = settings;
  const ping = notify.ping && notify.pingCommands.includes(command.name) ? notify.ping : undefined;
  const delivery = { logger: ctx.logger };
  if (ping) await deliver(pingUrl(ping, 'start'), { method: 'GET' }, 'start ping', delivery);

  const started = performance.now();
  let result: CommandResult | undefined;
  let thrown: unknown;
  try {
    result = await command.run({ ...ctx, logger });
  } catch (error) {
    thrown = error;
  }
  const durationSeconds = Math.round((performance.now() - started) / 100) / 10;
  const outcome = outcomeOf(result, thrown);
  const reason = thrown !== undefined ? mask(toLifelineError(thrown).message) : result?.exitCode ? mask(result.failureMessage ?? '') || undefined : undefined;
  const report: CommandOutcome = {
    command: command.name,
    environment: settings.name,
    outcome,
    durationSeconds,
    ...(entryIdOf(result) ? { entryId: entryIdOf(result) } : {}),
    ...(reason ? { reason } : {}),
    ...(command.name === 'drill' && result ? { objectives: objectivesOf(result.json) } : {}),
  };

  try {
    await new Catalog(settings.store).appendLog(settings.name, RUNS_LOG, {
      at: new Date().toISOString(),
      command: report.command,
      outcome,
      durationSeconds,
      entryId: report.entryId,
    } satisfies RunRecord);
  } catch (error) {
    ctx.logger.warn(`could not record this ${command.name} in ${RUNS_LOG} (${mask((error as Error).message)}); lifeline metrics will not show it`);
  }
  if (shouldPost(notify, report)) {
    await deliver(notify.webhook!, { method: 'POST', body: JSON.stringify(webhookMessage(report)), contentType: 'application/json' }, 'webhook message', delivery);
  }
  if (ping) {
    const body = outcome === 'succeeded' ? (report.entryId ?? '') : mask([...tail, reason ?? ''].join('\n'));
    await deliver(
      pingUrl(ping, outcome === 'succeeded' ? '' : 'fail'),
      { method: 'POST', body, contentType: 'text/plain; charset=utf-8' },
      `${outcome === 'succeeded' ? 'success' : 'failure'} ping`,
      delivery,
    );
  }
  if (thrown !== undefined) throw thrown;
  return result!;
}

function outcomeOf(result: CommandResult | undefined, thrown: unknown): NotifyOutcome {
  if (thrown !== undefined) return isLifelineError(thrown) && thrown.kind === 'refused' ? 'refused' : 'failed';
  if (result?.exitCode === 3) return 'refused';
  return result?.exitCode ? 'failed' : 'succeeded';
}

function entryIdOf(result: CommandResult | undefined): string | undefined {
  const outputs = result?.outputs ?? {};
  return outputs['backup-id'] || outputs['drill-id'] || outputs.deployment || outputs.release || outputs.id || undefined;
}

function objectivesOf(json: unknown): Objectives {
  const report = json as { rto?: { seconds?: number | null; targetSeconds?: number | null }; rpo?: { seconds?: number | null; targetSeconds?: number | null } } | undefined;
  return {
    rtoSeconds: report?.rto?.seconds ?? null,
    rtoTargetSeconds: report?.rto?.targetSeconds ?? null,
    rpoSeconds: report?.rpo?.seconds ?? null,
    rpoTargetSeconds: report?.rpo?.targetSeconds ?? null,
  };
}

/** The command's logger, also keeping the last lines (for the failure ping) and every secret it is told. */
function recordingLogger(inner: Logger, tail: string[], secrets: Set<string>): Logger {
  const keep = (level: string, message: string) => {
    for (const line of message.split('\n')) tail.push(`${level}${line}`);
    if (tail.length > LOG_TAIL_LINES) tail.splice(0, tail.length - LOG_TAIL_LINES);
  };
  return {
    info: (message) => (keep('', message), inner.info(message)),
    warn: (message) => (keep('warning: ', message), inner.warn(message)),
    error: (message) => (keep('error: ', message), inner.error(message)),
    debug: (message) => inner.debug(message),
    group: (name, fn) => (keep('', `== ${name}`), inner.group(name, fn)),
    secret: (value) => {
      if (value) secrets.add(value);
      inner.secret(value);
    },
  };
}
