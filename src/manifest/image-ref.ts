import { usageError } from '../errors';

export interface ImageReference {
  /** Host[:port] as written, or `docker.io` when the reference names none. */
  registry: string;
  /** Repository path inside the registry, e.g. `lifeline/api` or `library/nginx`. */
  repository: string;
  tag?: string;
  /** `sha256:<64 hex>` when the reference is pinned. */
  digest?: string;
}

const DIGEST = /^sha256:[0-9a-f]{64}$/;
const REPOSITORY = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$/;
const TAG = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;

export function isDigest(value: string): boolean {
  return DIGEST.test(value);
}

/** Parses `[registry/]repo[:tag][@sha256:hex]` the way Docker does. */
export function parseImageReference(reference: string): ImageReference {
  const bad = (why: string) =>
    usageError('BAD_IMAGE_REFERENCE', `image reference ${JSON.stringify(reference)} is not valid: ${why}`, 'write it as registry/repository:tag or registry/repository@sha256:<64 hex digits>');
  const trimmed = reference.trim();
  if (!trimmed) throw bad('it is empty');
  let rest = trimmed;
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!isDigest(digest)) throw bad('the digest must be sha256: followed by 64 lowercase hex digits');
  }
  let tag: string | undefined;
  const lastSlash = rest.lastIndexOf('/');
  const colon = rest.lastIndexOf(':');
  if (colon > lastSlash) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG.test(tag)) throw bad(`the tag ${JSON.stringify(tag)} has characters a tag cannot have`);
  }
  const parts = rest.split('/');
  let registry = 'docker.io';
  if (parts.length > 1 && (parts[0]!.includes('.') || parts[0]!.includes(':') || parts[0] === 'localhost')) registry = parts.shift()!;
  let repository = parts.join('/');
  if (registry === 'docker.io' && parts.length === 1) repository = `library/${repository}`;
  if (!REPOSITORY.test(repository)) throw bad('the repository must be lowercase letters, digits and separators');
  if (!tag && !digest) tag = 'latest';
  return { registry, repository, tag, digest };
}

/** `registry/repo`, the in-toto subject name of an image. */
export function imageName(ref: ImageReference): string {
  return `${ref.registry}/${ref.repository}`;
}

/** `registry/repo@sha256:...`, the only form a manifest stores. */
export function pinnedReference(ref: ImageReference & { digest: string }): string {
  return `${imageName(ref)}@${ref.digest}`;
}
