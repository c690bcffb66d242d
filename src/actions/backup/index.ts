import { backupAction } from '../../commands/backup';
import { runAction } from '../run';

void runAction(backupAction);
