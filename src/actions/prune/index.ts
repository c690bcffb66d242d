import { pruneAction } from '../../commands/registry';
import { runAction } from '../run';

void runAction(pruneAction);
