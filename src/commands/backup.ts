import { Catalog } from '../catalog/store';
import { withLock } from '../catalog/lock';
import { failure, usageError } from '../errors';
import { describeFilesystemError } from '../catalog/fs-errors';
import { createBackup } from '../backup/create';
import { parseCompression, type Compression } from '../settings/compression';
import { runPhysicalBackup } from '../postgres/pgbackrest';
import { environmentConnection, maskedUrl } from '../postgres/connection';
import { composeRunner, postgresRunner, redisRunner } from '../runner/factory';
import { drillRedisImage } from '../redis/container-server';
import { BACKUP_LABELS, BACKUP_METADATA_FILE, findBackup, findBackupForTarget, listBackups, type BackupEntry, type BackupLabel } from '../backup/metadata';
import { formatBytes, type ProgressSink } from '../postgres/progress';
import { estimateBackupBytes } from '../backup/estimate';
import { startProgress } from '../report/progress';
import { renderMarkdownTable } from '../report/table';
import { describeTarget, restoreBackup } from '../backup/restore';
import { runPostRestoreHooks } from '../backup/hooks';
import { sameDatabase, systemIdentifier } from '../postgres/identity';
import { parsePositiveDuration } from '../settings/duration';
import { pruneBackups } from '../backup/retention';
import { believedPassingDrills } from '../drill/gate';
import { recordVerification, verifyBackup, type VerifyReport } from '../backup/verify';
import { restoreRedisIsolated } from '../backup/redis-isolated';
import { parseRedisUrl } from '../redis/snapshot';
import { findExecutable, type Runner } from '../runner/runner';
import { openReviewedBucket } from '../storage/bucket';
import { compareRemote, fetchEntry, verifyRemoteEntry } from '../storage/sync';
import { comparisonResult, remoteVerificationResult } from './remote-report';
import { parsePgUrl, type PgConnection } from '../runner/postgres-env';
import type { EnvironmentSettings } from '../settings/resolve';
import { singleCommandAction } from './action-spec';
import { AGE_IDENTITY_INPUT, IDENTITY_ENV, IDENTITY_FILE_ENV, loadIdentity } from '../crypto/age';
import { requireIdentityFor } from '../crypto/payload';
import { declaredInputs, environmentFor, parseJobs, urlInput, type CommandContext, type CommandResult, type CommandSpec, type InputSpec } from './spec';

const USER_LABELS = BACKUP_LABELS.filter((l) => l !== 'pre-restore');

const LOCK_TIMEOUT_INPUT = {
  name: 'lock-timeout',
  type: 'string',
  description: 'How long to wait for a table lock held by another session (a migration) before failing with who holds it, e.g. 60s; default: postgres.lockTimeout, else 60s.',
} as const;

/**
 * The backup's progress: bytes pg_dump wrote, of an estimate when one exists (an earlier backup of
 * the same database, or the table sizes without compression), with percent and ETA.
 */
async function backupProgress(ctx: CommandContext, options: Parameters<typeof estimateBackupBytes>[0]): Promise<{ sink: ProgressSink; end(): void }> {
  const estimate = ctx.progress?.quiet ? undefined : await estimateBackupBytes(options);
  if (estimate) ctx.logger.debug(`expecting about ${formatBytes(estimate.bytes)} from pg_dump (${estimate.source})`);
  const progress = startProgress(ctx, 'pg_dump', { unit: 'bytes', total: estimate?.bytes, estimated: true });
  return { sink: { onBytes: (_what, bytes) => progress.update(bytes) }, end: () => progress.end() };
}

function redisSourceFor(settings: EnvironmentSettings) {
  const url = settings.redis?.url;
  if (!url) return undefined;
  // redis-check-rdb runs where redis-cli runs: in the Redis service when redis.service is set.
  return async () => {
    const runner = await redisRunner(settings);
    return { runner, checkRunner: runner, target: parseRedisUrl(url) };
  };
}

function verifyReportText(report: VerifyReport): string {
  return [`backup ${report.backupId}: ${report.ok ? 'verified' : 'FAILED verification'}`, ...report.checks.map((c) => `  ${c.ok ? 'ok  ' : 'FAIL'} ${c.name}: ${c.detail}`)].join('\n');
}

async function verifyAndRecord(catalog: Catalog, entry: BackupEntry, settings: EnvironmentSettings, ctx: CommandContext) {
  // The same tools as the backup: inside the Compose service the archive is fed on stdin.
  const runner = await postgresRunner(settings);
  const identity = await loadIdentity(ctx.env, ctx.logger);
  const report = await ctx.logger.group(`Verify backup ${entry.id}`, () =>
    verifyBackup(entry, { runner, redisRunner: () => redisRunner(settings), identity, logger: ctx.logger, progress: startProgress(ctx, 'verify', { unit: 'count' }) }),
  );
  let recorded = entry;
  try {
    recorded = await recordVerification(catalog, settings.name, entry, report);
  } catch (error) {
    // A read-only or full catalog must not hide the verdict: print it, and say it was not kept.
    const unrecorded = describeFilesystemError(error, `the verdict (${report.ok ? 'verified' : 'FAILED'}) was not recorded in ${BACKUP_METADATA_FILE}`);
    if (!unrecorded) throw error;
    ctx.logger.warn(`${unrecorded.message}; fix: ${unrecorded.fix}`);
  }
  return { report, entry: recorded };
}

async function physicalBackup(ctx: CommandContext, type: PhysicalBackupType | undefined): Promise<CommandResult> {
  const settings = environmentFor(ctx);
  const backup = await runPhysicalBackup(settings, ctx.logger, { type });
  return {
    json: { physical: true, id: backup.label, ...backup },
    text: `physical backup ${backup.label} (${backup.type}) in pgBackRest stanza ${settings.postgres.physical!.stanza}`,
    outputs: { 'backup-id': backup.label },
  };
}

const BACKUP_INPUTS = [
  { name: 'label', type: 'string', description: 'Why this backup exists.', default: 'manual', choices: USER_LABELS },
  { name: 'release', type: 'string', description: 'Release version this backup belongs to.' },
  { name: 'git-sha', type: 'string', description: 'Git commit of the release.' },
  {
    name: 'verify',
    type: 'boolean',
    description:
      'Verify the new backup as it is written (pg_restore reads every block of the stream, then lists the file; redis-check-rdb) and fail, adding nothing to the catalog, when it does not verify.',
    default: 'true',
  },
  {
    name: 'compress',
    type: 'string',
    description: 'pg_dump compression, METHOD[:LEVEL]: gzip:1-9, zstd:1-22 or lz4:1-12 (pg_dump 16+), none. Default: postgres.compress, else gzip:1 with pg_dump 15 and older, zstd:1 with 16+.',
  },
  {
    name: 'physical',
    type: 'boolean',
    description: 'Take a physical base backup through pgBackRest instead (needs postgres.physical; WAL archiving makes point-in-time recovery possible).',
    default: 'false',
  },
  { name: 'physical-type', type: 'string', description: 'pgBackRest backup type for --physical; default: postgres.physical.type.', choices: ['full', 'diff', 'incr'] },
  LOCK_TIMEOUT_INPUT,
] as const satisfies readonly InputSpec[];

type PhysicalBackupType = 'full' | 'diff' | 'incr';

export type BackupInputs =
  | { physical: true; physicalType: PhysicalBackupType | undefined }
  | {
      physical: false;
      label: BackupLabel;
      release: string | undefined;
      gitSha: string | undefined;
      verify: boolean;
      compression: Compression | undefined;
      /** --lock-timeout in seconds; undefined: the environment's postgres.lockTimeout. */
      lockTimeoutSeconds: number | undefined;
    };

export function parseBackupInputs(ctx: CommandContext): BackupInputs {
  const inputs = declaredInputs(ctx, BACKUP_INPUTS);
  if (inputs.boolean('physical')) return { physical: true, physicalType: inputs.string('physical-type') as PhysicalBackupType | undefined };
  const label = inputs.string('label') as BackupLabel;
  const release = inputs.string('release');
  const gitSha = inputs.string('git-sha');
  const verify = inputs.boolean('verify');
  const compressInput = inputs.string('compress');
  const compression = compressInput !== undefined ? parseCompression(compressInput) : undefined;
  return { physical: false, label, release, gitSha, verify, compression, lockTimeoutSeconds: lockTimeoutFlag(inputs.string('lock-timeout')) };
}

export const backupCommand: CommandSpec = {
  name: 'backup',
  summary: 'Back up PostgreSQL (and Redis when configured) into the catalog, with checksums',
  inputs: [...BACKUP_INPUTS],
  outputs: [
    { name: 'backup-id', description: 'Id of the new backup.' },
    { name: 'sha256', description: 'sha256 of the PostgreSQL archive.' },
    { name: 'bytes', description: 'Size of the PostgreSQL archive in bytes.' },
    { name: 'path', description: 'Directory of the backup in the catalog.' },
  ],
  implemented: true,
  async run(ctx) {
    const input = parseBackupInputs(ctx);
    if (input.physical) return physicalBackup(ctx, input.physicalType);
    const { label, release, gitSha, verify, compression } = input;
    const settings = environmentFor(ctx);
    const conn = environmentConnection(settings);
    const catalog = new Catalog(settings.store, { warn: (m) => ctx.logger.warn(m) });
    const redisSource = redisSourceFor(settings);
    const created = await ctx.logger.group(`Back up ${settings.name} (${label})`, async () => {
      const runner = await postgresRunner(settings);
      const progress = await backupProgress(ctx, { catalog, environment: settings.name, conn, runner, compression: compression ?? settings.postgres.compress, logger: ctx.logger });
      try {
        return await createBackup({
          catalog,
          environment: settings.name,
          runner,
          conn,
          label,
          release,
          gitSha,
          compression: compression ?? settings.postgres.compress,
          verify,
          encryptTo: settings.encryption?.recipients,
          migrationHeadQuery: settings.postgres.migrationHeadQuery,
          lockTimeoutSeconds: input.lockTimeoutSeconds ?? settings.postgres.lockTimeoutSeconds,
          redis: redisSource ? await redisSource() : undefined,
          logger: ctx.logger,
          progress: progress.sink,
        });
      } finally {
        progress.end();
      }
    });
    // The backup verified itself as it was written: a backup that did not verify is not in the catalog.
    const entry = created;
    const report: VerifyReport | undefined = entry.metadata.verified ? { backupId: entry.id, ok: entry.metadata.verified.ok, checks: entry.metadata.verified.checks } : undefined;
    const archive = entry.metadata.files.postgres;
    const json = {
      id: entry.id,
      sha256: archive.sha256,
      bytes: archive.bytes,
      path: entry.dir,
      label,
      environment: settings.name,
      migrationHead: entry.metadata.migrationHead,
      rowCounts: entry.metadata.rowCounts,
      compression: entry.metadata.compression ?? null,
      verified: entry.metadata.verified ?? null,
    };
    const summary = [
      `### Backup ${entry.id} (${label})`,
      '',
      renderMarkdownTable(
        {
          headers: ['archive', 'bytes', 'sha256', 'tables', 'rows', 'migration head', 'verified'],
          rows: [
            [
              archive.name,
              String(archive.bytes),
              `\`${archive.sha256}\``,
              String(Object.keys(entry.metadata.rowCounts).length),
              String(Object.values(entry.metadata.rowCounts).reduce((a, b) => a + b, 0)),
              entry.metadata.migrationHead ?? '-',
              report ? (report.ok ? 'yes' : '**NO**') : 'skipped',
            ],
          ],
        },
        { escape: 'none' },
      ),
    ].join('\n');
    return {
      json,
      text: report && !report.ok ? `${entry.id}\n${verifyReportText(report)}` : entry.id,
      outputs: { 'backup-id': entry.id, sha256: archive.sha256, bytes: String(archive.bytes), path: entry.dir },
      summary,
      ...(report && !report.ok
        ? {
            exitCode: 1 as const,
            failureMessage: `backup ${entry.id} was written but does not verify: ${report.checks
              .filter((c) => !c.ok)
              .map((c) => c.name)
              .join(', ')}`,
          }
        : {}),
    };
  },
};

export const backupsCommand: CommandSpec = {
  name: 'backups',
  summary: "List the environment's backups, newest first",
  inputs: [],
  outputs: [],
  implemented: true,
  async run(ctx) {
    const settings = environmentFor(ctx);
    const backups = await listBackups(new Catalog(settings.store, { warn: (m) => ctx.logger.warn(m) }), settings.name);
    const rows = backups.map((b) => ({
      id: b.id,
      label: b.metadata.label,
      createdAt: b.metadata.createdAt,
      bytes: b.metadata.files.postgres.bytes,
      sha256: b.metadata.files.postgres.sha256,
      verified: b.metadata.verified ? b.metadata.verified.ok : null,
      release: b.metadata.release ?? null,
      database: b.metadata.database,
      server: b.metadata.systemIdentifier ?? null,
      migrationHead: b.metadata.migrationHead,
      redis: Boolean(b.metadata.files.redis),
      path: b.dir,
    }));
    // The database (and server) of each entry: a pre-restore backup may hold another database.
    const dbWidth = Math.max(8, ...rows.map((r) => r.database.length));
    const text = rows.length
      ? [
          `ID                                LABEL          DATABASE${' '.repeat(Math.max(1, dbWidth - 7))}SERVER               CREATED                   SIZE       VERIFIED  RELEASE`,
          ...rows.map(
            (r) =>
              `${r.id.padEnd(33)} ${r.label.padEnd(14)} ${r.database.padEnd(dbWidth)} ${(r.server ?? '-').padEnd(20)} ${r.createdAt.padEnd(25)} ${formatBytes(r.bytes).padEnd(10)} ${(r.verified === null ? '-' : r.verified ? 'yes' : 'FAILED').padEnd(9)} ${r.release ?? ''}`,
          ),
        ].join('\n')
      : `no backups in environment ${settings.name} (${settings.store})`;
    return { json: rows, text };
  },
};

const VERIFY_INPUTS = [
  { name: 'backup', type: 'string', description: 'Backup id, or "latest".', default: 'latest' },
  {
    name: 'remote',
    type: 'boolean',
    description:
      "Instead, verify the named backup's copy in the environment's reviewed object storage: every object present, and its bytes hashed (the provider's SHA-256 where it keeps one, else downloaded) against SHA256SUMS.",
    default: 'false',
  },
  { name: 'all', type: 'boolean', description: 'With remote: compare every local entry with the bucket instead of verifying one (a listing comparison unless deep is set).', default: 'false' },
  { name: 'deep', type: 'boolean', description: 'With remote and all: download and hash every remote file instead of comparing listings and the sha256 recorded at upload.', default: 'false' },
  AGE_IDENTITY_INPUT,
] as const satisfies readonly InputSpec[];

export interface VerifyInputs {
  backup: string;
  remote: boolean;
  all: boolean;
  deep: boolean;
}

export function parseVerifyInputs(ctx: CommandContext): VerifyInputs {
  const inputs = declaredInputs(ctx, VERIFY_INPUTS);
  return { backup: inputs.string('backup') ?? 'latest', remote: inputs.boolean('remote'), all: inputs.boolean('all'), deep: inputs.boolean('deep') };
}

export const verifyCommand: CommandSpec = {
  name: 'verify',
  summary: "Verify a backup's checksums and archives",
  positional: 'backup',
  inputs: [...VERIFY_INPUTS],
  outputs: [
    { name: 'backup-id', description: 'Id of the verified backup.' },
    { name: 'ok', description: '"true" when every check passed.' },
  ],
  implemented: true,
  async run(ctx) {
    const input = parseVerifyInputs(ctx);
    const wanted = input.backup;
    const settings = environmentFor(ctx);
    if (input.remote) {
      const { storage, remote } = openReviewedBucket(settings, { logger: ctx.logger });
      if (input.all) return comparisonResult(settings.name, await compareRemote({ env: settings.name, store: settings.store, remote, prefix: storage.prefix, deep: input.deep }));
      const verification = await ctx.logger.group(`Verify backups/${wanted} in ${remote.location}`, () =>
        verifyRemoteEntry({ env: settings.name, kind: 'backups', id: wanted, catalog: new Catalog(settings.store), remote, prefix: storage.prefix, logger: ctx.logger }),
      );
      return remoteVerificationResult(settings.name, verification);
    }
    const catalog = new Catalog(settings.store, { warn: (m) => ctx.logger.warn(m) });
    const { report, entry } = await verifyAndRecord(catalog, await findBackup(catalog, settings.name, wanted), settings, ctx);
    const notChecked =
      report.contentsChecked === false
        ? `\n  NOT CHECKED: the contents (the backup is encrypted with age and no identity was given; only the encrypted files' checksums were checked). Set ${IDENTITY_ENV} or ${IDENTITY_FILE_ENV} for the full check.`
        : '';
    return {
      json: report,
      text: verifyReportText(report) + notChecked,
      outputs: { 'backup-id': entry.id, ok: String(report.ok) },
      summary: [
        `### Verify ${entry.id}: ${report.ok ? 'passed' : '**FAILED**'}`,
        '',
        renderMarkdownTable({ headers: ['check', 'result', 'detail'], rows: report.checks.map((c) => [c.name, c.ok ? 'ok' : '**FAIL**', c.detail.replace(/\|/g, '\\|')]) }, { escape: 'none' }),
      ].join('\n'),
      ...(report.ok
        ? {}
        : {
            exitCode: 1 as const,
            failureMessage: `backup ${entry.id} failed verification: ${report.checks
              .filter((c) => !c.ok)
              .map((c) => c.name)
              .join(', ')}`,
          }),
    };
  },
};

const RESTORE_INPUTS = [
  {
    name: 'backup',
    type: 'string',
    description:
      'Backup id, or "latest": the newest backup of the target\'s own database (same name and, where recorded, the same server) that is not a pre-restore backup and did not fail verification. Another database\'s backup needs its id.',
    default: 'latest',
  },
  { name: 'target', type: 'string', description: 'PostgreSQL URL of the database to restore into. A password here is visible to other local users in the process list: prefer target-env.' },
  { name: 'target-env', type: 'string', description: 'Name of an environment variable holding the PostgreSQL URL of the database to restore into (keeps the password off the command line).' },
  { name: 'confirm', type: 'string', description: 'The target database name, exactly, to allow replacing a database that holds data.' },
  { name: 'jobs', type: 'string', description: 'Parallel pg_restore jobs.', default: '2' },
  { name: 'no-owner', type: 'boolean', description: 'Skip ownership and privileges (pg_restore --no-owner --no-privileges), for a server whose roles differ.', default: 'false' },
  { name: 'skip-verify', type: 'boolean', description: 'Do not check the checksums first (recorded with the restore).', default: 'false' },
  { name: 'redis-check', type: 'boolean', description: "Also load the backup's Redis snapshot into a private redis-server and compare key counts.", default: 'false' },
  AGE_IDENTITY_INPUT,
  {
    name: 'from-remote',
    type: 'boolean',
    description: "Fetch the backup from the environment's reviewed object storage first (checksums verified on the way in) when the local catalog does not have it.",
    default: 'false',
  },
  LOCK_TIMEOUT_INPUT,
] as const satisfies readonly InputSpec[];

export interface RestoreInputs {
  backup: string;
  /** The target's URL, from --target or the variable --target-env names (its secrets already masked). */
  targetUrl: string;
  /** The variable --target-env named, for the undo command. */
  targetEnv: string | undefined;
  confirm: string | undefined;
  jobs: number;
  noOwner: boolean;
  skipVerify: boolean;
  redisCheck: boolean;
  fromRemote: boolean;
  lockTimeoutSeconds: number | undefined;
}

export function parseRestoreInputs(ctx: CommandContext): RestoreInputs {
  const inputs = declaredInputs(ctx, RESTORE_INPUTS);
  const backup = inputs.string('backup') ?? 'latest';
  const targetUrl = urlInput(ctx, inputs, 'target', { required: true, example: 'postgres://user:password@host:5432/dbname' })!;
  const confirm = inputs.string('confirm');
  const jobs = parseJobs(inputs.string('jobs'));
  const noOwner = inputs.boolean('no-owner');
  const skipVerify = inputs.boolean('skip-verify');
  const redisCheck = inputs.boolean('redis-check');
  return {
    backup,
    targetUrl,
    targetEnv: inputs.string('target-env'),
    confirm,
    jobs,
    noOwner,
    skipVerify,
    redisCheck,
    fromRemote: inputs.boolean('from-remote'),
    lockTimeoutSeconds: lockTimeoutFlag(inputs.string('lock-timeout')),
  };
}

export const restoreCommand: CommandSpec = {
  name: 'restore',
  summary: 'Restore a backup into a database (destructive restores need --confirm)',
  inputs: [...RESTORE_INPUTS],
  outputs: [
    { name: 'backup-id', description: 'Id of the restored backup.' },
    { name: 'pre-restore-backup-id', description: 'Id of the backup taken of the target before it was replaced (empty when the target held no data).' },
    { name: 'database', description: 'The database that now holds the restored data.' },
  ],
  implemented: true,
  async run(ctx) {
    const input = parseRestoreInputs(ctx);
    const { backup: wanted, targetUrl, confirm, jobs, noOwner, skipVerify, redisCheck, targetEnv } = input;
    const target = parsePgUrl(targetUrl);
    if (target.password) ctx.logger.secret(target.password);
    // The identity is read (and masked) first; an encrypted backup without it is refused before any connection.
    const identity = await loadIdentity(ctx.env, ctx.logger);
    const settings = environmentFor(ctx);
    const catalog = new Catalog(settings.store, { warn: (m) => ctx.logger.warn(m) });
    if (input.fromRemote) await fetchBackupIfMissing(catalog, settings, wanted, ctx);
    const runner = await postgresRunner(settings);
    const lockTimeoutSeconds = input.lockTimeoutSeconds ?? settings.postgres.lockTimeoutSeconds;
    const backup = await findBackupForTarget(catalog, settings.name, wanted, {
      database: target.database,
      systemIdentifier: wanted === 'latest' ? await systemIdentifier(runner, target) : undefined,
      describe: describeTarget(target),
    });
    requireIdentityFor([backup.metadata.files.postgres, ...(redisCheck ? [backup.metadata.files.redis] : [])], identity, `backup ${backup.id}`);
    // The environment form: the undo command never asks anyone to paste a password into argv.
    const undoCommand = (id: string) =>
      `${targetEnv ? '' : `TARGET_URL='${maskedUrl(target)}' (with the real password) `}lifeline restore --env ${settings.name} --backup ${id} --target-env ${targetEnv ?? 'TARGET_URL'} --confirm ${target.database}`;
    // The isolated Redis check's tools are looked for before anything is restored (exit 2 with the fix).
    const redisImage = redisCheck && backup.metadata.files.redis ? await redisCheckSource(settings) : undefined;
    const result = await ctx.logger.group(`Restore ${backup.id} into ${describeTarget(target)}`, () =>
      restoreBackup({
        catalog,
        environment: settings.name,
        backup,
        runner,
        target,
        confirm,
        jobs,
        noOwner,
        skipVerify,
        identity,
        encryptTo: settings.encryption?.recipients,
        logger: ctx.logger,
        progress: startProgress(ctx, 'restore', { unit: 'count', noun: 'objects' }),
        migrationHeadQuery: settings.postgres.migrationHeadQuery,
        compression: settings.postgres.compress,
        lockTimeoutSeconds,
        undoCommand,
      }),
    );
    const redis =
      redisCheck && backup.metadata.files.redis
        ? await restoreRedisIsolated(backup, { binDir: settings.redis?.binDir, logger: ctx.logger, image: redisImage, nameSuffix: `restore-check-${backup.id}` })
        : undefined;
    const hooks = (await isEnvironmentDatabase(settings, target, runner)) ? await runPostRestoreHooks(settings.hooks.postRestore, { logger: ctx.logger }) : [];
    const failedHooks = hooks.filter((h) => !h.ok);
    const problems = [...(redis && !redis.ok ? [`redis key counts differ (${redis.detail})`] : []), ...failedHooks.map((h) => `post-restore hook ${h.hook} failed (${h.detail})`)];
    const c = result.checks;
    return {
      json: { ...result, redis: redis ?? null, hooks },
      text: [
        `restored ${backup.id} into ${maskedUrl(target)} in ${result.seconds.toFixed(1)}s`,
        ...(result.sourceDatabase !== result.database ? [`  backup of database ${result.sourceDatabase} (restored by id)`] : []),
        `  row counts: ${c.rowCounts.tables} tables, ${c.rowCounts.rows} rows, all match backup.json`,
        `  schema fingerprint: matches (${c.schemaFingerprint.actual})`,
        `  database privileges and settings: ${result.databaseState.recorded ? `match the backup${result.databaseState.privileges ? '' : ' (privileges and role settings skipped: --no-owner)'}` : 'NOT restored (the backup predates recording them)'}`,
        `  checksums: ${result.checksumsVerified ? 'verified before restoring' : 'NOT verified (--skip-verify)'}`,
        ...(result.preRestoreBackupId ? [`  pre-restore backup: ${result.preRestoreBackupId}`, `  undo: ${result.undoCommand}`] : []),
        ...(result.sessionsTerminated ? [`  sessions ended for the swap: ${result.sessionsTerminated}`] : []),
        ...result.warnings.map((w) => `  warning: ${w}`),
        ...(redis ? [`  redis: ${redis.detail}`] : []),
        ...hooks.map((h) => `  hook ${h.hook}: ${h.ok ? 'ok' : 'FAILED'} (${h.detail})`),
      ].join('\n'),
      outputs: { 'backup-id': backup.id, 'pre-restore-backup-id': result.preRestoreBackupId ?? '', database: target.database },
      summary: `### Restore ${backup.id} into \`${target.database}\`\n\n${renderMarkdownTable(
        {
          headers: ['rows', 'tables', 'fingerprint', 'checksums', 'pre-restore backup', 'seconds'],
          rows: [[String(c.rowCounts.rows), String(c.rowCounts.tables), 'match', result.checksumsVerified ? 'verified' : 'skipped', result.preRestoreBackupId ?? '-', result.seconds.toFixed(1)]],
        },
        { escape: 'none' },
      )}`,
      ...(problems.length ? { exitCode: 1 as const, failureMessage: `the database was restored, but ${problems.join('; ')}` } : {}),
    };
  },
};

/**
 * Where `restore --redis-check` loads the snapshot: the Redis service's image (redis.service), or
 * this host's redis-server. Refuses (exit 2) before the restore when neither is usable.
 */
async function redisCheckSource(settings: EnvironmentSettings): Promise<string | undefined> {
  const service = settings.redis?.service;
  if (service) return drillRedisImage(await composeRunner(settings.compose, service), service, { who: 'restore --redis-check', consequence: 'nothing was restored' });
  const dirs = settings.redis?.binDir ? [settings.redis.binDir] : [];
  const missing = ['redis-server', 'redis-check-rdb'].filter((tool) => !findExecutable(tool, dirs));
  if (missing.length) {
    throw usageError(
      'REDIS_CHECK_TOOLS_MISSING',
      `restore --redis-check loads the snapshot into a private redis-server, and ${missing.join(' and ')} ${missing.length > 1 ? 'are' : 'is'} not on this host; nothing was restored`,
      "install them (Debian: apt-get install redis-server), set redis.binDir, set redis.service to use the Redis service's image, or drop --redis-check",
    );
  }
  return undefined;
}

/** Brings a backup from object storage into the local catalog (verified), unless it is already here. */
async function fetchBackupIfMissing(catalog: Catalog, settings: EnvironmentSettings, wanted: string, ctx: CommandContext): Promise<void> {
  if (wanted !== 'latest' && (await catalog.get(settings.name, 'backups', wanted, BACKUP_METADATA_FILE))) return;
  const { storage, remote } = openReviewedBucket(settings, { logger: ctx.logger });
  const fetched = await fetchEntry({ env: settings.name, kind: 'backups', id: wanted, catalog, remote, prefix: storage.prefix, logger: ctx.logger });
  ctx.logger.info(`${fetched.fetched ? 'fetched' : 'already had'} backup ${fetched.entry.id} from ${remote.location}`);
}

/** Post-restore hooks are for the environment's live database, decided the way the drill's isolation check decides it. */
async function isEnvironmentDatabase(settings: EnvironmentSettings, target: PgConnection, runner: Runner): Promise<boolean> {
  if (!settings.postgres.url) return false;
  return (await sameDatabase(environmentConnection(settings), target, runner)).same;
}

function lockTimeoutFlag(flag: string | undefined): number | undefined {
  return flag ? parsePositiveDuration(flag, '--lock-timeout') : undefined;
}

const PRUNE_INPUTS = [{ name: 'apply', type: 'boolean', description: 'Delete for real (default: only list what would go).', default: 'false' }] as const satisfies readonly InputSpec[];

export const pruneCommand: CommandSpec = {
  name: 'prune',
  summary: 'Apply the retention policy to backups (dry run unless --apply)',
  inputs: [...PRUNE_INPUTS],
  outputs: [],
  implemented: true,
  async run(ctx) {
    const apply = declaredInputs(ctx, PRUNE_INPUTS).boolean('apply');
    const settings = environmentFor(ctx);
    const catalog = new Catalog(settings.store, { warn: (m) => ctx.logger.warn(m) });
    const result = await withLock(catalog.envDir(settings.name), settings.name, { command: 'prune', waitSeconds: 30 }, () =>
      pruneBackups(catalog, settings.name, settings.retention, { apply, logger: ctx.logger, passingDrills: believedPassingDrills }),
    );
    const going = result.decisions.filter((d) => !d.keep);
    const lines = result.decisions.map((d) => `${d.keep ? 'keep  ' : result.applied ? 'DELETED' : 'delete'} ${d.id}  ${d.label.padEnd(13)} ${d.reasons.join('; ')}`);
    const verdict = result.applied
      ? `deleted ${result.deleted.length} backup(s)`
      : apply
        ? 'nothing deleted: a release manifest is unreadable'
        : `dry run: ${going.length} backup(s) would be deleted; pass --apply to delete them`;
    if (apply && !result.applied) {
      throw failure('PRUNE_BLOCKED', `${verdict} (${result.unreadableManifests.join(', ')})`, { fix: 'repair or remove the unreadable manifest(s), then re-run lifeline prune --apply' });
    }
    return { json: result, text: [...lines, verdict].join('\n') };
  },
};

export const backupAction = singleCommandAction('backup', 'Back up PostgreSQL and Redis into the Lifeline catalog with sha256 checksums.', backupCommand);
export const verifyAction = singleCommandAction('verify', "Verify a backup's checksums and archives.", verifyCommand);
export const restoreAction = singleCommandAction('restore', 'Restore a verified backup; refuses destructive restores without explicit confirmation.', restoreCommand);
