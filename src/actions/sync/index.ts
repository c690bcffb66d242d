import { syncAction } from '../../commands/sync';
import { runAction } from '../run';

void runAction(syncAction);
