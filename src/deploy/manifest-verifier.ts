import type { Catalog } from '../catalog/store';
import { verifyReleaseManifest, type VerificationPolicy } from '../manifest/verify';
import type { EnvironmentSettings } from '../settings/resolve';
import { verifiedRunningRelease } from './deploy';
import type { ReleaseVerifier } from './release';

/** The release verifier deploys use: the Sigstore bundle in the catalog, checked against the environment's policy. */
export function manifestVerifier(catalog: Catalog, env: string, policy: VerificationPolicy): ReleaseVerifier {
  return {
    async verify(version) {
      const verified = await verifyReleaseManifest({ catalog, env, release: version, policy });
      const { manifest } = verified;
      return {
        version: manifest.release.version,
        gitSha: manifest.release.gitSha,
        images: manifest.images,
        migrationHead: manifest.migrationHead,
        backup: manifest.backup,
        manifestPath: verified.manifestPath,
        manifestDigest: verified.digest,
      };
    },
  };
}

/** The policy of an environment's `manifest:` section, for callers without flags (the drill). */
export function policyFromSettings(manifest: EnvironmentSettings['manifest']): VerificationPolicy {
  return {
    ...(manifest.publicKey ? { publicKey: manifest.publicKey } : {}),
    certificateIdentity: manifest.certificateIdentity!,
    certificateOidcIssuer: manifest.certificateOidcIssuer!,
    ...(manifest.certificateSourceRepository ? { sourceRepository: manifest.certificateSourceRepository } : {}),
    ...(manifest.certificateSourceRef ? { sourceRef: manifest.certificateSourceRef } : {}),
    ...(manifest.trustedRoot ? { trustedRoot: manifest.trustedRoot } : {}),
  } as VerificationPolicy;
}

/**
 * The api image of the release the history says runs, from that release's manifest verified
 * against the environment's policy now (never from a deployment.json in the catalog, which
 * anyone with write access could edit). Undefined when no release deployed by Lifeline is recorded.
 */
export async function verifiedRunningApiImage(catalog: Catalog, settings: EnvironmentSettings): Promise<{ image: string; source: string } | undefined> {
  const release = await verifiedRunningRelease(catalog, settings.name, manifestVerifier(catalog, settings.name, policyFromSettings(settings.manifest)));
  if (!release) return undefined;
  return { image: release.images.api, source: `the api image of the running release ${release.version} (manifest ${release.manifestDigest ?? 'verified'})` };
}
