import * as core from '@actions/core';
import { ACTIONS } from '../../commands/registry';
import { runAction } from '../run';

/** The root action: `command` picks one of the actions. */
async function main(): Promise<void> {
  const name = core.getInput('command', { required: true });
  const action = ACTIONS.find((a) => a.name === name);
  if (!action) {
    core.setFailed(`input "command" must be one of ${ACTIONS.map((a) => a.name).join(', ')} (got "${name}")`);
    process.exitCode = 2;
    return;
  }
  await runAction(action, undefined, { artifactStore: async (token) => (await import('../artifact-store')).githubArtifactStore(process.env, token) });
}

void main();
