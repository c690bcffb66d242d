import { readFile } from 'node:fs/promises';
import { TrustedRoot } from '@sigstore/protobuf-specs';
import { failure, usageError } from '../errors';
import { loadSigstoreTuf } from './sigstore-modules';

/**
 * A RegExp that matches exactly one of the trusted identities. @sigstore/verify treats a string SAN
 * policy as an unanchored regular expression, so `...@refs/heads/main` would also accept
 * `...@refs/heads/main-evil`.
 */
export function exactIdentityPattern(identities: string | readonly string[]): RegExp {
  const list = typeof identities === 'string' ? [identities] : identities;
  return new RegExp(`^(?:${list.map((identity) => identity.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')).join('|')})$`);
}

/**
 * The trusted keyless identities, from a config list or a flag value with one identity per line or
 * comma. A list lets an upgrade of the signing workflow (whose identity ends in the commit it was
 * called at) keep accepting the manifests the older commit signed.
 */
export function trustedIdentities(value: string | readonly string[] | undefined): string[] {
  if (value === undefined) return [];
  const parts = typeof value === 'string' ? value.split(/[\n,]/) : value;
  return [...new Set(parts.map((part) => part.trim()).filter(Boolean))];
}

/** A pinned trusted root file (offline), or the public-good instance's root through TUF (online). */
export async function loadTrustedRoot(path: string | undefined): Promise<TrustedRoot> {
  if (path) {
    let json: unknown;
    try {
      json = JSON.parse(await readFile(path, 'utf8'));
    } catch (error) {
      throw usageError(
        'BAD_TRUSTED_ROOT',
        `cannot read the trusted root ${path} (${(error as Error).message})`,
        'pass a Sigstore trusted_root.json (e.g. from `sigstore-js` or `cosign trusted-root create`)',
      );
    }
    const root = TrustedRoot.fromJSON(json);
    if (root.certificateAuthorities.length === 0)
      throw usageError('BAD_TRUSTED_ROOT', `${path} lists no certificate authority`, 'pass a trusted root with the Fulcio certificate authority that issued the signing certificates');
    return root;
  }
  try {
    return await (await loadSigstoreTuf()).getTrustedRoot();
  } catch (error) {
    throw failure('TRUSTED_ROOT_UNAVAILABLE', `could not fetch the Sigstore public-good trusted root through TUF (${(error as Error).message})`, {
      cause: error,
      fix: 'verify online, or pin a trusted root file for offline verification (manifest.trustedRoot in lifeline.yml or --trusted-root)',
    });
  }
}
