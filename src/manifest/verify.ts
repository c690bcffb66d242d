import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { KeyObject } from 'node:crypto';
import { bundleFromJSON, type Bundle } from '@sigstore/bundle';
import { TrustedRoot } from '@sigstore/protobuf-specs';
import type { VerificationError, TrustMaterial, VerifierOptions, VerificationPolicy as SigstorePolicy } from '@sigstore/verify';
import type { Catalog } from '../catalog/store';
import { failure, isLifelineError, usageError, type LifelineError } from '../errors';
import type { CodeOf } from '../error-codes';

/** The codes a signed file's check can fail with, after MANIFEST_ or DRILL_REPORT_ (sigstore's own included). */
type SignedFileCode = 'UNSIGNED' | 'BAD_BUNDLE' | 'NOT_DSSE' | 'WRONG_PAYLOAD_TYPE' | 'TAMPERED' | 'SIGNER_KIND' | 'WRONG_IDENTITY' | 'BAD_SIGNATURE' | 'VERIFY_ERROR' | VerificationError['code'];
import { sha256Hex } from './digest';
import { loadPublicKey, publicKeyHint } from './keys';
import { exactIdentityPattern, loadTrustedRoot, trustedIdentities } from './trust';
import { loadSigstoreVerify } from './sigstore-modules';
import { parseVerifiedStatement } from './statement';
import { BUNDLE_FILE, IN_TOTO_PAYLOAD_TYPE, MANIFEST_FILE, RELEASE_METADATA_FILE, type VerificationPolicy, type VerifiedRelease } from './types';

export type { VerificationPolicy, VerifiedRelease } from './types';

export interface VerifyReleaseOptions {
  catalog: Catalog;
  env: string;
  release: string;
  policy: VerificationPolicy;
}

type PreparedPolicy =
  { kind: 'key'; key: KeyObject; hint: string; path: string } | { kind: 'certificate'; identities: string[]; issuer: string; root: TrustedRoot; sourceRepository?: string; sourceRef?: string };

/** Fulcio's certificate extensions for the source repository URI and ref (DER UTF8String values). */
const SOURCE_EXTENSIONS = { sourceRepository: { oid: '1.3.6.1.4.1.57264.1.12', what: 'source repository' }, sourceRef: { oid: '1.3.6.1.4.1.57264.1.14', what: 'source repository ref' } } as const;

/**
 * Verifies a release's Sigstore bundle against the policy and returns the manifest taken from
 * the verified payload only. Every failure is exit 1 with the reason; unusable inputs are exit 2.
 */
export async function verifyReleaseManifest(options: VerifyReleaseOptions): Promise<VerifiedRelease> {
  const { catalog, env, release } = options;
  const policy = await preparePolicy(options.policy);
  const entry = await catalog.get(env, 'releases', release, RELEASE_METADATA_FILE);
  if (!entry) {
    throw usageError(
      'RELEASE_NOT_FOUND',
      `release ${release} has no manifest in environment ${env}`,
      `create it with lifeline manifest create --env ${env} --release ${release}, or pick a release the catalog lists`,
    );
  }
  const manifestPath = join(entry.dir, MANIFEST_FILE);
  const bundlePath = join(entry.dir, BUNDLE_FILE);
  const bundle = await readBundle(bundlePath);

  if (bundle.content.$case !== 'dsseEnvelope') throw notVerifiedRelease('MANIFEST_NOT_DSSE', 'the bundle does not hold a DSSE envelope');
  const envelope = bundle.content.dsseEnvelope;
  // The verifier signs over whatever payloadType says; only ours may be accepted.
  if (envelope.payloadType !== IN_TOTO_PAYLOAD_TYPE)
    throw notVerifiedRelease('MANIFEST_WRONG_PAYLOAD_TYPE', `the DSSE payloadType is ${JSON.stringify(envelope.payloadType)}, expected ${IN_TOTO_PAYLOAD_TYPE}`);

  const signer = verifyBundle(await loadSigstoreVerify(), bundle, policy);
  const payload = Buffer.from(envelope.payload);

  const stored = await readFile(manifestPath).catch(() => undefined);
  if (!stored || !stored.equals(payload)) {
    throw notVerifiedRelease('MANIFEST_TAMPERED', `${manifestPath} ${stored ? 'differs from' : 'is missing beside'} the signed payload in ${BUNDLE_FILE}`);
  }
  const manifest = parseVerifiedStatement(payload);
  if (manifest.release.environment !== env) {
    throw notVerifiedRelease('MANIFEST_WRONG_ENVIRONMENT', `the manifest was signed for environment ${manifest.release.environment}, not ${env}`);
  }
  if (manifest.release.version !== release) {
    throw notVerifiedRelease('MANIFEST_WRONG_RELEASE', `the manifest stored as release ${release} was signed for release ${manifest.release.version}`);
  }
  return { manifest, dir: entry.dir, manifestPath, bundlePath, digest: `sha256:${sha256Hex(payload)}`, signer };
}

function notVerifiedRelease(code: CodeOf<'failed'>, why: string, cause?: unknown): LifelineError {
  return failure(code, `release manifest verification failed: ${why}`, {
    cause,
    fix: 'do not deploy this release; re-create the manifest from its pipeline, or check that the verification policy (public key or certificate identity) is the right one',
  });
}

async function preparePolicy(policy: VerificationPolicy): Promise<PreparedPolicy> {
  const raw = policy as Partial<{ publicKey: string; certificateIdentity: string | string[]; certificateOidcIssuer: string; trustedRoot: string; sourceRepository: string; sourceRef: string }>;
  const identities = trustedIdentities(raw.certificateIdentity);
  const hasKey = Boolean(raw.publicKey);
  const hasIdentity = Boolean(identities.length || raw.certificateOidcIssuer);
  if (hasKey === hasIdentity) {
    throw usageError(
      'BAD_VERIFICATION_POLICY',
      hasKey ? 'both a public key and a certificate identity were given' : 'no verification policy: neither a public key nor a certificate identity was given',
      'pass either --public-key FILE, or --certificate-identity URI with --certificate-oidc-issuer URI (or set manifest: in lifeline.yml)',
    );
  }
  if (hasKey) {
    const key = await loadPublicKey(raw.publicKey!);
    return { kind: 'key', key, hint: publicKeyHint(key), path: raw.publicKey! };
  }
  if (!identities.length || !raw.certificateOidcIssuer) {
    throw usageError(
      'BAD_VERIFICATION_POLICY',
      'a certificate policy needs both the identity and the OIDC issuer',
      'pass --certificate-identity https://github.com/OWNER/REPO/.github/workflows/deploy.yml@refs/heads/main and --certificate-oidc-issuer https://token.actions.githubusercontent.com',
    );
  }
  return {
    kind: 'certificate',
    identities,
    issuer: raw.certificateOidcIssuer,
    root: await loadTrustedRoot(raw.trustedRoot),
    ...(raw.sourceRepository ? { sourceRepository: raw.sourceRepository } : {}),
    ...(raw.sourceRef ? { sourceRef: raw.sourceRef } : {}),
  };
}

async function readBundle(path: string): Promise<Bundle> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch {
    throw notVerifiedRelease('MANIFEST_UNSIGNED', `the release has no signature bundle (${path} is missing)`);
  }
  try {
    return bundleFromJSON(JSON.parse(text));
  } catch (error) {
    throw notVerifiedRelease('MANIFEST_BAD_BUNDLE', `${path} is not a valid Sigstore bundle (${(error as Error).message})`, error);
  }
}

export interface VerifiedFile {
  signer: VerifiedRelease['signer'];
  /** The signed bytes, equal to the file's. */
  payload: Buffer;
}

/**
 * Verifies a file signed with `signDssePayload` (e.g. a drill report): the bundle beside it must
 * hold a DSSE envelope of `payloadType`, signed as the policy demands, whose payload is exactly
 * the file's bytes. Failures are exit 1 with codes `<codePrefix>_...`; a bad policy is exit 2.
 */
export async function verifySignedFile(options: {
  filePath: string;
  bundlePath: string;
  payloadType: string;
  policy: VerificationPolicy;
  what: string;
  codePrefix: 'DRILL_REPORT';
}): Promise<VerifiedFile> {
  const policy = await preparePolicy(options.policy);
  const fail = (code: `MANIFEST_${SignedFileCode}`, why: string, cause?: unknown) =>
    failure(code.replace(/^MANIFEST_/, `${options.codePrefix}_`) as `DRILL_REPORT_${SignedFileCode}`, `${options.what} signature verification failed: ${why}`, {
      cause,
      fix: `do not trust this ${options.what}; produce a new one with the configured signer, or check the verification policy (manifest: in lifeline.yml)`,
    });
  let bundle: Bundle;
  try {
    bundle = bundleFromJSON(JSON.parse(await readFile(options.bundlePath, 'utf8')));
  } catch (error) {
    const missing = (error as NodeJS.ErrnoException).code === 'ENOENT';
    throw fail(
      missing ? 'MANIFEST_UNSIGNED' : 'MANIFEST_BAD_BUNDLE',
      missing ? `it is not signed (${options.bundlePath} is missing)` : `${options.bundlePath} is not a valid Sigstore bundle (${(error as Error).message})`,
      error,
    );
  }
  if (bundle.content.$case !== 'dsseEnvelope') throw fail('MANIFEST_NOT_DSSE', 'the bundle does not hold a DSSE envelope');
  const envelope = bundle.content.dsseEnvelope;
  if (envelope.payloadType !== options.payloadType) throw fail('MANIFEST_WRONG_PAYLOAD_TYPE', `the DSSE payloadType is ${JSON.stringify(envelope.payloadType)}, expected ${options.payloadType}`);
  const signer = verifyBundle(await loadSigstoreVerify(), bundle, policy, fail);
  const payload = Buffer.from(envelope.payload);
  const stored = await readFile(options.filePath).catch(() => undefined);
  if (!stored || !stored.equals(payload)) throw fail('MANIFEST_TAMPERED', `${options.filePath} ${stored ? 'differs from' : 'is missing beside'} the signed payload`);
  return { signer, payload };
}

function verifyBundle(
  { PolicyError, toSignedEntity, toTrustMaterial, VerificationError, Verifier }: Awaited<ReturnType<typeof loadSigstoreVerify>>,
  bundle: Bundle,
  policy: PreparedPolicy,
  notVerified: (code: `MANIFEST_${SignedFileCode}`, why: string, cause?: unknown) => LifelineError = notVerifiedRelease,
): VerifiedRelease['signer'] {
  const material = bundle.verificationMaterial.content;
  const bundleHint = material.$case === 'publicKey' ? material.publicKey.hint : undefined;
  if (policy.kind === 'key' && material.$case !== 'publicKey') throw notVerified('MANIFEST_SIGNER_KIND', 'it was signed keyless (with a certificate), but the policy expects a public key');
  if (policy.kind === 'certificate' && material.$case === 'publicKey') throw notVerified('MANIFEST_SIGNER_KIND', 'it was signed with a key, but the policy expects a certificate identity');

  let trust: TrustMaterial;
  let verifierOptions: VerifierOptions;
  let sigstorePolicy: SigstorePolicy | undefined;
  if (policy.kind === 'key') {
    // Whatever hint the bundle names, only the configured key is ever tried.
    trust = toTrustMaterial(TrustedRoot.fromJSON({ mediaType: 'application/vnd.dev.sigstore.trustedroot+json;version=0.1' }), () => ({ publicKey: policy.key, validFor: () => true }));
    verifierOptions = { tlogThreshold: 0, ctlogThreshold: 0, timestampThreshold: 0 };
  } else {
    trust = toTrustMaterial(policy.root);
    verifierOptions = {
      ctlogThreshold: policy.root.ctlogs.length > 0 ? 1 : 0,
      tlogThreshold: policy.root.tlogs.length > 0 && policy.root.timestampAuthorities.length === 0 ? 1 : 0,
      timestampThreshold: 1,
    };
    const oids = (['sourceRepository', 'sourceRef'] as const).flatMap((name) =>
      policy[name] ? [{ oid: { id: SOURCE_EXTENSIONS[name].oid.split('.').map(Number) }, value: derUtf8String(policy[name]!) }] : [],
    );
    sigstorePolicy = { subjectAlternativeName: exactIdentityPattern(policy.identities), extensions: { issuer: policy.issuer }, ...(oids.length ? { oids } : {}) };
  }
  try {
    const signer = new Verifier(trust, verifierOptions).verify(toSignedEntity(bundle), sigstorePolicy);
    if (policy.kind === 'key') return { publicKeyHint: policy.hint };
    return { identity: signer.identity?.subjectAlternativeName, issuer: signer.identity?.extensions?.issuer };
  } catch (error) {
    if (isLifelineError(error)) throw error;
    if (error instanceof PolicyError && policy.kind === 'certificate') throw notVerified('MANIFEST_WRONG_IDENTITY', `${policyMismatch(error.message, policy)} (${error.message})`, error);
    if (error instanceof VerificationError && error.code === 'SIGNATURE_ERROR' && policy.kind === 'key') {
      const otherKey = bundleHint && bundleHint !== policy.hint ? `; the bundle names key ${bundleHint}, the policy's key ${policy.path} is ${policy.hint}` : '';
      throw notVerified('MANIFEST_BAD_SIGNATURE', `the signature does not match the public key ${policy.path}: the payload was changed or signed with another key${otherKey}`, error);
    }
    if (error instanceof VerificationError) throw notVerified(`MANIFEST_${error.code}`, error.message, error);
    throw notVerified('MANIFEST_VERIFY_ERROR', (error as Error).message, error);
  }
}

function policyMismatch(message: string, policy: Extract<PreparedPolicy, { kind: 'certificate' }>): string {
  for (const name of ['sourceRepository', 'sourceRef'] as const) {
    if (message.includes(SOURCE_EXTENSIONS[name].oid)) return `the certificate's ${SOURCE_EXTENSIONS[name].what} is not exactly ${policy[name]}`;
  }
  if (/extension/.test(message)) return `the certificate's OIDC issuer is not ${policy.issuer}`;
  return policy.identities.length === 1
    ? `the certificate identity is not exactly ${policy.identities[0]}`
    : `the certificate identity is none of the ${policy.identities.length} trusted identities (${policy.identities.join(', ')})`;
}

/** The DER encoding of a UTF8String, the form Fulcio gives its newer extension values. */
function derUtf8String(value: string): Buffer {
  const bytes = Buffer.from(value, 'utf8');
  const length = bytes.length < 0x80 ? Buffer.from([bytes.length]) : bytes.length < 0x100 ? Buffer.from([0x81, bytes.length]) : Buffer.from([0x82, bytes.length >> 8, bytes.length & 0xff]);
  return Buffer.concat([Buffer.from([0x0c]), length, bytes]);
}
