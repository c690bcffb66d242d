import type { Catalog } from '../catalog/store';
import { verifyReleaseManifest, type VerificationPolicy } from '../manifest/verify';
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
