import { tenantExportAction } from '../../commands/tenant';
import { runAction } from '../run';

void runAction(tenantExportAction);
