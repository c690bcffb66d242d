import { loadIdentity } from '../crypto/age';
import { Catalog } from '../catalog/store';
import { usageError } from '../errors';
import { composeCommand } from '../runner/compose';
import { findRedisSnapshot, restoreRedisLive } from '../backup/redis-live-restore';
import { parseRedisUrl } from '../redis/snapshot';
import { LocalRunner } from '../runner/runner';
import { declaredInputs, environmentFor, type CommandContext, type CommandSpec, type InputSpec } from './spec';

const REDIS_RESTORE_INPUTS = [
  { name: 'backup', type: 'string', description: 'Backup id, a pre-restore snapshot id (to undo a restore), or "latest" (the newest usable backup with a Redis snapshot).', default: 'latest' },
  { name: 'confirm', type: 'string', description: 'The Redis Compose service name (redis.service), exactly, to allow replacing a Redis that holds keys.' },
  { name: 'skip-verify', type: 'boolean', description: "Do not check the snapshot's sha256 first (recorded with the restore; redis-check-rdb still runs).", default: 'false' },
] as const satisfies readonly InputSpec[];

export interface RedisRestoreInputs {
  backup: string;
  confirm: string | undefined;
  skipVerify: boolean;
}

export function parseRedisRestoreInputs(ctx: CommandContext): RedisRestoreInputs {
  const inputs = declaredInputs(ctx, REDIS_RESTORE_INPUTS);
  return { backup: inputs.string('backup') ?? 'latest', confirm: inputs.string('confirm'), skipVerify: inputs.boolean('skip-verify') };
}

export const redisRestoreCommand: CommandSpec = {
  name: 'redis-restore',
  summary: "Restore a backup's Redis snapshot into the live Redis of the Compose stack (a Redis that holds keys needs --confirm)",
  inputs: [...REDIS_RESTORE_INPUTS],
  outputs: [],
  implemented: true,
  async run(ctx) {
    // Loaded (and masked) first; an encrypted snapshot is decrypted in the stream into the check and the container.
    const identity = await loadIdentity(ctx.env, ctx.logger);
    const { backup: wanted, confirm, skipVerify } = parseRedisRestoreInputs(ctx);
    const settings = environmentFor(ctx);
    const service = settings.redis?.service;
    if (!service) {
      throw usageError(
        'NO_REDIS_SERVICE',
        `environment ${settings.name} has no redis.service: the live restore needs the Compose service that runs Redis`,
        `set redis.service (e.g. "service: redis") under environments.${settings.name}.redis in lifeline.yml, with compose.files naming the stack's Compose files`,
      );
    }
    // Inside the service's container; without a URL, Redis' default port in its own container.
    const target = parseRedisUrl(settings.redis?.url ?? 'redis://127.0.0.1:6379/0');
    const catalog = new Catalog(settings.store, { warn: (m) => ctx.logger.warn(m) });
    const source = await findRedisSnapshot(catalog, settings.name, wanted);
    const result = await ctx.logger.group(`Restore the Redis snapshot of ${source.id} into service ${service}`, async () =>
      restoreRedisLive({
        catalog,
        environment: settings.name,
        source,
        service,
        compose: { command: await composeCommand(settings.compose.command), files: settings.compose.files, projectName: settings.compose.projectName },
        target,
        confirm,
        skipVerify,
        runner: new LocalRunner(),
        // redis-check-rdb runs in the service's container (its image when it is stopped): no host redis-tools needed.
        logger: ctx.logger,
        startTimeoutSeconds: Math.max(300, settings.compose.healthTimeoutSeconds),
        identity,
        encryptTo: settings.encryption?.recipients,
      }),
    );
    const text = [
      `${result.ok ? 'restored' : 'restored, but the key counts DO NOT MATCH:'} ${source.kind} ${source.id} into the live Redis of service ${service} (${result.mode === 'aof' ? 'appendonly yes' : 'appendonly no'}) in ${result.seconds.toFixed(1)}s`,
      `  keys: ${result.detail}`,
      `  checksum: ${result.checksumsVerified ? 'verified before restoring' : 'NOT verified (--skip-verify)'}`,
      result.preRestoreSnapshot
        ? `  pre-restore snapshot: ${result.preRestoreSnapshot.id} (${result.preRestoreSnapshot.path}); undo with lifeline redis-restore --env ${settings.name} --backup ${result.preRestoreSnapshot.id} --confirm ${service}`
        : '  pre-restore snapshot: none (the live Redis held no keys)',
      ...(result.staleFilesLeft.length ? [`  old AOF files left in place (ignored by Redis): ${result.staleFilesLeft.join(', ')}`] : []),
    ].join('\n');
    return {
      json: result,
      text,
      ...(result.ok ? {} : { exitCode: 1 as const, failureMessage: `the snapshot was restored into ${service}, but ${result.detail}` }),
    };
  },
};
