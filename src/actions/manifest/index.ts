import { manifestAction } from '../../commands/manifest';
import { runAction } from '../run';

void runAction(manifestAction);
