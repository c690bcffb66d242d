import { deployAction } from '../../commands/deploy';
import { runAction } from '../run';

void runAction(deployAction);
