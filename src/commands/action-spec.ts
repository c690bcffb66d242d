import { failure, usageError } from '../errors';
import { allInputs, type CommandSpec, type InputSpec, type OutputSpec } from './spec';

/**
 * A GitHub action: one command, or several chosen by one input (e.g. `manifest` with
 * `operation: create|verify`).
 */
export interface ActionSpec {
  name: string;
  description: string;
  commands: Record<string, CommandSpec>;
  /** The input that picks the command when there are several. */
  selector?: { input: string; default: string; description: string };
}

export function singleCommandAction(name: string, description: string, command: CommandSpec): ActionSpec {
  return { name, description, commands: { [command.name]: command } };
}

export function commandFor(action: ActionSpec, selected: string | undefined): CommandSpec {
  const keys = Object.keys(action.commands);
  if (!action.selector) return action.commands[keys[0]!]!;
  const key = selected || action.selector.default;
  const command = action.commands[key];
  if (!command) throw usageError('BAD_INPUT', `input "${action.selector.input}" must be one of ${keys.join(', ')} (got "${key}")`, `set ${action.selector.input} to one of ${keys.join(', ')}`);
  return command;
}

/** The action's inputs: the union over its commands, without CLI-only flags. */
export function actionInputs(action: ActionSpec): InputSpec[] {
  const byName = new Map<string, InputSpec>();
  if (action.selector) {
    byName.set(action.selector.input, {
      name: action.selector.input,
      type: 'string',
      description: action.selector.description,
      default: action.selector.default,
      choices: Object.keys(action.commands),
    });
  }
  for (const command of Object.values(action.commands)) {
    for (const input of allInputs(command)) {
      if (input.cliOnly) continue;
      const existing = byName.get(input.name);
      if (existing && existing.type !== input.type) throw failure('INTERNAL_INVARIANT', `internal error: action ${action.name}: input ${input.name} has two types`);
      if (!existing) byName.set(input.name, input);
      else if (existing.required && !input.required) byName.set(input.name, { ...existing, required: false });
    }
  }
  // With several commands an input required by one is not required by the action.
  if (action.selector) {
    for (const [name, input] of byName) {
      const everywhere = Object.values(action.commands).every((c) => allInputs(c).some((i) => i.name === name && i.required));
      if (input.required && !everywhere) byName.set(name, { ...input, required: false });
    }
  }
  return [...byName.values()];
}

export function actionOutputs(action: ActionSpec): OutputSpec[] {
  const byName = new Map<string, OutputSpec>();
  for (const command of Object.values(action.commands)) for (const output of command.outputs) if (!byName.has(output.name)) byName.set(output.name, output);
  return [...byName.values()];
}
