import type { ActionSpec } from './action-spec';
import { notImplemented } from './spec';

const ISSUE = 'issue #4';

export const manifestCreateCommand = notImplemented('manifest create', 'Create and sign the release manifest (images by digest)', ISSUE);
export const manifestVerifyCommand = notImplemented('manifest verify', "Verify a release manifest's signature and identity", ISSUE);

export const manifestAction: ActionSpec = {
  name: 'manifest',
  description: 'Create and sign, or verify, a Lifeline release manifest (Sigstore bundle).',
  commands: { create: manifestCreateCommand, verify: manifestVerifyCommand },
  selector: { input: 'operation', default: 'create', description: 'create (sign a new manifest) or verify (check an existing one).' },
};
