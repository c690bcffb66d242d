import { singleCommandAction } from './action-spec';
import { notImplemented } from './spec';

export const preflightCommand = notImplemented('preflight', 'Check Docker, Compose, scripts, environment values, edge config and security gates', 'issue #7');

export const preflightAction = singleCommandAction('preflight', 'Pre-deploy checks: Docker, Compose, shell scripts, environment values, edge config, security gates.', preflightCommand);
