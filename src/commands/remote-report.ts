import type { RemoteComparison } from '../storage/sync';
import type { CommandResult } from './spec';

/** Renders a comparison; shared by `sync --compare` and `verify --remote` (kept apart from the sync command so the backup bundles do not carry the artifact client). */
export function comparisonResult(env: string, c: RemoteComparison): CommandResult {
  const ref = (e: { kind: string; id: string }) => `${e.kind}/${e.id}`;
  const lines = [
    ...c.missingRemotely.map((e) => `missing remotely     ${ref(e)}`),
    ...c.incompleteRemotely.map((e) => `incomplete remotely  ${ref(e)} (rerun sync)`),
    ...c.missingLocally.map((e) => `missing locally      ${ref(e)}`),
    ...c.mismatched.map((m) => `MISMATCH             ${ref(m)} ${m.file}: ${m.reason}`),
    `${env} vs ${c.location}: ${c.inSync.length} in sync, ${c.missingRemotely.length + c.incompleteRemotely.length} missing remotely, ${c.missingLocally.length} missing locally, ${c.mismatched.length} mismatched file(s)`,
  ];
  const problems = c.mismatched.length + c.missingRemotely.length + c.incompleteRemotely.length;
  return {
    json: c,
    text: lines.join('\n'),
    exitCode: problems ? 1 : 0,
    failureMessage: problems ? `${env}: the bucket does not hold a verified copy of every local entry` : undefined,
  };
}
