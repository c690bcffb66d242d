import { syncAction } from '../../commands/sync';
import { runAction } from '../run';

void runAction(syncAction, undefined, { artifactStore: async (token) => (await import('../artifact-store')).githubArtifactStore(process.env, token) });
