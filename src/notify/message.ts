import type { NotifyOutcome, NotifySettings } from '../settings/resolve';

/** The commands that report their outcome to the webhook. */
export const NOTIFYING_COMMANDS = ['backup', 'verify', 'prune', 'sync', 'drill', 'gate', 'restore', 'redis-restore', 'deploy', 'rollback'] as const;
/** Drills and gates are what operators watch: they post every outcome unless `notify.on` says otherwise. */
const ALWAYS_POSTED = new Set(['drill', 'gate']);

export interface Objectives {
  rtoSeconds: number | null;
  rtoTargetSeconds: number | null;
  rpoSeconds: number | null;
  rpoTargetSeconds: number | null;
}

export interface CommandOutcome {
  command: string;
  environment: string;
  outcome: NotifyOutcome;
  durationSeconds: number;
  /** The backup, drill, release or deployment the command produced or acted on. */
  entryId?: string;
  /** The one-line reason for a failure or refusal. */
  reason?: string;
  objectives?: Objectives;
}

export interface WebhookMessage extends CommandOutcome {
  /** One line for humans: what a Slack or Mattermost incoming webhook shows. */
  text: string;
  source: 'lifeline';
  at: string;
}

export function shouldPost(settings: NotifySettings, outcome: CommandOutcome): boolean {
  if (!settings.webhook) return false;
  if (settings.on.includes(outcome.outcome)) return true;
  return !settings.onConfigured && ALWAYS_POSTED.has(outcome.command);
}

export function webhookMessage(outcome: CommandOutcome, now = new Date()): WebhookMessage {
  return { text: summaryLine(outcome), source: 'lifeline', at: now.toISOString(), ...outcome };
}

export function summaryLine(outcome: CommandOutcome): string {
  const verdict = { succeeded: 'succeeded', failed: 'FAILED', refused: 'was REFUSED' }[outcome.outcome];
  const parts = [`Lifeline ${outcome.command} ${verdict} for ${outcome.environment} in ${formatSeconds(outcome.durationSeconds)}`];
  if (outcome.entryId) parts.push(`(${outcome.entryId})`);
  let line = parts.join(' ');
  const o = outcome.objectives;
  if (o) {
    const objective = (name: string, value: number | null, target: number | null) => `${name} ${value === null ? 'n/a' : formatSeconds(value)}${target === null ? '' : ` of ${formatSeconds(target)}`}`;
    line += `; ${objective('RTO', o.rtoSeconds, o.rtoTargetSeconds)}, ${objective('RPO', o.rpoSeconds, o.rpoTargetSeconds)}`;
  }
  if (outcome.reason) line += `: ${outcome.reason.split('\n')[0]}`;
  return line;
}

function formatSeconds(seconds: number): string {
  if (seconds < 120) return `${Math.round(seconds * 10) / 10}s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)}m`;
  return `${Math.round(seconds / 360) / 10}h`;
}
