import { preflightAction } from '../../commands/preflight';
import { runAction } from '../run';

void runAction(preflightAction);
