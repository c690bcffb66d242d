import { notImplemented } from './spec';

export const syncCommand = notImplemented('sync', 'Copy verified catalog entries to reviewed object storage', 'issue #10');
