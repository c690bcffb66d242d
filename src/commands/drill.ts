import { singleCommandAction } from './action-spec';
import { notImplemented } from './spec';

const ISSUE = 'issue #6';

export const drillCommand = notImplemented('drill', 'Restore a backup into an isolated database and measure RTO and RPO', ISSUE);
export const drillsCommand = notImplemented('drills', 'List drill reports, newest first', ISSUE);
export const gateCommand = notImplemented('gate', 'Fail a release when backups or drills are stale or failing', ISSUE);
export const runbookCommand = notImplemented('runbook', 'Print the ordered restore runbook', ISSUE);

export const drillAction = singleCommandAction('drill', 'Run a restore drill in an isolated database and measure RTO/RPO.', drillCommand);
export const gateAction = singleCommandAction('gate', 'Release gate: fail when backups or restore drills are stale or failing.', gateCommand);
