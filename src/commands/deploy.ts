import { singleCommandAction } from './action-spec';
import { notImplemented } from './spec';

const ISSUE = 'issue #5';

export const deployCommand = notImplemented('deploy', 'Deploy api, web and worker on the digests of a verified release manifest', ISSUE);
export const rollbackCommand = notImplemented('rollback', 'Roll api, web and worker back to a verified earlier release', ISSUE);
export const historyCommand = notImplemented('history', "Show the environment's deploy and rollback history", ISSUE);

export const deployAction = singleCommandAction('deploy', 'Deploy api, web and worker on the image digests of a verified release manifest.', deployCommand);
export const rollbackAction = singleCommandAction('rollback', 'Roll api, web and worker back together to a verified earlier release.', rollbackCommand);
