import { isLifelineError, usageError } from '../errors';
import type { Logger } from '../logger';
import { imageName, isDigest, parseImageReference, pinnedReference, type ImageReference } from './image-ref';

/** Credentials for a private registry; anonymous when absent. */
export interface RegistryAuth {
  username?: string;
  password?: string;
  /** A ready bearer token (e.g. a GITHUB_TOKEN for ghcr.io), used as the password of the token exchange. */
  token?: string;
}

const MANIFEST_ACCEPT = [
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.v2+json',
].join(', ');

/** Docker Hub's API host differs from the name used in references. */
function apiHost(registry: string): string {
  return registry === 'docker.io' || registry === 'index.docker.io' ? 'registry-1.docker.io' : registry;
}

/** Plain http only for a registry on this machine; anything else is https. */
export function registryBaseUrl(registry: string): string {
  const host = registry.replace(/:\d+$/, '');
  const local = host === 'localhost' || host === '127.0.0.1' || host === '[::1]' || /^127\.\d+\.\d+\.\d+$/.test(host);
  return `${local ? 'http' : 'https'}://${apiHost(registry)}`;
}

/**
 * Resolves an image reference to `registry/repo@sha256:...` through the registry's HTTP API
 * (`HEAD /v2/<name>/manifests/<tag>`, `Docker-Content-Digest`). A reference that already has a
 * digest is kept as it is (its tag dropped): the digest is what gets signed.
 */
export async function resolveImageDigest(reference: string, options: { auth?: RegistryAuth; logger?: Logger; fetchImpl?: typeof fetch } = {}): Promise<string> {
  const ref = parseImageReference(reference);
  if (ref.digest) return pinnedReference({ ...ref, digest: ref.digest });
  const url = `${registryBaseUrl(ref.registry)}/v2/${ref.repository}/manifests/${encodeURIComponent(ref.tag!)}`;
  const doFetch = options.fetchImpl ?? fetch;
  const unresolvable = (why: string, cause?: unknown) =>
    usageError(
      'TAG_NOT_RESOLVED',
      `could not resolve ${reference} to a digest: ${why}`,
      'push the image first, check the registry credentials, or pass the image by digest (registry/repo@sha256:...); a manifest is never written with a bare tag',
      cause ? { cause: String(cause) } : undefined,
    );
  const request = (authorization?: string) => doFetch(url, { method: 'HEAD', headers: { Accept: MANIFEST_ACCEPT, ...(authorization ? { Authorization: authorization } : {}) }, redirect: 'follow' });

  let response: Response;
  try {
    response = await request(basicHeader(options.auth));
    if (response.status === 401) {
      const authorization = await answerChallenge(response.headers.get('www-authenticate'), ref, options.auth, doFetch);
      if (authorization) response = await request(authorization);
    }
  } catch (error) {
    if (isLifelineError(error)) throw error;
    throw unresolvable(`${url} could not be reached (${(error as Error).message})`, error);
  }
  if (response.status === 401 || response.status === 403) throw unresolvable(`the registry refused access (HTTP ${response.status})`);
  if (response.status === 404) throw unresolvable(`the registry has no tag ${ref.tag} in ${ref.repository}`);
  if (!response.ok) throw unresolvable(`the registry answered HTTP ${response.status}`);
  const digest = response.headers.get('docker-content-digest');
  if (!digest || !isDigest(digest)) throw unresolvable('the registry sent no sha256 Docker-Content-Digest header');
  options.logger?.info(`${reference} -> ${imageName(ref)}@${digest}`);
  return pinnedReference({ ...ref, digest });
}

function basicHeader(auth: RegistryAuth | undefined): string | undefined {
  if (!auth?.username || !(auth.password ?? auth.token)) return undefined;
  return `Basic ${Buffer.from(`${auth.username}:${auth.password ?? auth.token}`).toString('base64')}`;
}

/** Parses `Bearer realm="...",service="...",scope="..."` (quoted values may hold commas). */
export function parseChallenge(header: string): { scheme: string; params: Record<string, string> } {
  const space = header.indexOf(' ');
  const scheme = (space < 0 ? header : header.slice(0, space)).toLowerCase();
  const params: Record<string, string> = {};
  const re = /([A-Za-z_]+)=(?:"([^"]*)"|([^,\s]*))/g;
  for (const m of header.slice(space + 1).matchAll(re)) params[m[1]!.toLowerCase()] = m[2] ?? m[3] ?? '';
  return { scheme, params };
}

async function answerChallenge(header: string | null, ref: ImageReference, auth: RegistryAuth | undefined, doFetch: typeof fetch): Promise<string | undefined> {
  if (!header) return undefined;
  const { scheme, params } = parseChallenge(header);
  if (scheme === 'basic') return basicHeader(auth);
  if (scheme !== 'bearer' || !params.realm) return undefined;
  const tokenUrl = new URL(params.realm);
  if (params.service) tokenUrl.searchParams.set('service', params.service);
  tokenUrl.searchParams.set('scope', params.scope ?? `repository:${ref.repository}:pull`);
  const tokenResponse = await doFetch(tokenUrl, { headers: basicHeader(auth) ? { Authorization: basicHeader(auth)! } : {} });
  if (!tokenResponse.ok) {
    throw usageError(
      'REGISTRY_TOKEN',
      `the registry's token service ${tokenUrl.origin} answered HTTP ${tokenResponse.status}`,
      'check the registry credentials (registry-username / registry-password)',
    );
  }
  const body = (await tokenResponse.json()) as { token?: string; access_token?: string };
  const token = body.token ?? body.access_token;
  return token ? `Bearer ${token}` : undefined;
}
