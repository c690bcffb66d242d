import { join } from 'node:path';
import type { EnvironmentSettings, StorageSettings } from '../settings/resolve';
import { s3StoreFor, type ObjectStore, type S3ObjectStoreOptions } from './object-store';
import { requireReviewedStorage } from './review';

export interface BucketOptions {
  /** Test seam: the SDK request handler. */
  requestHandler?: S3ObjectStoreOptions['requestHandler'];
  /** Secrets the credential chain resolves are registered here (the logger's masker, core.setSecret in Actions). */
  logger?: { secret(value: string): void; warn(message: string): void };
}

/**
 * The environment's reviewed bucket, ready for sync, compare and fetch. Throws before any request:
 * exit 3 (with the review checklist) when the provider is not reviewed, exit 2 when storage or its
 * named credential variables are missing.
 */
export function openReviewedBucket(settings: EnvironmentSettings, options: BucketOptions = {}): { storage: StorageSettings; remote: ObjectStore } {
  const storage = requireReviewedStorage(settings.name, settings.storage);
  // Resume journals of interrupted multipart uploads; hidden, outside every environment's entries.
  const journalDir = join(settings.store, '.sync', settings.name, 'uploads');
  const logger = options.logger;
  return {
    storage,
    remote: s3StoreFor(storage, {
      journalDir,
      requestHandler: options.requestHandler,
      onSecret: logger ? (value) => logger.secret(value) : undefined,
      warn: logger ? (message) => logger.warn(message) : undefined,
    }),
  };
}
