import { gateAction } from '../../commands/drill';
import { runAction } from '../run';

void runAction(gateAction);
