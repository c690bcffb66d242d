import type { RemoteComparison, RemoteEntryVerification } from '../storage/sync';
import type { CommandResult } from './spec';

/** What a comparison proves, said in its output: a listing comparison never read the bytes. */
export function comparisonModeLine(c: RemoteComparison): string {
  return c.mode === 'deep'
    ? 'deep comparison: every remote file of every local entry was downloaded and hashed'
    : 'listing comparison only: sizes and the sha256 recorded at upload were compared; no remote bytes were read (pass --deep, or verify one entry with `lifeline verify --remote ID`)';
}

/** Renders a comparison; shared by `sync --compare` and `verify --remote` (kept apart from the sync command so the backup bundles do not carry the artifact client). */
export function comparisonResult(env: string, c: RemoteComparison): CommandResult {
  const ref = (e: { kind: string; id: string }) => `${e.kind}/${e.id}`;
  const lines = [
    comparisonModeLine(c),
    ...c.missingRemotely.map((e) => `missing remotely     ${ref(e)}`),
    ...c.keptOnHost.map((e) => `kept on host         ${ref(e)} (plaintext in an environment that encrypts: sync does not copy it; reencrypt it to ship it)`),
    ...c.incompleteRemotely.map((e) => `incomplete remotely  ${ref(e)} (rerun sync)`),
    ...c.missingLocally.map((e) => `missing locally      ${ref(e)}`),
    ...c.mismatched.map((m) => `MISMATCH             ${ref(m)} ${m.file}: ${m.reason}`),
    `${env} vs ${c.location}: ${c.inSync.length} in sync, ${c.missingRemotely.length + c.incompleteRemotely.length} missing remotely, ${c.missingLocally.length} missing locally, ${c.mismatched.length} mismatched file(s)${c.keptOnHost.length ? `, ${c.keptOnHost.length} kept on host` : ''}`,
  ];
  const problems = c.mismatched.length + c.missingRemotely.length + c.incompleteRemotely.length;
  return {
    json: c,
    text: lines.join('\n'),
    exitCode: problems ? 1 : 0,
    failureMessage: problems ? `${env}: the bucket does not hold a verified copy of every local entry` : undefined,
  };
}

/** Renders `verify --remote ID`: one line per object, how its bytes were checked, and the verdict. */
export function remoteVerificationResult(env: string, v: RemoteEntryVerification): CommandResult {
  const ref = `${v.kind}/${v.id}`;
  const lines = [
    `${ref} in ${v.location}, checked against ${v.against}:`,
    ...v.files.map((f) => `  ${f.status === 'ok' ? 'ok      ' : f.status === 'missing' ? 'MISSING ' : 'MISMATCH'} ${f.file}  [${f.method}] ${f.detail}`),
    v.ok
      ? `${ref}: every object in the bucket is present and its bytes match`
      : `${ref}: the bucket does NOT hold a verified copy (${v.files
          .filter((f) => f.status !== 'ok')
          .map((f) => `${f.file} ${f.status}`)
          .join(', ')})`,
  ];
  return {
    json: { environment: env, ...v },
    text: lines.join('\n'),
    outputs: { 'backup-id': v.id, ok: String(v.ok) },
    exitCode: v.ok ? 0 : 1,
    failureMessage: v.ok
      ? undefined
      : `${ref} in ${v.location} does not verify: ${v.files
          .filter((f) => f.status !== 'ok')
          .map((f) => `${f.key} ${f.status === 'missing' ? 'is missing' : `does not match (${f.detail})`}`)
          .join('; ')}`,
  };
}
