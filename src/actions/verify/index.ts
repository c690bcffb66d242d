import { verifyAction } from '../../commands/backup';
import { runAction } from '../run';

void runAction(verifyAction);
