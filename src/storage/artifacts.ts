import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Catalog, CatalogEntry, EntryMetadata } from '../catalog/store';
import { checkSums, parseSums, SUMS_FILE } from '../catalog/sums';
import { entryFilePath, openEntryFile } from '../catalog/confine';
import { failure, usageError } from '../errors';
import type { Logger } from '../logger';
import { asEntryKind, listLocalEntries, metadataFileOf } from './entries';
import { importEntry } from './import';

export interface ArtifactRef {
  id: number;
  name: string;
  createdAt?: string;
  /** The workflow run that uploaded it: needed to download from another run. */
  workflowRunId?: number;
}

/**
 * GitHub's artifact service, seen from Lifeline. The real adapter (src/actions/artifact-store.ts)
 * wraps @actions/artifact; tests use a fake, since the service cannot run off GitHub.
 */
export interface ArtifactStore {
  upload(name: string, files: string[], rootDirectory: string, options: { retentionDays?: number }): Promise<{ id?: number; size?: number }>;
  /** The newest unexpired artifact whose name starts with `namePrefix`, in any workflow run of the repository. */
  findNewest(namePrefix: string): Promise<ArtifactRef | undefined>;
  /** Downloads and unpacks the artifact's files into `destination`. */
  download(artifact: ArtifactRef, destination: string): Promise<void>;
}

/** `lifeline-<env>-<kind with '/' as '-'>-`: the name prefix every artifact of one kind shares. */
export function artifactNamePrefix(env: string, kind: string): string {
  return `lifeline-${env}-${kind.replace(/\//g, '-')}-`;
}

export interface ArtifactUpload {
  kind: string;
  id: string;
  name: string;
  files: number;
  artifactId?: number;
}

/**
 * Keeps the newest complete entry of each kind as a workflow artifact, after its SHA256SUMS
 * check passes, so a later run (a drill elsewhere) can find it even without a bucket.
 */
export async function uploadNewestAsArtifacts(options: {
  env: string;
  store: string;
  kinds?: string[];
  exclude?: ReadonlySet<string>;
  artifacts: ArtifactStore;
  retentionDays?: number;
  logger: Logger;
}): Promise<ArtifactUpload[]> {
  const entries = await listLocalEntries(join(options.store, options.env));
  const newestByKind = new Map<string, (typeof entries)[number] & { createdAt: string }>();
  for (const entry of entries) {
    if (options.kinds?.length && !options.kinds.includes(entry.kind.split('/')[0]!)) continue;
    if (options.exclude?.has(`${entry.kind}/${entry.id}`)) continue;
    const metadata = JSON.parse(await readFile(join(entry.dir, entry.metadataFile), 'utf8')) as EntryMetadata;
    const current = newestByKind.get(entry.kind);
    if (!current || metadata.createdAt > current.createdAt || (metadata.createdAt === current.createdAt && entry.id > current.id))
      newestByKind.set(entry.kind, { ...entry, createdAt: metadata.createdAt });
  }
  const uploads: ArtifactUpload[] = [];
  for (const entry of newestByKind.values()) {
    const bad = (await checkSums(entry.dir)).filter((c) => !c.ok);
    if (bad.length)
      throw failure('LOCAL_CHECKSUM_MISMATCH', `${entry.kind}/${entry.id} fails its SHA256SUMS check (${bad.map((c) => c.file).join(', ')}); not kept as an artifact`, {
        fix: 'run `lifeline verify` and take a new backup',
      });
    const names = [...entry.sums.map((s) => s.file), SUMS_FILE, entry.metadataFile];
    const name = artifactNamePrefix(options.env, entry.kind) + entry.id;
    const paths = await Promise.all(names.map((n) => entryFilePath(entry.dir, n)));
    const result = await options.artifacts.upload(name, paths, entry.dir, { retentionDays: options.retentionDays });
    options.logger.info(`kept ${entry.kind}/${entry.id} as workflow artifact ${name}${options.retentionDays ? ` for ${options.retentionDays} days` : ''}`);
    uploads.push({ kind: entry.kind, id: entry.id, name, files: names.length, artifactId: result.id });
  }
  return uploads;
}

/**
 * Finds the newest artifact of a kind (from any workflow run), downloads it to a temporary
 * directory outside the catalog, and imports it through `catalog.begin`, re-hashing every file
 * against its SHA256SUMS: a damaged or partial artifact never becomes a catalog entry.
 */
export async function fetchNewestArtifact(options: {
  env: string;
  kind: string;
  catalog: Catalog;
  artifacts: ArtifactStore;
  logger: Logger;
}): Promise<{ entry: CatalogEntry; artifact: ArtifactRef; fetched: boolean }> {
  const kind = asEntryKind(options.kind);
  const prefix = artifactNamePrefix(options.env, kind);
  const artifact = await options.artifacts.findNewest(prefix);
  if (!artifact)
    throw usageError(
      'ARTIFACT_NOT_FOUND',
      `no workflow artifact named ${prefix}* in this repository`,
      'run the backup workflow with `to: artifact` (or `both`) first; artifacts expire after their retention days',
    );
  const id = artifact.name.slice(prefix.length);
  const workDir = await mkdtemp(join(tmpdir(), 'lifeline-artifact-'));
  try {
    await options.artifacts.download(artifact, workDir);
    const names = await readdir(workDir);
    if (!names.includes(SUMS_FILE)) throw failure('ARTIFACT_INCOMPLETE', `artifact ${artifact.name} has no ${SUMS_FILE}`, { fix: 'fetch another artifact or take a new backup' });
    const sums = parseSums(await readFile(join(workDir, SUMS_FILE), 'utf8'));
    const metadataFile = metadataFileOf(names, sums);
    if (!metadataFile) throw failure('ARTIFACT_INCOMPLETE', `artifact ${artifact.name} has no metadata file`, { fix: 'fetch another artifact or take a new backup' });
    const metadata = JSON.parse(await readFile(join(workDir, metadataFile), 'utf8')) as EntryMetadata;
    const result = await importEntry({
      catalog: options.catalog,
      env: options.env,
      kind,
      id,
      metadataFile,
      metadata,
      sums,
      source: `artifact ${artifact.name}`,
      open: async (file) => (await openEntryFile(workDir, file)).createReadStream({ highWaterMark: 1024 * 1024 }),
    });
    options.logger.info(`${result.fetched ? 'imported' : 'already had'} ${kind}/${id} from workflow artifact ${artifact.name}`);
    return { entry: result.entry, artifact, fetched: result.fetched };
  } finally {
    await rm(workDir, { recursive: true, force: true });
  }
}
