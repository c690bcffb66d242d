import { startProgress } from '../report/progress';
import { renderMarkdownTable } from '../report/table';
import { join } from 'node:path';
import { readEntryText } from '../catalog/confine';
import { Catalog } from '../catalog/store';
import { listLocalEntries } from '../storage/entries';
import { EXPORT_MANIFEST, exportIsEncrypted, type TenantExportManifest } from '../tenant/export';
import { unencryptedPayloads } from '../crypto/payload';
import { usageError } from '../errors';
import type { EnvironmentSettings } from '../settings/resolve';
import { fetchNewestArtifact, uploadNewestAsArtifacts, type ArtifactStore, type ArtifactUpload } from '../storage/artifacts';
import { openReviewedBucket, type BucketOptions } from '../storage/bucket';
import { compareRemote, fetchEntry, syncEnvironment, type SyncReport } from '../storage/sync';
import { singleCommandAction, type ActionSpec } from './action-spec';
import { comparisonResult } from './remote-report';
import { declaredInputs, environmentFor, type CommandContext, type CommandResult, type CommandSpec, type InputSpec } from './spec';

/** What the commands need from outside the process; tests inject fakes for GitHub's artifact service. */
export interface StorageDoors {
  artifactStore?: (ctx: CommandContext) => Promise<ArtifactStore>;
  /** Test seam: the S3 SDK's request handler. */
  requestHandler?: BucketOptions['requestHandler'];
}

/** The real artifact client exists only inside a GitHub Actions job; it is loaded lazily so the CLI bundle stays small. */
async function githubArtifactStoreFor(ctx: CommandContext, githubToken: string | undefined): Promise<ArtifactStore> {
  if (!ctx.env.ACTIONS_RUNTIME_TOKEN) {
    throw usageError(
      'ARTIFACTS_UNAVAILABLE',
      'workflow artifacts can only be used inside a GitHub Actions job (ACTIONS_RUNTIME_TOKEN is not set)',
      'use `to: bucket` / `from: bucket` outside Actions, or run this step in a workflow',
    );
  }
  if (!ctx.artifactStore)
    throw usageError(
      'ARTIFACTS_UNAVAILABLE',
      'this way of running Lifeline has no workflow artifact client',
      'use `to: bucket` / `from: bucket`, or run the sync action or the CLI inside the workflow job',
    );
  return ctx.artifactStore(githubToken);
}

function bucketFor(settings: EnvironmentSettings, doors: StorageDoors, ctx: CommandContext) {
  return openReviewedBucket(settings, { requestHandler: doors.requestHandler, logger: ctx.logger });
}

function retentionDays(raw: string | undefined): number | undefined {
  if (raw === undefined) return undefined;
  const days = Number(raw);
  if (!Number.isInteger(days) || days < 1 || days > 90)
    throw usageError('BAD_INPUT', `--artifact-retention-days must be a whole number of days from 1 to 90 (got "${raw}")`, 'pass e.g. --artifact-retention-days 14');
  return days;
}

const KIND_INPUT = { name: 'kinds', type: 'list', description: 'Only these kinds: backups, releases, drills, tenants (default: all).' } as const satisfies InputSpec;
const TOKEN_INPUT = {
  name: 'github-token',
  type: 'string',
  description: 'Token that lists and downloads artifacts of other workflow runs (needs actions: read).',
  default: '${{ github.token }}',
  actionOnly: true,
} as const satisfies InputSpec;

const SYNC_INPUTS = [
  { name: 'to', type: 'string', description: 'Where the copies go: the reviewed bucket, a workflow artifact, or both.', default: 'bucket', choices: ['bucket', 'artifact', 'both'] },
  KIND_INPUT,
  { name: 'dry-run', type: 'boolean', description: 'List what would be uploaded without sending any payload.', default: 'false' },
  { name: 'compare', type: 'boolean', description: 'Compare the local catalog with the bucket instead of uploading; fails when anything is missing or differs.', default: 'false' },
  {
    name: 'deep',
    type: 'boolean',
    description: 'With compare: download and hash every remote file; without it the comparison reads listings and the sha256 recorded at upload only, and says so.',
    default: 'false',
  },
  { name: 'artifact-retention-days', type: 'string', description: 'Days GitHub keeps the workflow artifact (1-90; default: the repository setting).' },
  TOKEN_INPUT,
] as const satisfies readonly InputSpec[];

export type SyncInputs =
  | { compare: true; kinds: string[]; deep: boolean }
  | { compare: false; to: 'bucket' | 'artifact' | 'both'; kinds: string[]; dryRun: boolean; retentionDays: number | undefined; githubToken: string | undefined };

/** The sync inputs, read once; the retention days are checked only for an upload (a comparison never used them). */
export function parseSyncInputs(ctx: CommandContext): SyncInputs {
  const inputs = declaredInputs(ctx, SYNC_INPUTS);
  const to = (inputs.string('to') ?? 'bucket') as 'bucket' | 'artifact' | 'both';
  const kinds = inputs.list('kinds');
  if (inputs.boolean('compare')) return { compare: true, kinds, deep: inputs.boolean('deep') };
  return { compare: false, to, kinds, dryRun: inputs.boolean('dry-run'), retentionDays: retentionDays(inputs.string('artifact-retention-days')), githubToken: inputs.string('github-token') };
}

export function createSyncCommand(doors: StorageDoors = {}): CommandSpec {
  return {
    name: 'sync',
    summary: 'Copy complete, checksum-verified catalog entries to reviewed object storage (and/or a workflow artifact), or compare the two',
    inputs: [...SYNC_INPUTS],
    outputs: [
      { name: 'uploaded', description: 'Number of entries uploaded to the bucket.' },
      { name: 'present', description: 'Number of entries that were already complete in the bucket.' },
      { name: 'failed', description: 'Number of entries that could not be synced.' },
      { name: 'artifacts', description: 'Names of the workflow artifacts kept, one per line.' },
    ],
    implemented: true,
    async run(ctx) {
      const settings = environmentFor(ctx);
      const input = parseSyncInputs(ctx);
      if (input.compare) return runCompare(ctx, settings, doors, input);
      const { to, kinds, dryRun, retentionDays: days } = input;
      const exclude = await entriesKeptOnHost(settings, kinds, ctx.logger);
      const useBucket = to !== 'artifact';
      const bucket = useBucket ? bucketFor(settings, doors, ctx) : undefined;
      const artifacts = to !== 'bucket' ? await (doors.artifactStore?.(ctx) ?? githubArtifactStoreFor(ctx, input.githubToken)) : undefined;

      let report: SyncReport | undefined;
      if (bucket) {
        report = await ctx.logger.group(`Sync ${settings.name} to ${bucket.remote.location}`, () =>
          syncEnvironment({
            env: settings.name,
            store: settings.store,
            remote: bucket.remote,
            prefix: bucket.storage.prefix,
            logger: ctx.logger,
            kinds,
            exclude,
            dryRun,
            progress: startProgress(ctx, 'sync', { unit: 'bytes' }),
          }),
        );
      }
      let kept: ArtifactUpload[] = [];
      if (artifacts && !dryRun) {
        kept = await ctx.logger.group('Keep workflow artifacts', () =>
          uploadNewestAsArtifacts({ env: settings.name, store: settings.store, kinds, exclude, artifacts, retentionDays: days, logger: ctx.logger }),
        );
      }
      return syncResult(settings.name, report, kept, dryRun);
    },
  };
}

function syncResult(env: string, report: SyncReport | undefined, kept: ArtifactUpload[], dryRun: boolean): CommandResult {
  const lines: string[] = [];
  if (report) {
    for (const e of report.entries) {
      const detail = e.status === 'failed' ? `: ${e.reason}` : e.status === 'present' ? '' : ` (${e.files} file(s), ${e.bytes} bytes${e.resumedParts ? `, ${e.resumedParts} part(s) resumed` : ''})`;
      lines.push(`${e.status.padEnd(12)} ${e.kind}/${e.id}${detail}`);
    }
    lines.push(`${env} -> ${report.location}: ${report.uploaded} ${dryRun ? 'to upload' : 'uploaded'}, ${report.present} already there, ${report.failed} failed`);
  }
  for (const a of kept) lines.push(`artifact     ${a.kind}/${a.id} as ${a.name}`);
  const failed = report?.failed ?? 0;
  const summaryRows = (report?.entries ?? []).map((e) => [e.kind, e.id, e.status, String(e.bytes)]);
  // Without entries the summary keeps the blank line it always had after the header.
  const summaryTable = `${renderMarkdownTable({ headers: ['kind', 'id', 'status', 'bytes'], rows: summaryRows }, { escape: 'none' })}${summaryRows.length ? '' : '\n'}`;
  return {
    json: { environment: env, dryRun, bucket: report ?? null, artifacts: kept },
    text: lines.join('\n') || 'nothing to sync',
    outputs: { uploaded: String(report?.uploaded ?? 0), present: String(report?.present ?? 0), failed: String(failed), artifacts: kept.map((a) => a.name).join('\n') },
    summary: report ? `### Off-host sync: ${env} → ${report.location}\n\n${summaryTable}\n` : undefined,
    exitCode: failed ? 1 : 0,
    failureMessage: failed ? `${failed} entr${failed === 1 ? 'y' : 'ies'} could not be synced; see the log` : undefined,
  };
}

async function runCompare(ctx: CommandContext, settings: EnvironmentSettings, doors: StorageDoors, input: { kinds: string[]; deep: boolean }): Promise<CommandResult> {
  const { storage, remote } = bucketFor(settings, doors, ctx);
  // What sync leaves on the host on purpose is not "missing" from the bucket (the same rule, the same warnings).
  const keptOnHost = await entriesKeptOnHost(settings, input.kinds, ctx.logger);
  const comparison = await compareRemote({ env: settings.name, store: settings.store, remote, prefix: storage.prefix, deep: input.deep, kinds: input.kinds, keptOnHost });
  return comparisonResult(settings.name, comparison);
}

const FETCH_INPUTS = [
  { name: 'from', type: 'string', description: 'Where to fetch from.', default: 'bucket', choices: ['bucket', 'artifact'] },
  { name: 'kind', type: 'string', description: 'Catalog kind: backups, releases, drills or tenants/<tenant>/exports.', default: 'backups' },
  { name: 'id', type: 'string', description: 'Entry id, or "latest" (artifacts: always the newest).', default: 'latest' },
  TOKEN_INPUT,
] as const satisfies readonly InputSpec[];

export interface FetchInputs {
  from: 'bucket' | 'artifact';
  kind: string;
  id: string;
  githubToken: string | undefined;
}

export function parseFetchInputs(ctx: CommandContext): FetchInputs {
  const inputs = declaredInputs(ctx, FETCH_INPUTS);
  return {
    kind: inputs.string('kind') ?? 'backups',
    from: inputs.string('from') === 'artifact' ? 'artifact' : 'bucket',
    id: inputs.string('id') ?? 'latest',
    githubToken: inputs.string('github-token'),
  };
}

export function createFetchCommand(doors: StorageDoors = {}): CommandSpec {
  return {
    name: 'fetch',
    summary: 'Download an entry from the reviewed bucket (or the newest workflow artifact) into the local catalog, verifying every checksum',
    positional: 'id',
    inputs: [...FETCH_INPUTS],
    outputs: [
      { name: 'id', description: 'The id of the entry now in the local catalog.' },
      { name: 'path', description: 'Its directory in the local catalog.' },
      { name: 'fetched', description: '"true" when it was downloaded, "false" when it was already local.' },
    ],
    implemented: true,
    async run(ctx) {
      const settings = environmentFor(ctx);
      const input = parseFetchInputs(ctx);
      const { kind } = input;
      const catalog = new Catalog(settings.store);
      let result: { entry: { id: string; dir: string }; fetched: boolean; source: string; skipped?: Array<{ id: string; reason: string }> };
      if (input.from === 'artifact') {
        const artifacts = await (doors.artifactStore?.(ctx) ?? githubArtifactStoreFor(ctx, input.githubToken));
        const fetched = await fetchNewestArtifact({ env: settings.name, kind, catalog, artifacts, logger: ctx.logger });
        result = { ...fetched, source: `artifact ${fetched.artifact.name}` };
      } else {
        const { storage, remote } = bucketFor(settings, doors, ctx);
        const fetched = await fetchEntry({ env: settings.name, kind, id: input.id, catalog, remote, prefix: storage.prefix, logger: ctx.logger });
        result = { ...fetched, source: remote.location };
      }
      const { entry, fetched } = result;
      return {
        json: { environment: settings.name, kind, id: entry.id, path: entry.dir, fetched, source: result.source, skipped: result.skipped ?? [] },
        text: [
          ...(result.skipped ?? []).map((s) => `passed over ${kind}/${s.id}: ${s.reason}`),
          `${fetched ? 'fetched' : 'already local:'} ${kind}/${entry.id} from ${result.source} -> ${entry.dir}`,
        ].join('\n'),
        outputs: { id: entry.id, path: entry.dir, fetched: String(fetched) },
      };
    },
  };
}

export const syncCommand = createSyncCommand();
export const fetchCommand = createFetchCommand();

export const syncAction: ActionSpec = {
  ...singleCommandAction('sync', 'Copy verified catalog entries off-host (reviewed S3-compatible bucket and/or workflow artifact), or fetch one back.', syncCommand),
  commands: { sync: syncCommand, fetch: fetchCommand },
  selector: { input: 'operation', default: 'sync', description: 'sync (copy entries off-host, or compare) or fetch (bring one entry back into the local catalog).' },
};

/**
 * In an environment that encrypts, the bucket and the artifacts must see no plaintext rows. Entries
 * that hold rows (backups, pre-restore Redis snapshots, tenant exports) are copied only when every
 * payload on disk is, in fact, an age file: decided from the stored bytes (the age header, and every
 * member of an export's archive), never from what backup.json or export.json claim, since an edited
 * claim must not carry plaintext off the host. Those made before encryption was configured, or whose
 * files are not what their metadata says, are left out, each with a warning naming the fix
 * (`lifeline reencrypt`), whatever --kinds says.
 */
async function entriesKeptOnHost(settings: EnvironmentSettings, asked: string[], logger: CommandContext['logger']): Promise<Set<string>> {
  const excluded = new Set<string>();
  if (!settings.encryption) return excluded;
  const wanted = (kind: string) => !asked.length || asked.includes(kind.startsWith('tenants/') ? 'tenants' : kind);
  for (const entry of await listLocalEntries(join(settings.store, settings.name))) {
    const holdsRows = entry.kind === 'backups' || entry.kind === 'redis-snapshots' || entry.kind.startsWith('tenants/');
    if (!holdsRows || !wanted(entry.kind)) continue;
    let problems: string[];
    try {
      problems = await unencryptedPayloads(entry.dir);
    } catch (error) {
      problems = [(error as Error).message];
    }
    let claimsEncryption = false;
    let tenant = 'all';
    if (entry.kind.startsWith('tenants/')) {
      try {
        const manifest = JSON.parse(await readEntryText(entry.dir, EXPORT_MANIFEST)) as TenantExportManifest;
        claimsEncryption = exportIsEncrypted(manifest);
        if (typeof manifest.tenant === 'string') tenant = manifest.tenant;
      } catch {
        problems.push(`its ${EXPORT_MANIFEST} cannot be read, so it cannot be shown to be encrypted`);
      }
    }
    if (!problems.length) continue;
    excluded.add(`${entry.kind}/${entry.id}`);
    const fix =
      entry.kind === 'backups'
        ? `lifeline reencrypt --env ${settings.name} --backup ${entry.id}`
        : entry.kind.startsWith('tenants/')
          ? `lifeline reencrypt --env ${settings.name} --tenant ${JSON.stringify(tenant)}`
          : `a pre-restore snapshot is not re-encrypted by Lifeline: keep it on this host, or delete it once it is no longer needed`;
    const why = claimsEncryption
      ? `its metadata says it is encrypted, but ${problems.join('; ')} (the entry was edited or damaged)`
      : `it is stored in plaintext (${problems.join('; ')}), made before encryption was configured for ${settings.name}`;
    logger.warn(`${entry.kind}/${entry.id} is not copied off the host: ${why}; ${entry.kind === 'redis-snapshots' ? fix : `encrypt it first with: ${fix}`}`);
  }
  return excluded;
}
