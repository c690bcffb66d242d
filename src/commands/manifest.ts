import { mkdir, writeFile } from 'node:fs/promises';
import { join, resolve as resolvePath } from 'node:path';
import { Catalog } from '../catalog/store';
import { refusal, usageError } from '../errors';
import { githubIdentityToken } from '../manifest/keyless';
import { trustedIdentities } from '../manifest/trust';
import { backupReference, createReleaseManifest, type ManifestSigner } from '../manifest/create';
import { generateSigningKeyPair } from '../manifest/keys';
import { SERVICE_ROLES, type ReleaseImages, type ReleaseManifest, type VerificationPolicy, type WorkflowRun } from '../manifest/types';
import { verifyReleaseManifest } from '../manifest/verify';
import { renderMarkdownTable } from '../report/table';
import type { ActionSpec } from './action-spec';
import { parsePolicyInputs, POLICY_INPUTS, verificationPolicyFor } from './policy';
import { declaredInputs, environmentFor, type CommandContext, type CommandSpec, type DeclaredInputs, type DeclaredName, type InputSpec, type OutputSpec } from './spec';

const RELEASE_INPUT = { name: 'release', type: 'string', description: 'The release version, e.g. v1.4.0 (the catalog entry releases/<version>).', required: true } as const satisfies InputSpec;

/** How a release manifest (and a drill report) is signed: a key, or keyless in Actions. */
export const SIGNER_INPUTS = [
  { name: 'signing-key', type: 'string', description: 'ECDSA P-256 private key: a PEM file path, or the PEM itself from a secret (default: LIFELINE_SIGNING_KEY). Masked in logs.' },
  { name: 'keyless', type: 'boolean', description: 'Sign keyless with the GitHub OIDC identity (needs permissions: id-token: write).', default: 'false' },
  { name: 'fulcio-url', type: 'string', description: 'Keyless: Fulcio URL (default: the public-good instance).' },
  { name: 'rekor-url', type: 'string', description: 'Keyless: Rekor URL (default: the public-good instance unless a TSA is given).' },
  { name: 'tsa-url', type: 'string', description: 'Keyless: RFC 3161 timestamp authority URL (for private repositories).' },
] as const satisfies readonly InputSpec[];

/** What SIGNER_INPUTS asked for; the key (flag, else LIFELINE_SIGNING_KEY) is masked when it is the PEM itself. */
export interface SignerInputs {
  keyless: boolean;
  signingKey: string | undefined;
  fulcioUrl: string | undefined;
  rekorUrl: string | undefined;
  tsaUrl: string | undefined;
}

export function parseSignerInputs(ctx: CommandContext, inputs: DeclaredInputs<DeclaredName<typeof SIGNER_INPUTS>>): SignerInputs {
  const keyless = inputs.boolean('keyless');
  const signingKey = inputs.string('signing-key') ?? ctx.env.LIFELINE_SIGNING_KEY;
  // The PEM itself (from a secret) is masked line by line; a path to it is not a secret and must stay readable in errors.
  if (signingKey?.includes('-----BEGIN')) for (const line of [signingKey, ...signingKey.split('\n')]) if (!line.startsWith('-----')) ctx.logger.secret(line.trim());
  return { keyless, signingKey, fulcioUrl: inputs.string('fulcio-url'), rekorUrl: inputs.string('rekor-url'), tsaUrl: inputs.string('tsa-url') };
}

const OUTPUTS: OutputSpec[] = [
  { name: 'manifest-path', description: 'Path of manifest.json (the signed in-toto Statement) in the catalog.' },
  { name: 'bundle-path', description: 'Path of manifest.sigstore.json (the Sigstore bundle) in the catalog.' },
  { name: 'digest', description: 'sha256:<hex> of manifest.json.' },
];

const MANIFEST_CREATE_INPUTS = [
  RELEASE_INPUT,
  { name: 'git-sha', type: 'string', description: 'Git commit of the release; default: GITHUB_SHA inside Actions.' },
  { name: 'image', type: 'list', description: 'service=reference for api, web and worker; tags are resolved to digests through the registry.', required: true },
  { name: 'backup', type: 'string', description: 'Id of the pre-migration backup taken for this release (its sha256 is read from the catalog).' },
  { name: 'migration-head', type: 'string', description: 'The migration head (e.g. alembic revision) this release expects.' },
  ...SIGNER_INPUTS,
  { name: 'registry-username', type: 'string', description: 'Registry user for resolving tags (default: anonymous, or LIFELINE_REGISTRY_USERNAME).' },
  { name: 'registry-password', type: 'string', description: 'Registry password or token (default: LIFELINE_REGISTRY_PASSWORD). Masked in logs.' },
] as const satisfies readonly InputSpec[];

export interface ManifestCreateInputs {
  release: string;
  images: ReleaseImages;
  signer: SignerInputs;
  backup: string | undefined;
  gitSha: string | undefined;
  migrationHead: string | undefined;
  /** Flag, else LIFELINE_REGISTRY_USERNAME / _PASSWORD (the password masked). */
  registryUsername: string | undefined;
  registryPassword: string | undefined;
}

export function parseManifestCreateInputs(ctx: CommandContext): ManifestCreateInputs {
  const inputs = declaredInputs(ctx, MANIFEST_CREATE_INPUTS);
  const release = inputs.requiredString('release');
  const images = parseImageInputs(inputs.list('image'));
  const signer = parseSignerInputs(ctx, inputs);
  const registryPassword = inputs.string('registry-password') ?? ctx.env.LIFELINE_REGISTRY_PASSWORD;
  if (registryPassword) ctx.logger.secret(registryPassword);
  return {
    release,
    images,
    signer,
    backup: inputs.string('backup'),
    gitSha: inputs.string('git-sha'),
    migrationHead: inputs.string('migration-head'),
    registryUsername: inputs.string('registry-username') ?? ctx.env.LIFELINE_REGISTRY_USERNAME,
    registryPassword,
  };
}

export const manifestCreateCommand: CommandSpec = {
  name: 'manifest create',
  summary: 'Create and sign the release manifest (images by digest)',
  inputs: [...MANIFEST_CREATE_INPUTS],
  outputs: OUTPUTS,
  implemented: true,
  async run(ctx) {
    const settings = environmentFor(ctx);
    const input = parseManifestCreateInputs(ctx);
    const { release, images, registryUsername, registryPassword } = input;
    const signer = signerFor(ctx, input.signer);
    const catalog = new Catalog(settings.store);
    const backupId = input.backup;
    const workflowRun = workflowRunFrom(ctx.env);
    const created = await createReleaseManifest({
      catalog,
      env: settings.name,
      release,
      gitSha: input.gitSha ?? workflowRun?.sha,
      images,
      migrationHead: input.migrationHead ?? null,
      backup: backupId ? await backupReference(catalog, settings.name, backupId) : null,
      signer,
      registryAuth: registryUsername || registryPassword ? { username: registryUsername, password: registryPassword } : undefined,
      workflowRun,
      githubOidc: { requestUrl: ctx.env.ACTIONS_ID_TOKEN_REQUEST_URL, requestToken: ctx.env.ACTIONS_ID_TOKEN_REQUEST_TOKEN },
      logger: ctx.logger,
    });
    const outputs = { 'manifest-path': created.manifestPath, 'bundle-path': created.bundlePath, digest: created.digest };
    return {
      json: { release, environment: settings.name, ...outputs, manifest: created.manifest },
      text: `release ${release} signed for ${settings.name}\n${describeManifest(created.manifest)}\nmanifest: ${created.manifestPath}\nbundle:   ${created.bundlePath}\ndigest:   ${created.digest}`,
      outputs,
      summary: summaryOf('Release manifest signed', created.manifest, created.digest),
    };
  },
};

const MANIFEST_VERIFY_INPUTS = [RELEASE_INPUT, ...POLICY_INPUTS] as const satisfies readonly InputSpec[];

export const manifestVerifyCommand: CommandSpec = {
  name: 'manifest verify',
  summary: "Verify a release manifest's signature and identity",
  inputs: [...MANIFEST_VERIFY_INPUTS],
  outputs: OUTPUTS,
  implemented: true,
  async run(ctx) {
    const settings = environmentFor(ctx);
    const inputs = declaredInputs(ctx, MANIFEST_VERIFY_INPUTS);
    const release = inputs.requiredString('release');
    const policy = parsePolicyInputs(ctx, inputs);
    const verified = await verifyReleaseManifest({ catalog: new Catalog(settings.store), env: settings.name, release, policy: verificationPolicyFor(policy, settings) });
    const outputs = { 'manifest-path': verified.manifestPath, 'bundle-path': verified.bundlePath, digest: verified.digest };
    const by = verified.signer.identity ? `${verified.signer.identity} (${verified.signer.issuer})` : `key ${verified.signer.publicKeyHint}`;
    return {
      json: { release, environment: settings.name, verified: true, signer: verified.signer, ...outputs, manifest: verified.manifest },
      text: `release ${release} verified for ${settings.name}, signed by ${by}\n${describeManifest(verified.manifest)}\ndigest: ${verified.digest}`,
      outputs,
      summary: summaryOf(`Release manifest verified (signed by ${by})`, verified.manifest, verified.digest),
    };
  },
};

/** The GitHub Actions OIDC claims that name the workflow a keyless signature will be bound to. */
interface WorkflowClaims {
  identity: string;
  issuer?: string;
  workflowSha?: string;
}

/** Reads (does not verify: it is our own runner's token) the claims Fulcio turns into the certificate's identity. */
async function workflowClaimsFromOidc(ctx: CommandContext): Promise<WorkflowClaims> {
  const token = await githubIdentityToken({ requestUrl: ctx.env.ACTIONS_ID_TOKEN_REQUEST_URL, requestToken: ctx.env.ACTIONS_ID_TOKEN_REQUEST_TOKEN })();
  ctx.logger.secret(token);
  let claims: { job_workflow_ref?: string; job_workflow_sha?: string; iss?: string };
  try {
    claims = JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString('utf8'));
  } catch {
    throw usageError('KEYLESS_BAD_TOKEN', 'the GitHub OIDC token could not be decoded', 'run this inside a GitHub Actions job with "permissions: id-token: write"');
  }
  if (!claims.job_workflow_ref)
    throw usageError('KEYLESS_BAD_TOKEN', 'the GitHub OIDC token has no job_workflow_ref claim', 'run this inside a GitHub Actions job with "permissions: id-token: write"');
  return { identity: `https://github.com/${claims.job_workflow_ref}`, issuer: claims.iss, workflowSha: claims.job_workflow_sha };
}

const CHECK_IDENTITY_INPUTS = [
  {
    name: 'identity',
    type: 'string',
    description: "The signing identity to check; default inside GitHub Actions: this job's own workflow identity, from its OIDC token (https://github.com/ + job_workflow_ref; needs id-token: write).",
  },
  ...POLICY_INPUTS,
] as const satisfies readonly InputSpec[];

export const manifestCheckIdentityCommand: CommandSpec = {
  name: 'manifest check-identity',
  summary: 'Check, before anything changes, that the keyless identity a workflow signs with is one the verification policy trusts',
  inputs: [...CHECK_IDENTITY_INPUTS],
  outputs: [
    { name: 'identity', description: 'The identity that was checked.' },
    { name: 'workflow-sha', description: "The signing workflow's commit, from the OIDC token (empty when --identity was given)." },
  ],
  implemented: true,
  async run(ctx) {
    const settings = environmentFor(ctx);
    const inputs = declaredInputs(ctx, CHECK_IDENTITY_INPUTS);
    const given = inputs.string('identity');
    const policyInputs = parsePolicyInputs(ctx, inputs);
    const claims: WorkflowClaims = given ? { identity: given } : await workflowClaimsFromOidc(ctx);
    const policy = verificationPolicyFor(policyInputs, settings) as { publicKey?: string; certificateIdentity?: string | string[]; certificateOidcIssuer?: string };
    const trusted = trustedIdentities(policy.certificateIdentity);
    const fix = `add ${claims.identity} to manifest.certificateIdentity of environment ${settings.name} in lifeline.yml (a list: keep the identities older releases were signed with, so they still verify for rollbacks)`;
    if (policy.publicKey)
      throw usageError(
        'POLICY_EXPECTS_KEY',
        `environment ${settings.name} verifies release manifests with a public key, but this workflow signs keyless as ${claims.identity}`,
        'sign with the key (keyless: false and the SIGNING_KEY secret), or set manifest.certificateIdentity instead of manifest.publicKey',
      );
    if (!trusted.length) throw usageError('BAD_VERIFICATION_POLICY', `environment ${settings.name} has no trusted keyless identity`, fix);
    if (!trusted.includes(claims.identity)) {
      throw refusal(
        'IDENTITY_NOT_TRUSTED',
        `a release manifest or drill report signed by ${claims.identity} would not verify for ${settings.name}: the trusted identities are ${trusted.join(', ')}`,
        fix,
      );
    }
    if (claims.issuer && policy.certificateOidcIssuer && claims.issuer !== policy.certificateOidcIssuer) {
      throw refusal(
        'IDENTITY_NOT_TRUSTED',
        `this workflow's OIDC issuer is ${claims.issuer}, but ${settings.name} trusts ${policy.certificateOidcIssuer}`,
        `set manifest.certificateOidcIssuer to ${claims.issuer}`,
      );
    }
    const outputs = { identity: claims.identity, 'workflow-sha': claims.workflowSha ?? '' };
    return {
      json: { environment: settings.name, trusted: true, ...outputs },
      text: `${claims.identity} is a trusted signing identity for ${settings.name}`,
      outputs,
    };
  },
};

const KEYGEN_INPUTS = [
  { name: 'out', type: 'string', description: 'Directory to write release-signing.key (mode 0600) and release-signing.pub into.', required: true },
] as const satisfies readonly InputSpec[];

export const manifestKeygenCommand: CommandSpec = {
  name: 'manifest keygen',
  summary: 'Generate an ECDSA P-256 key pair for key-based release signing',
  inputs: [...KEYGEN_INPUTS],
  outputs: [],
  implemented: true,
  async run(ctx) {
    const dir = resolvePath(ctx.cwd, declaredInputs(ctx, KEYGEN_INPUTS).requiredString('out'));
    const pair = generateSigningKeyPair();
    await mkdir(dir, { recursive: true });
    const privateKeyPath = join(dir, 'release-signing.key');
    const publicKeyPath = join(dir, 'release-signing.pub');
    await writeFile(privateKeyPath, pair.privateKeyPem, { mode: 0o600, flag: 'wx' }).catch((error: NodeJS.ErrnoException) => {
      if (error.code === 'EEXIST') throw usageError('KEY_EXISTS', `${privateKeyPath} already exists`, 'choose another --out directory; an existing signing key is never overwritten');
      throw error;
    });
    await writeFile(publicKeyPath, pair.publicKeyPem);
    return {
      json: { privateKey: privateKeyPath, publicKey: publicKeyPath },
      text: `private key: ${privateKeyPath} (store it as a secret, e.g. RELEASE_SIGNING_KEY, then delete this file)\npublic key:  ${publicKeyPath} (publish it; set manifest.publicKey in lifeline.yml)`,
    };
  },
};

/** The verification policy from flags, else from the environment's `manifest:` settings. Exported for deploy and rollback. */

function parseImageInputs(values: string[]): ReleaseImages {
  const fix = 'pass --image api=REF --image web=REF --image worker=REF (REF is registry/repo:tag or registry/repo@sha256:...)';
  const images: Partial<ReleaseImages> = {};
  for (const value of values) {
    const eq = value.indexOf('=');
    const role = eq > 0 ? value.slice(0, eq).trim() : '';
    if (!(SERVICE_ROLES as readonly string[]).includes(role)) throw usageError('BAD_IMAGE_INPUT', `--image ${JSON.stringify(value)} does not start with api=, web= or worker=`, fix);
    if (images[role as keyof ReleaseImages]) throw usageError('BAD_IMAGE_INPUT', `--image ${role}= is given twice`, fix);
    images[role as keyof ReleaseImages] = value.slice(eq + 1).trim();
  }
  const missing = SERVICE_ROLES.filter((role) => !images[role]);
  if (missing.length) throw usageError('MISSING_IMAGE', `no image for ${missing.join(', ')}`, fix);
  return images as ReleaseImages;
}

function signerFor(ctx: CommandContext, input: SignerInputs): ManifestSigner {
  const signer = optionalSignerFor(ctx, input);
  if (!signer)
    throw usageError(
      'BAD_SIGNER',
      'no signer: pass --signing-key or --keyless',
      'pass --signing-key PEM_FILE (or set LIFELINE_SIGNING_KEY), or --keyless inside GitHub Actions with permissions: id-token: write',
    );
  return signer;
}

/** The signer from SIGNER_INPUTS, or undefined when neither a key nor keyless was asked for. */
export function optionalSignerFor(ctx: CommandContext, input: SignerInputs): ManifestSigner | undefined {
  const { keyless, signingKey, fulcioUrl, rekorUrl, tsaUrl } = input;
  if (keyless) {
    // The reusable workflow passes both and lets `keyless` choose, so a key given too is only ignored.
    if (signingKey) ctx.logger.warn('keyless signing: the signing key given as well is not used');
    return fulcioUrl || rekorUrl || tsaUrl ? { keyless: true, fulcioUrl, rekorUrl, tsaUrl } : 'keyless';
  }
  if (!signingKey) return undefined;
  return { privateKeyPem: signingKey.includes('-----BEGIN') ? signingKey : resolvePath(ctx.cwd, signingKey) };
}

function workflowRunFrom(env: Record<string, string | undefined>): WorkflowRun | undefined {
  if (env.GITHUB_ACTIONS !== 'true' || !env.GITHUB_REPOSITORY || !env.GITHUB_RUN_ID) return undefined;
  return { repository: env.GITHUB_REPOSITORY, runId: env.GITHUB_RUN_ID, workflow: env.GITHUB_WORKFLOW ?? '', ref: env.GITHUB_REF ?? '', sha: env.GITHUB_SHA ?? '' };
}

function describeManifest(manifest: ReleaseManifest): string {
  const lines = SERVICE_ROLES.map((role) => `  ${role.padEnd(6)} ${manifest.images[role]}`);
  if (manifest.migrationHead) lines.push(`  migration head: ${manifest.migrationHead}`);
  if (manifest.backup) lines.push(`  backup: ${manifest.backup.id} (sha256 ${manifest.backup.sha256})`);
  return lines.join('\n');
}

function summaryOf(title: string, manifest: ReleaseManifest, digest: string): string {
  const table = renderMarkdownTable({ headers: ['service', 'image'], rows: SERVICE_ROLES.map((role) => [role, `\`${manifest.images[role]}\``]) }, { escape: 'none' });
  return `### ${title}: ${manifest.release.version} (${manifest.release.environment})\n\n${table}\n\nManifest digest \`${digest}\`; migration head ${manifest.migrationHead ?? 'none'}; backup ${manifest.backup?.id ?? 'none'}.\n`;
}

export const manifestAction: ActionSpec = {
  name: 'manifest',
  description: 'Create and sign, or verify, a Lifeline release manifest (Sigstore bundle).',
  commands: { create: manifestCreateCommand, verify: manifestVerifyCommand, 'check-identity': manifestCheckIdentityCommand },
  selector: {
    input: 'operation',
    default: 'create',
    description: "create (sign a new manifest), verify (check an existing one) or check-identity (check, before a deploy changes anything, that this workflow's keyless identity is trusted).",
  },
};
