import { restoreAction } from '../../commands/backup';
import { runAction } from '../run';

void runAction(restoreAction);
