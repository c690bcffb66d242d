import { Catalog } from '../catalog/store';
import { loadIdentity } from '../crypto/age';
import { reencryptBackups, reencryptTenantExports } from '../crypto/reencrypt';
import { usageError } from '../errors';
import { declaredInputs, environmentFor, type CommandContext, type CommandSpec, type InputSpec } from './spec';

const REENCRYPT_INPUTS = [
  { name: 'backup', type: 'string', description: 'Backup id, or "all" (every backup of the environment, pre-restore ones included).' },
  {
    name: 'tenant',
    type: 'string',
    description: 'Re-encrypt this tenant\'s exports (every one of them), or "all" for every tenant\'s; exports made before encryption was configured are encrypted.',
  },
] as const satisfies readonly InputSpec[];

export interface ReencryptInputs {
  /** A backup id or "all"; undefined: no backups. */
  backup: string | undefined;
  /** A tenant or "all"; undefined: no tenant exports. */
  tenant: string | undefined;
}

/** At least one of --backup and --tenant; the environment's name goes into the example of the fix. */
export function parseReencryptInputs(ctx: CommandContext, environment: string): ReencryptInputs {
  const inputs = declaredInputs(ctx, REENCRYPT_INPUTS);
  const backup = inputs.string('backup');
  const tenant = inputs.string('tenant');
  if (!backup && !tenant) throw usageError('MISSING_INPUT', 'reencrypt needs --backup ID|all, --tenant TENANT|all, or both', `e.g. lifeline reencrypt --env ${environment} --backup all --tenant all`);
  return { backup, tenant };
}

export const reencryptCommand: CommandSpec = {
  name: 'reencrypt',
  summary: "Rewrite backups and tenant exports for the environment's current age recipients (atomic per entry; needs the identity for encrypted ones)",
  inputs: [...REENCRYPT_INPUTS],
  outputs: [],
  implemented: true,
  async run(ctx) {
    const identity = await loadIdentity(ctx.env, ctx.logger);
    const settings = environmentFor(ctx);
    const { backup, tenant } = parseReencryptInputs(ctx, settings.name);
    const catalog = new Catalog(settings.store, { warn: (m) => ctx.logger.warn(m) });
    const recipients = settings.encryption?.recipients ?? [];
    const outcomes = [
      ...(backup ? await reencryptBackups({ catalog, env: settings.name, backup, recipients, identity, logger: ctx.logger }) : []),
      ...(tenant ? (await reencryptTenantExports({ catalog, env: settings.name, tenant, recipients, identity, logger: ctx.logger })).map((o) => ({ ...o, id: `tenant export ${o.id}` })) : []),
    ];
    const rewritten = outcomes.filter((o) => o.action === 'rewritten').length;
    const failed = outcomes.filter((o) => o.action === 'failed');
    return {
      ...(failed.length
        ? {
            exitCode: 1 as const,
            failureMessage: `${failed.length} entr${failed.length === 1 ? 'y' : 'ies'} could not be re-encrypted and were left as they were: ${failed.map((o) => o.id).join(', ')}`,
          }
        : {}),
      json: { recipients, entries: outcomes },
      text: [
        ...outcomes.map((o) => `${o.action === 'rewritten' ? 'rewritten' : o.action === 'failed' ? 'FAILED   ' : 'skipped  '} ${o.id}: ${o.files.join(', ')} (${o.detail})`),
        `${rewritten} of ${outcomes.length} entr${outcomes.length === 1 ? 'y' : 'ies'} rewritten for ${recipients.length} recipient(s)`,
      ].join('\n'),
    };
  },
};
