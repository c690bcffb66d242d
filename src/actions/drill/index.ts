import { drillAction } from '../../commands/drill';
import { runAction } from '../run';

void runAction(drillAction);
