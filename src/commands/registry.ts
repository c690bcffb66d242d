import { singleCommandAction } from './action-spec';
import { metricsCommand } from './metrics';
import type { ActionSpec } from './action-spec';
import { backupAction, backupCommand, backupsCommand, pruneCommand, restoreAction, restoreCommand, verifyAction, verifyCommand } from './backup';
import { configCheck } from './config';
import { doctorCommand } from './doctor';
import { deployAction, deployCommand, historyCommand, historyReconcileCommand, releaseRevokeCommand, releasesCommand, rollbackAction, rollbackCommand, statusCommand } from './deploy';
import { drillAction, drillCommand, drillsCommand, gateAction, gateCommand, runbookCommand } from './drill';
import { lockBreakCommand, lockStatusCommand } from './lock';
import { manifestAction, manifestCheckIdentityCommand, manifestCreateCommand, manifestKeygenCommand, manifestVerifyCommand } from './manifest';
import { preflightAction, preflightCommand } from './preflight';
import { redisRestoreCommand } from './redis-restore';
import { reencryptCommand } from './reencrypt';
import type { CommandSpec } from './spec';
import { fetchCommand, syncAction, syncCommand } from './sync';
import { tenantDeletionPlanCommand, tenantExportAction, tenantExportCommand, tenantVerifyCommand } from './tenant';

/** Every CLI command, in the order `lifeline --help` lists them. */
export const COMMANDS: readonly CommandSpec[] = [
  preflightCommand,
  backupCommand,
  backupsCommand,
  verifyCommand,
  restoreCommand,
  redisRestoreCommand,
  pruneCommand,
  reencryptCommand,
  manifestCreateCommand,
  manifestVerifyCommand,
  manifestCheckIdentityCommand,
  manifestKeygenCommand,
  deployCommand,
  rollbackCommand,
  historyCommand,
  historyReconcileCommand,
  statusCommand,
  releasesCommand,
  releaseRevokeCommand,
  drillCommand,
  drillsCommand,
  gateCommand,
  runbookCommand,
  tenantExportCommand,
  tenantVerifyCommand,
  tenantDeletionPlanCommand,
  syncCommand,
  fetchCommand,
  configCheck,
  lockStatusCommand,
  lockBreakCommand,
  doctorCommand,
  metricsCommand,
];

/** Retention as an action, so a scheduled backup workflow prunes without installing Node for the CLI. */
export const pruneAction = singleCommandAction('prune', "Apply the environment's retention policy to its backups (apply: true deletes; otherwise only lists).", pruneCommand);

/** Every GitHub action; the root action.yml dispatches on `command` to one of these. */
export const ACTIONS: readonly ActionSpec[] = [
  preflightAction,
  backupAction,
  restoreAction,
  verifyAction,
  manifestAction,
  deployAction,
  rollbackAction,
  drillAction,
  gateAction,
  pruneAction,
  tenantExportAction,
  syncAction,
];
