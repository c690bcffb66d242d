import { singleCommandAction } from './action-spec';
import { notImplemented } from './spec';

const ISSUE = 'issue #8';

export const tenantExportCommand = notImplemented('tenant export', "Export a tenant's collections with checksums and caps", ISSUE);
export const tenantVerifyCommand = notImplemented('tenant verify', 'Re-check a tenant export', ISSUE);
export const tenantDeletionPlanCommand = notImplemented('tenant deletion-plan', 'Print what an offboarding deletion would touch', ISSUE);

export const tenantExportAction = singleCommandAction('tenant-export', "Export a tenant's data as checksummed, capped collections.", tenantExportCommand);
