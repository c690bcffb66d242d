import { refusal, usageError } from '../errors';
import type { StorageSettings } from '../settings/resolve';

/** What a person must have checked about a provider before Lifeline sends it a restaurant's orders. */
export const REVIEW_CHECKLIST = [
  'data residency: the region and the provider are allowed to hold this data (contracts, GDPR, customers\' terms)',
  'encryption at rest: the bucket encrypts by default, or storage.serverSideEncryption is set',
  'retention and object lock: versioning/object lock (storage.objectLock) match the retention policy, so a backup cannot be silently overwritten',
  'access keys scoped to the prefix: the key may only list, read and write under the bucket/prefix Lifeline uses, nothing else',
  'deletion protection: the key cannot delete objects (or deletions are held by object lock), so a leaked key cannot erase the off-host copies',
] as const;

export function reviewChecklistText(): string {
  return REVIEW_CHECKLIST.map((item) => `  [ ] ${item}`).join('\n');
}

/**
 * The review gate: refuses (exit 3) before any request is made unless lifeline.yml records who
 * reviewed which provider, and when. Returns the settings narrowed to a reviewed provider.
 */
export function requireReviewedStorage(env: string, storage: StorageSettings | undefined): StorageSettings & { reviewed: NonNullable<StorageSettings['reviewed']> } {
  if (!storage) {
    throw usageError('STORAGE_NOT_CONFIGURED', `environment ${env} has no storage: section in lifeline.yml`, `add environments.${env}.storage (provider: s3, endpoint, region, bucket, prefix, accessKeyIdEnv, secretAccessKeyEnv), review it, then record storage.reviewed`);
  }
  if (!storage.reviewed) {
    throw refusal(
      'STORAGE_NOT_REVIEWED',
      `off-host storage for environment ${env} (bucket ${storage.bucket}) has not been reviewed; nothing was sent.\nReview checklist:\n${reviewChecklistText()}`,
      `once every item is checked, record it in lifeline.yml: environments.${env}.storage.reviewed: { provider: <provider name>, by: <who reviewed>, date: YYYY-MM-DD }`,
      { checklist: [...REVIEW_CHECKLIST], bucket: storage.bucket },
    );
  }
  return storage as StorageSettings & { reviewed: NonNullable<StorageSettings['reviewed']> };
}
