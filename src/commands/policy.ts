import { resolve as resolvePath } from 'node:path';
import type { VerificationPolicy } from '../manifest/types';
import type { EnvironmentSettings } from '../settings/resolve';
import type { CommandContext, DeclaredInputs, DeclaredName, InputSpec } from './spec';

/** The inputs that say what a release manifest must be signed by: shared by manifest verify, deploy and rollback. */
export const POLICY_INPUTS = [
  { name: 'public-key', type: 'string', description: 'Key-based: the PEM public key the manifest must be signed with; default: manifest.publicKey.' },
  {
    name: 'certificate-identity',
    type: 'string',
    description: 'Keyless: the exact workflow identity, e.g. https://github.com/OWNER/REPO/.github/workflows/deploy.yml@refs/heads/main; default: manifest.certificateIdentity.',
  },
  { name: 'certificate-oidc-issuer', type: 'string', description: 'Keyless: the OIDC issuer, e.g. https://token.actions.githubusercontent.com; default: manifest.certificateOidcIssuer.' },
  {
    name: 'certificate-source-repository',
    type: 'string',
    description:
      'Keyless: the exact source repository the certificate must name, e.g. https://github.com/OWNER/APP (a reusable workflow has one identity for every caller); default: manifest.certificateSourceRepository.',
  },
  { name: 'certificate-source-ref', type: 'string', description: 'Keyless: the exact source ref the certificate must name, e.g. refs/heads/main; default: manifest.certificateSourceRef.' },
  { name: 'trusted-root', type: 'string', description: 'Keyless: a pinned Sigstore trusted_root.json for offline verification; default: manifest.trustedRoot, else the public-good root through TUF.' },
] as const satisfies readonly InputSpec[];

/** The policy flags as given (paths resolved from the working directory); all undefined when none was passed. */
export interface PolicyInputs {
  publicKey: string | undefined;
  certificateIdentity: string | undefined;
  certificateOidcIssuer: string | undefined;
  certificateSourceRepository: string | undefined;
  certificateSourceRef: string | undefined;
  trustedRoot: string | undefined;
}

export function parsePolicyInputs(ctx: CommandContext, inputs: DeclaredInputs<DeclaredName<typeof POLICY_INPUTS>>): PolicyInputs {
  const path = (value: string | undefined) => (value ? resolvePath(ctx.cwd, value) : undefined);
  return {
    publicKey: path(inputs.string('public-key')),
    certificateIdentity: inputs.string('certificate-identity'),
    certificateOidcIssuer: inputs.string('certificate-oidc-issuer'),
    certificateSourceRepository: inputs.string('certificate-source-repository'),
    certificateSourceRef: inputs.string('certificate-source-ref'),
    trustedRoot: path(inputs.string('trusted-root')),
  };
}

/** Flags win as a whole over the config's `manifest:` section, so a key flag never mixes with a configured identity. */
export function verificationPolicyFor(flags: PolicyInputs, settings: EnvironmentSettings): VerificationPolicy {
  const fromFlags = Boolean(flags.publicKey || flags.certificateIdentity || flags.certificateOidcIssuer);
  const source = fromFlags ? flags : settings.manifest;
  const trustedRoot = flags.trustedRoot ?? settings.manifest.trustedRoot;
  // verifyReleaseManifest refuses both-or-neither with the fix; pass what was given through.
  return {
    ...(source.publicKey ? { publicKey: source.publicKey } : {}),
    certificateIdentity: source.certificateIdentity!,
    certificateOidcIssuer: source.certificateOidcIssuer!,
    ...(source.certificateSourceRepository ? { sourceRepository: source.certificateSourceRepository } : {}),
    ...(source.certificateSourceRef ? { sourceRef: source.certificateSourceRef } : {}),
    ...(trustedRoot ? { trustedRoot } : {}),
  } as VerificationPolicy;
}
