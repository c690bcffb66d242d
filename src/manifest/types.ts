/** The predicate type of Lifeline's release manifests inside an in-toto Statement. */
export const LIFELINE_PREDICATE_TYPE = 'https://lifeline.dev/release-manifest/v1';
export const IN_TOTO_STATEMENT_TYPE = 'https://in-toto.io/Statement/v1';
/** The DSSE payload type of an in-toto Statement. */
export const IN_TOTO_PAYLOAD_TYPE = 'application/vnd.in-toto+json';

/** The services a release pins, each by image digest. */
export const SERVICE_ROLES = ['api', 'web', 'worker'] as const;
export type ServiceName = (typeof SERVICE_ROLES)[number];

/** `registry/repo@sha256:<64 hex>` for each service. */
export type ReleaseImages = Record<ServiceName, string>;

export interface WorkflowRun {
  repository: string;
  runId: string;
  workflow: string;
  ref: string;
  sha: string;
}

/** The predicate of a release manifest: what a deploy or rollback restores, and proof of where it came from. */
export interface ReleaseManifest {
  release: {
    version: string;
    gitSha?: string;
    environment: string;
    createdAt: string;
    workflowRun?: WorkflowRun;
  };
  images: ReleaseImages;
  /** The migration head (e.g. alembic revision) this release expects; null when it has none. */
  migrationHead: string | null;
  /** The pre-migration backup taken for this release. */
  backup: { id: string; sha256: string } | null;
}

export interface InTotoSubject {
  name: string;
  digest: { sha256: string };
}

export interface InTotoStatement {
  _type: typeof IN_TOTO_STATEMENT_TYPE;
  subject: InTotoSubject[];
  predicateType: typeof LIFELINE_PREDICATE_TYPE;
  predicate: ReleaseManifest;
}

/**
 * Key-based (a PEM public key file) or keyless (the exact workflow identity and its OIDC issuer,
 * and optionally the exact source repository and ref the certificate must name: a reusable
 * workflow's identity is the same for every repository that calls it).
 */
export type VerificationPolicy = { publicKey: string } | { certificateIdentity: string | string[]; certificateOidcIssuer: string; trustedRoot?: string; sourceRepository?: string; sourceRef?: string };

export interface VerifiedRelease {
  /** The predicate, taken only from the verified payload. */
  manifest: ReleaseManifest;
  /** The release's directory in the catalog. */
  dir: string;
  manifestPath: string;
  bundlePath: string;
  /** `sha256:<hex>` of the signed payload (manifest.json). */
  digest: string;
  /** Who signed it: the key hint, or the certificate identity and issuer. */
  signer: { publicKeyHint?: string; identity?: string; issuer?: string };
}

/** The catalog metadata of a release (`release.json`). */
export interface ReleaseMetadata {
  schemaVersion: number;
  id: string;
  createdAt: string;
  environment: string;
  digest: string;
  images: ReleaseImages;
  gitSha?: string;
  signing: 'key' | 'keyless';
  [key: string]: unknown;
}

export const RELEASE_METADATA_FILE = 'release.json';
export const MANIFEST_FILE = 'manifest.json';
export const BUNDLE_FILE = 'manifest.sigstore.json';
