import { join } from 'node:path';
import type { EnvironmentSettings, StorageSettings } from '../settings/resolve';
import { s3StoreFor, type ObjectStore } from './object-store';
import { requireReviewedStorage } from './review';

/**
 * The environment's reviewed bucket, ready for sync, compare and fetch. Throws before any request:
 * exit 3 (with the review checklist) when the provider is not reviewed, exit 2 when storage or its
 * credentials are missing.
 */
export function openReviewedBucket(settings: EnvironmentSettings, options: { fetch?: typeof fetch } = {}): { storage: StorageSettings; remote: ObjectStore } {
  const storage = requireReviewedStorage(settings.name, settings.storage);
  // Resume journals of interrupted multipart uploads; hidden, outside every environment's entries.
  const journalDir = join(settings.store, '.sync', settings.name, 'uploads');
  return { storage, remote: s3StoreFor(storage, { journalDir, fetch: options.fetch }) };
}
