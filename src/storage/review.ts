import { refusal, usageError } from '../errors';
import type { StorageSettings } from '../settings/resolve';

/** What a person must have checked about a provider before Lifeline sends it a restaurant's orders. */
export const REVIEW_CHECKLIST = [
  "data residency: the region and the provider are allowed to hold this data (contracts, GDPR, customers' terms)",
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
export function requireReviewedStorage(env: string, storage: StorageSettings | undefined, now = new Date()): StorageSettings & { reviewed: NonNullable<StorageSettings['reviewed']> } {
  if (!storage) {
    throw usageError(
      'STORAGE_NOT_CONFIGURED',
      `environment ${env} has no storage: section in lifeline.yml`,
      `add environments.${env}.storage (provider: s3, endpoint, region, bucket, prefix, accessKeyIdEnv, secretAccessKeyEnv), review it, then record storage.reviewed`,
    );
  }
  if (!storage.reviewed) {
    throw refusal(
      'STORAGE_NOT_REVIEWED',
      `off-host storage for environment ${env} (bucket ${storage.bucket}) has not been reviewed; nothing was sent.\nReview checklist:\n${reviewChecklistText()}`,
      `once every item is checked, record it in lifeline.yml: environments.${env}.storage.reviewed: { provider: <provider name>, by: <who reviewed>, date: YYYY-MM-DD }`,
      { checklist: [...REVIEW_CHECKLIST], bucket: storage.bucket },
    );
  }
  const problem = reviewDateProblem(storage.reviewed.date, now);
  if (problem) {
    throw refusal(
      'STORAGE_REVIEW_DATE',
      `the review of off-host storage for environment ${env} (bucket ${storage.bucket}) ${problem}; a review cannot vouch for a provider before it happened, so nothing was sent`,
      `record the day the review was actually done: environments.${env}.storage.reviewed.date: YYYY-MM-DD (today or earlier)`,
      { date: storage.reviewed.date },
    );
  }
  return storage as StorageSettings & { reviewed: NonNullable<StorageSettings['reviewed']> };
}

/** Why a review date cannot be believed: not a real calendar day, or later than today anywhere on Earth. */
export function reviewDateProblem(date: string, now: Date): string | undefined {
  const ms = Date.parse(`${date}T00:00:00Z`);
  if (!/^\d{4}-\d{2}-\d{2}$/.test(date) || Number.isNaN(ms) || new Date(ms).toISOString().slice(0, 10) !== date) return `is dated ${JSON.stringify(date)}, which is not a calendar day`;
  // UTC+14 is the earliest "today" anywhere: a date after that is in the future for every reviewer.
  const latestToday = new Date(now.getTime() + 14 * 3600_000).toISOString().slice(0, 10);
  if (date > latestToday) return `is dated ${date}, in the future (today is ${now.toISOString().slice(0, 10)} UTC)`;
  return undefined;
}
