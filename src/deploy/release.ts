import { failure } from '../errors';
import { SERVICE_ROLES, type ServiceRole } from '../settings/resolve';

/** What a deploy needs from a release manifest, once its signature and identity are verified. */
export interface VerifiedRelease {
  version: string;
  gitSha?: string;
  /** `registry/repo@sha256:...` for each of the three services. */
  images: Record<ServiceRole, string>;
  /** The schema migration head this release expects; null when the manifest records none. */
  migrationHead: string | null;
  /** The pre-migration backup taken for this release. */
  backup: { id: string; sha256: string } | null;
  manifestPath?: string;
  /** Digest of the verified manifest, for the audit trail. */
  manifestDigest?: string;
}

/**
 * Verifies a release's manifest and returns its content; throws a LifelineError (exit 1) when it
 * does not verify. The real one checks the Sigstore bundle against the environment's policy.
 */
export interface ReleaseVerifier {
  verify(version: string): Promise<VerifiedRelease>;
}

const DIGEST_REF = /^[^\s@]+@sha256:[0-9a-f]{64}$/;

/** A manifest that names an image by tag could run something else than what was signed. */
export function assertPinnedImages(release: VerifiedRelease): void {
  for (const role of SERVICE_ROLES) {
    const image = release.images[role];
    if (!image || !DIGEST_REF.test(image)) {
      throw failure('RELEASE_IMAGE_NOT_PINNED', `release ${release.version}: the ${role} image ${JSON.stringify(image ?? null)} is not pinned by digest`, {
        fix: 'create the manifest with images written as registry/repo@sha256:<digest>',
      });
    }
  }
}
