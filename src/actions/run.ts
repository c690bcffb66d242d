import { runObserved } from '../commands/observe';
import * as core from '@actions/core';
import { commandFor, type ActionSpec } from '../commands/action-spec';
import { allInputs, Inputs, type CommandContext, type CommandResult, type CommandSpec, type RawValue } from '../commands/spec';
import { failure, toLifelineError } from '../errors';
import { redactSecretsInText, type Logger } from '../logger';
import { urlSecrets } from '../settings/secrets';

function actionsLogger(): Logger {
  // Each secret is announced to the runner once, however many layers register it.
  const masked = new Set<string>();
  return {
    // Shape-based masking on top of core.setSecret: a credential nobody registered is still hidden.
    info: (m) => core.info(redactSecretsInText(m)),
    warn: (m) => core.warning(redactSecretsInText(m)),
    error: (m) => core.error(redactSecretsInText(m)),
    debug: (m) => core.debug(redactSecretsInText(m)),
    group: (name, fn) => core.group(name, fn),
    secret: (v) => {
      if (!v || masked.has(v)) return;
      masked.add(v);
      core.setSecret(v);
    },
  };
}

/** Reads the declared inputs once, at the edge. */
export function readActionInputs(command: CommandSpec): Record<string, RawValue> {
  const values: Record<string, RawValue> = {};
  for (const input of allInputs(command)) {
    if (input.cliOnly) continue;
    if (input.type === 'list') values[input.name] = core.getMultilineInput(input.name);
    else if (input.type === 'boolean') {
      const raw = core.getInput(input.name);
      values[input.name] = raw === '' ? undefined : raw;
    } else values[input.name] = core.getInput(input.name) || undefined;
  }
  return values;
}

/** The one error boundary of every action entry. */
/**
 * What an action's entry hands the commands from outside the process: only the entries whose
 * commands use workflow artifacts (sync, the root action) pass the artifact client, so the other
 * bundles do not carry it.
 */
export interface ActionDoors {
  artifactStore?: CommandContext['artifactStore'];
}

export async function runAction(action: ActionSpec, selected?: string, doors: ActionDoors = {}): Promise<void> {
  const logger = actionsLogger();
  try {
    const chosen = selected ?? (action.selector ? core.getInput(action.selector.input) : undefined);
    const command = commandFor(action, chosen);
    const values = readActionInputs(command);
    // The age identity first: every line of it is masked before anything can print it.
    const identity = typeof values['age-identity'] === 'string' ? values['age-identity'] : undefined;
    if (identity) for (const line of identity.split(/\r?\n/)) if (line.trim() && !line.trim().startsWith('#')) logger.secret(line.trim());
    for (const key of ['database-url', 'redis-url']) {
      for (const secret of urlSecrets(values[key] as string | undefined)) core.setSecret(secret);
    }
    const result = await runObserved(command, {
      inputs: new Inputs(command, values),
      env: identity ? { ...process.env, LIFELINE_AGE_IDENTITY: identity } : process.env,
      cwd: process.cwd(),
      logger,
      interactive: false,
      artifactStore: doors.artifactStore,
    });
    await publishResult(command, result);
  } catch (thrown) {
    const error = toLifelineError(thrown);
    if (error.cause) core.debug(redactSecretsInText(String((error.cause as Error).stack ?? error.cause)));
    core.setFailed(redactSecretsInText(error.describe()));
    process.exitCode = error.exitCode;
  }
}

async function publishResult(command: CommandSpec, result: CommandResult): Promise<void> {
  const declared = new Set(command.outputs.map((o) => o.name));
  for (const [name, value] of Object.entries(result.outputs ?? {})) {
    if (!declared.has(name)) throw failure('INTERNAL_UNDECLARED_OUTPUT', `internal error: output "${name}" is not declared for ${command.name}`);
    core.setOutput(name, value);
  }
  for (const a of result.annotations ?? []) {
    const props = { title: a.title, file: a.file, startLine: a.line };
    if (a.level === 'error') core.error(a.message, props);
    else if (a.level === 'warning') core.warning(a.message, props);
    else core.notice(a.message, props);
  }
  if (result.text) core.info(result.text);
  if (result.summary && process.env.GITHUB_STEP_SUMMARY) {
    await core.summary.addRaw(result.summary, true).write();
  }
  if (result.exitCode) {
    core.setFailed(redactSecretsInText(result.failureMessage ?? `${command.name} failed`));
    process.exitCode = result.exitCode;
  }
}
