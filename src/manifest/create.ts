import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { bundleToJSON } from '@sigstore/bundle';
import type { Signer, Witness } from '@sigstore/sign';
import { CATALOG_SCHEMA_VERSION, assertSafeSegment, type Catalog, type CatalogEntry } from '../catalog/store';
import { failure, isLifelineError, usageError } from '../errors';
import type { Logger } from '../logger';
import { KeySigner, loadSigningKey } from './keys';
import { githubIdentityToken, keylessSignerAndWitnesses, type GithubOidcRequest, type KeylessSigning } from './keyless';
import { parseImageReference } from './image-ref';
import { loadSigstoreSign } from './sigstore-modules';
import { resolveImageDigest, type RegistryAuth } from './registry';
import { buildStatement, serializeStatement } from './statement';
import { sha256Hex } from './digest';
import { BUNDLE_FILE, IN_TOTO_PAYLOAD_TYPE, MANIFEST_FILE, RELEASE_METADATA_FILE, SERVICE_ROLES, type ReleaseImages, type ReleaseManifest, type ReleaseMetadata, type WorkflowRun } from './types';

/**
 * `'keyless'` signs with the GitHub OIDC identity (needs `githubOidc`) on the public-good
 * instance; `{ keyless: true, ... }` names other Fulcio / Rekor / TSA URLs or another token
 * source; a key signs air-gapped.
 */
export type ManifestSigner = 'keyless' | ({ keyless: true } & Partial<KeylessSigning>) | { privateKeyPem: string };

export interface CreateReleaseOptions {
  catalog: Catalog;
  env: string;
  release: string;
  gitSha?: string;
  /** Tags or digests; tags are resolved through the registry before anything is signed. */
  images: ReleaseImages;
  migrationHead?: string | null;
  backup?: { id: string; sha256: string } | null;
  signer: ManifestSigner;
  registryAuth?: RegistryAuth;
  workflowRun?: WorkflowRun;
  /** The runner's OIDC request URL and token, for `signer: 'keyless'`. */
  githubOidc?: GithubOidcRequest;
  logger: Logger;
  now?: Date;
}

export interface CreatedRelease {
  manifestPath: string;
  bundlePath: string;
  /** `sha256:<hex>` of manifest.json, the signed payload. */
  digest: string;
  dir: string;
  manifest: ReleaseManifest;
}

export async function createReleaseManifest(options: CreateReleaseOptions): Promise<CreatedRelease> {
  const { catalog, env, release, logger } = options;
  assertSafeSegment(release, 'release version');
  for (const role of SERVICE_ROLES) {
    if (!options.images[role]) throw usageError('MISSING_IMAGE', `no image for the ${role} service`, `pass --image ${role}=registry/repo:tag (or @sha256:...) for each of api, web and worker`);
    parseImageReference(options.images[role]);
  }
  if (await catalog.get(env, 'releases', release, RELEASE_METADATA_FILE)) {
    throw usageError('RELEASE_EXISTS', `release ${release} already has a manifest in environment ${env}`, 'release manifests are immutable: use a new version');
  }
  const signing = await prepareSigner(options);

  const images = {} as ReleaseImages;
  for (const role of SERVICE_ROLES) images[role] = await resolveImageDigest(options.images[role], { auth: options.registryAuth, logger });

  const manifest: ReleaseManifest = {
    release: {
      version: release,
      ...(options.gitSha ? { gitSha: options.gitSha } : {}),
      environment: env,
      createdAt: (options.now ?? new Date()).toISOString(),
      ...(options.workflowRun ? { workflowRun: options.workflowRun } : {}),
    },
    images,
    migrationHead: options.migrationHead ?? null,
    backup: options.backup ?? null,
  };
  const payload = serializeStatement(buildStatement(manifest));
  const bundle = await logger.group(`Signing release ${release} (${signing.kind === 'key' ? 'key' : 'keyless'})`, async () => {
    try {
      const { DSSEBundleBuilder } = await loadSigstoreSign();
      return await new DSSEBundleBuilder({ signer: signing.signer, witnesses: signing.witnesses }).create({ data: payload, type: IN_TOTO_PAYLOAD_TYPE });
    } catch (error) {
      if (isLifelineError(error)) throw error;
      throw failure('SIGNING_FAILED', `signing the manifest failed: ${(error as Error).message}`, {
        cause: error,
        fix: signing.kind === 'key' ? 'check the signing key' : 'check the job has "permissions: id-token: write" and that Fulcio, Rekor or the TSA are reachable',
      });
    }
  });

  const digest = `sha256:${sha256Hex(payload)}`;
  const staged = await catalog.begin(env, 'releases', release, RELEASE_METADATA_FILE);
  try {
    await staged.addText(MANIFEST_FILE, payload.toString('utf8'));
    await staged.addText(BUNDLE_FILE, `${JSON.stringify(bundleToJSON(bundle), null, 2)}\n`);
    const metadata: ReleaseMetadata = {
      schemaVersion: CATALOG_SCHEMA_VERSION,
      id: release,
      createdAt: manifest.release.createdAt,
      environment: env,
      digest,
      images,
      ...(options.gitSha ? { gitSha: options.gitSha } : {}),
      signing: signing.kind,
    };
    await staged.commit(metadata);
  } catch (error) {
    await staged.abort();
    throw error;
  }
  const dir = staged.finalDir;
  logger.info(`release ${release} signed: ${digest}`);
  return { manifestPath: join(dir, MANIFEST_FILE), bundlePath: join(dir, BUNDLE_FILE), digest, dir, manifest };
}

/**
 * Signs any payload the way release manifests are signed (a DSSE envelope in a Sigstore bundle,
 * key-based or keyless) and returns the bundle as JSON text; drill reports use it.
 */
export async function signDssePayload(
  options: Pick<CreateReleaseOptions, 'signer' | 'githubOidc' | 'logger'>,
  payload: Buffer,
  payloadType: string,
  what: string,
): Promise<{ kind: 'key' | 'keyless'; bundleJson: string }> {
  const signing = await prepareSigner(options);
  try {
    const { DSSEBundleBuilder } = await loadSigstoreSign();
    const bundle = await new DSSEBundleBuilder({ signer: signing.signer, witnesses: signing.witnesses }).create({ data: payload, type: payloadType });
    return { kind: signing.kind, bundleJson: `${JSON.stringify(bundleToJSON(bundle), null, 2)}\n` };
  } catch (error) {
    if (isLifelineError(error)) throw error;
    throw failure('SIGNING_FAILED', `signing the ${what} failed: ${(error as Error).message}`, {
      cause: error,
      fix: signing.kind === 'key' ? 'check the signing key' : 'check the job has "permissions: id-token: write" and that Fulcio, Rekor or the TSA are reachable',
    });
  }
}

async function prepareSigner(options: Pick<CreateReleaseOptions, 'signer' | 'githubOidc' | 'logger'>): Promise<{ kind: 'key' | 'keyless'; signer: Signer; witnesses: Witness[] }> {
  const { signer } = options;
  if (typeof signer === 'object' && 'privateKeyPem' in signer) {
    options.logger.secret(signer.privateKeyPem);
    return { kind: 'key', signer: new KeySigner(await loadSigningKey(signer.privateKeyPem)), witnesses: [] };
  }
  const keyless: Partial<KeylessSigning> = signer === 'keyless' ? {} : signer;
  const identityToken = keyless.identityToken ?? githubIdentityToken(options.githubOidc ?? {});
  return { kind: 'keyless', ...(await keylessSignerAndWitnesses({ ...keyless, identityToken })) };
}

/** Releases of an environment, newest first. */
export function listReleases(catalog: Catalog, env: string): Promise<CatalogEntry<ReleaseMetadata>[]> {
  return catalog.list<ReleaseMetadata>(env, 'releases', RELEASE_METADATA_FILE);
}

/**
 * The id and sha256 of a backup in the catalog, for the manifest's `backup` field. Read
 * defensively: the backup's metadata is another module's file.
 */
export async function backupReference(catalog: Catalog, env: string, id: string): Promise<{ id: string; sha256: string }> {
  const path = join(catalog.entryDir(env, 'backups', id), 'backup.json');
  let metadata: { files?: { postgres?: { sha256?: unknown } }; verified?: { ok?: unknown } };
  try {
    metadata = JSON.parse(await readFile(path, 'utf8'));
  } catch (error) {
    const missing = (error as NodeJS.ErrnoException).code === 'ENOENT';
    throw usageError(
      'BACKUP_NOT_FOUND',
      missing ? `backup ${id} does not exist in environment ${env} (${path})` : `${path} is not valid JSON`,
      'pass the id of a complete backup (lifeline backups lists them)',
    );
  }
  const sha256 = metadata.files?.postgres?.sha256;
  if (typeof sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(sha256)) {
    throw usageError('BACKUP_NO_CHECKSUM', `backup ${id} has no PostgreSQL sha256 in ${path}`, 'pass the id of a complete, verified backup');
  }
  if (metadata.verified?.ok === false) {
    throw usageError(
      'BACKUP_FAILED_VERIFICATION',
      `backup ${id} failed its last verification`,
      'take a new backup and name it in the manifest; a release must not point at a backup that cannot be restored',
    );
  }
  return { id, sha256 };
}
