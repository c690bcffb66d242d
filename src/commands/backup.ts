import { singleCommandAction } from './action-spec';
import { notImplemented } from './spec';

const ISSUE = 'issue #3';

export const backupCommand = notImplemented('backup', 'Back up PostgreSQL (and Redis when configured) into the catalog, with checksums', ISSUE, [
  { name: 'label', type: 'string', description: 'Why this backup exists.', default: 'manual', choices: ['scheduled', 'pre-migration', 'manual'] },
  { name: 'release', type: 'string', description: 'Release version this backup belongs to.' },
  { name: 'git-sha', type: 'string', description: 'Git commit of the release.' },
], [
  { name: 'backup-id', description: 'Id of the new backup.' },
  { name: 'sha256', description: 'sha256 of the PostgreSQL archive.' },
  { name: 'bytes', description: 'Size of the PostgreSQL archive in bytes.' },
  { name: 'path', description: 'Directory of the backup in the catalog.' },
]);
export const backupsCommand = notImplemented('backups', "List the environment's backups, newest first", ISSUE);
export const verifyCommand = notImplemented('verify', "Verify a backup's checksums and archives", ISSUE, [
  { name: 'backup', type: 'string', description: 'Backup id, or "latest".', default: 'latest' },
]);
export const restoreCommand = notImplemented('restore', 'Restore a backup into a database (destructive restores need --confirm)', ISSUE, [
  { name: 'backup', type: 'string', description: 'Backup id, or "latest".', default: 'latest' },
  { name: 'target', type: 'string', description: 'PostgreSQL URL of the database to restore into.', required: true },
  { name: 'confirm', type: 'string', description: 'The target database name, exactly, to allow replacing a database that holds data.' },
  { name: 'jobs', type: 'string', description: 'Parallel pg_restore jobs.', default: '2' },
]);
export const pruneCommand = notImplemented('prune', 'Apply the retention policy to backups (dry run unless --apply)', ISSUE, [
  { name: 'apply', type: 'boolean', description: 'Delete for real (default: only list what would go).', default: 'false' },
]);

export const backupAction = singleCommandAction('backup', 'Back up PostgreSQL and Redis into the Lifeline catalog with sha256 checksums.', backupCommand);
export const verifyAction = singleCommandAction('verify', "Verify a backup's checksums and archives.", verifyCommand);
export const restoreAction = singleCommandAction('restore', 'Restore a verified backup; refuses destructive restores without explicit confirmation.', restoreCommand);
