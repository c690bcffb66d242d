import type { IdentityProvider, Signer, Witness } from '@sigstore/sign';
import { failure, usageError } from '../errors';
import { loadSigstoreSign } from './sigstore-modules';

/** Where keyless signing gets its certificate and its timestamp. */
export interface KeylessSigning {
  /** Returns an OIDC identity token with audience `sigstore`. */
  identityToken: () => Promise<string>;
  fulcioUrl?: string;
  /** Rekor for public repositories; omitted (with a TSA) for private ones. */
  rekorUrl?: string;
  /** An RFC 3161 timestamp authority, e.g. for private repositories. */
  tsaUrl?: string;
}

/** The GitHub Actions OIDC endpoint, as the runner exposes it when the job has `id-token: write`. */
export interface GithubOidcRequest {
  requestUrl?: string;
  requestToken?: string;
}

export function githubIdentityToken(request: GithubOidcRequest): () => Promise<string> {
  if (!request.requestUrl || !request.requestToken) {
    throw usageError(
      'KEYLESS_NO_OIDC',
      'keyless signing needs a GitHub Actions OIDC token, and ACTIONS_ID_TOKEN_REQUEST_URL is not set',
      'run it in a GitHub Actions job with "permissions: id-token: write", or sign with a key (--signing-key)',
    );
  }
  const { requestUrl, requestToken } = request;
  return async () => {
    const url = new URL(requestUrl);
    url.searchParams.set('audience', 'sigstore');
    const response = await fetch(url, { headers: { Authorization: `Bearer ${requestToken}`, Accept: 'application/json' } });
    if (!response.ok) {
      throw failure('KEYLESS_OIDC_FAILED', `GitHub's OIDC endpoint answered HTTP ${response.status}`, { fix: 'check that the job has "permissions: id-token: write"' });
    }
    const body = (await response.json()) as { value?: string };
    if (!body.value) throw failure('KEYLESS_OIDC_FAILED', "GitHub's OIDC endpoint returned no token", { fix: 'check that the job has "permissions: id-token: write"' });
    return body.value;
  };
}

/** Fulcio signer plus witnesses: Rekor by default, a TSA when one is named (and Rekor only if also named). */
export async function keylessSignerAndWitnesses(options: KeylessSigning): Promise<{ signer: Signer; witnesses: Witness[] }> {
  const { DEFAULT_FULCIO_URL, DEFAULT_REKOR_URL, FulcioSigner, RekorWitness, TSAWitness } = await loadSigstoreSign();
  const identityProvider: IdentityProvider = { getToken: options.identityToken };
  const signer = new FulcioSigner({ identityProvider, fulcioBaseURL: options.fulcioUrl ?? DEFAULT_FULCIO_URL });
  const witnesses: Witness[] = [];
  const rekorUrl = options.rekorUrl ?? (options.tsaUrl ? undefined : DEFAULT_REKOR_URL);
  if (rekorUrl) witnesses.push(new RekorWitness({ rekorBaseURL: rekorUrl, entryType: 'dsse' }));
  if (options.tsaUrl) witnesses.push(new TSAWitness({ tsaBaseURL: options.tsaUrl }));
  return { signer, witnesses };
}
