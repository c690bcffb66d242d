import { join } from 'node:path';
import { bundleToJSON } from '@sigstore/bundle';
import { appendJournal, readJournal, type CorruptLine } from '../catalog/journal';
import { assertSafeSegment, type Catalog } from '../catalog/store';
import { failure, refusal, usageError } from '../errors';
import type { Logger } from '../logger';
import { KeySigner, loadSigningKey } from '../manifest/keys';
import { loadSigstoreSign } from '../manifest/sigstore-modules';
import { RELEASE_METADATA_FILE, type ReleaseMetadata } from '../manifest/types';

export const REVOCATIONS_LOG = 'revocations.ndjson';
export const REVOCATION_PAYLOAD_TYPE = 'application/vnd.lifeline.revocation.v1+json';

/** What is signed: the release, its manifest digest, why, when and by whom. */
export interface RevocationStatement {
  release: string;
  manifestDigest: string | null;
  reason: string;
  at: string;
  by: string;
  environment: string;
}

export interface Revocation extends RevocationStatement {
  /** The Sigstore DSSE bundle over the statement, when a signing key was given; null when unsigned. */
  bundle: unknown;
}

function isRevocation(value: unknown): value is Revocation {
  const v = value as Record<string, unknown>;
  return typeof value === 'object' && value !== null && typeof v.release === 'string' && typeof v.reason === 'string' && typeof v.at === 'string' && typeof v.by === 'string';
}

function revocationsPath(catalog: Catalog, env: string): string {
  return join(catalog.envDir(env), REVOCATIONS_LOG);
}

export async function loadRevocations(catalog: Catalog, env: string): Promise<{ revoked: Map<string, Revocation>; corrupt: CorruptLine[] }> {
  const content = await readJournal(revocationsPath(catalog, env), isRevocation);
  const revoked = new Map<string, Revocation>();
  for (const { value } of content.records) if (!revoked.has(value.release)) revoked.set(value.release, value);
  return { revoked, corrupt: content.corrupt };
}

/**
 * The revocations a deploy must honour. A revocations file with lines that are not revocations
 * cannot say which releases are revoked, so nothing is deployed from it until it is repaired.
 */
export async function revocationsForDeploy(catalog: Catalog, env: string): Promise<Map<string, Revocation>> {
  const { revoked, corrupt } = await loadRevocations(catalog, env);
  if (corrupt.length) {
    throw refusal(
      'REVOCATIONS_CORRUPT',
      `${revocationsPath(catalog, env)} has lines that are not revocations (${corrupt.map((c) => `line ${c.line}: ${c.excerpt}`).join('; ')}), so Lifeline cannot tell which releases are revoked`,
      `look at those lines, remove what is not a revocation (re-run lifeline release revoke for any release it should have revoked), then re-run`,
    );
  }
  return revoked;
}

export function describeRevocation(revocation: Revocation): string {
  return `revoked at ${revocation.at} by ${revocation.by}: ${JSON.stringify(revocation.reason)}${revocation.bundle ? ' (signed)' : ' (unsigned)'}`;
}

/** Refuses (exit 3) to move to a revoked release, before anything changes. */
export function assertNotRevoked(env: string, release: string, revoked: Map<string, Revocation>, action: string): void {
  const revocation = revoked.get(release);
  if (!revocation) return;
  throw refusal(
    'RELEASE_REVOKED',
    `refusing to ${action} ${release}: it was ${describeRevocation(revocation)}`,
    `choose another release (lifeline history --env ${env} lists what ran); a revocation is permanent`,
    {
      revocation: { ...revocation, bundle: undefined },
    },
  );
}

/** `lifeline release revoke`: appends a revocation, signed with the release signing key when one is given. */
export async function revokeRelease(options: { catalog: Catalog; env: string; release: string; reason: string; by: string; signingKey?: string; logger: Logger; now?: Date }): Promise<Revocation> {
  const { catalog, env, release, logger } = options;
  assertSafeSegment(release, 'release version');
  if (!options.reason.trim()) throw usageError('REASON_MISSING', 'a revocation needs a reason', 'pass --reason "what is wrong with it", e.g. --reason "worker crashes on start"');
  const entry = await catalog.get<ReleaseMetadata & { id: string }>(env, 'releases', release, RELEASE_METADATA_FILE);
  if (!entry) throw usageError('RELEASE_NOT_FOUND', `release ${release} has no manifest in environment ${env}`, `list them with: lifeline history --env ${env}`);
  const { revoked } = await loadRevocations(catalog, env);
  const already = revoked.get(release);
  if (already) {
    logger.info(`release ${release} was already ${describeRevocation(already)}`);
    return already;
  }
  const statement: RevocationStatement = {
    release,
    manifestDigest: typeof entry.metadata.digest === 'string' ? entry.metadata.digest : null,
    reason: options.reason,
    at: (options.now ?? new Date()).toISOString(),
    by: options.by,
    environment: env,
  };
  let bundle: unknown = null;
  if (options.signingKey) {
    logger.secret(options.signingKey);
    const signer = new KeySigner(await loadSigningKey(options.signingKey));
    try {
      const { DSSEBundleBuilder } = await loadSigstoreSign();
      bundle = bundleToJSON(await new DSSEBundleBuilder({ signer, witnesses: [] }).create({ data: Buffer.from(JSON.stringify(statement)), type: REVOCATION_PAYLOAD_TYPE }));
    } catch (error) {
      throw failure('SIGNING_FAILED', `signing the revocation failed: ${(error as Error).message}`, { cause: error, fix: 'check the signing key' });
    }
  } else {
    logger.warn('no signing key: the revocation is recorded unsigned (pass --signing-key or set LIFELINE_SIGNING_KEY to sign it)');
  }
  const revocation: Revocation = { ...statement, bundle };
  await appendJournal(revocationsPath(catalog, env), revocation);
  return revocation;
}
