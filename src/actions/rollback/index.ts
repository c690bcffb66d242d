import { rollbackAction } from '../../commands/deploy';
import { runAction } from '../run';

void runAction(rollbackAction);
