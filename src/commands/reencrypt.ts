import { Catalog } from '../catalog/store';
import { loadIdentity } from '../crypto/age';
import { reencryptBackups } from '../crypto/reencrypt';
import { environmentFor, type CommandSpec } from './spec';

export const reencryptCommand: CommandSpec = {
  name: 'reencrypt',
  summary: "Rewrite backups for the environment's current age recipients (atomic per entry; needs the identity for encrypted ones)",
  inputs: [{ name: 'backup', type: 'string', description: 'Backup id, or "all" (every backup of the environment, pre-restore ones included).', required: true }],
  outputs: [],
  implemented: true,
  async run(ctx) {
    const identity = await loadIdentity(ctx.env, ctx.logger);
    const settings = environmentFor(ctx);
    const catalog = new Catalog(settings.store, { warn: (m) => ctx.logger.warn(m) });
    const outcomes = await reencryptBackups({ catalog, env: settings.name, backup: ctx.inputs.string('backup') ?? '', recipients: settings.encryption?.recipients ?? [], identity, logger: ctx.logger });
    const rewritten = outcomes.filter((o) => o.action === 'rewritten').length;
    const failed = outcomes.filter((o) => o.action === 'failed');
    return {
      ...(failed.length ? { exitCode: 1 as const, failureMessage: `${failed.length} backup(s) could not be re-encrypted and were left as they were: ${failed.map((o) => o.id).join(', ')}` } : {}),
      json: { recipients: settings.encryption?.recipients ?? [], entries: outcomes },
      text: [...outcomes.map((o) => `${o.action === 'rewritten' ? 'rewritten' : o.action === 'failed' ? 'FAILED   ' : 'skipped  '} ${o.id}: ${o.files.join(', ')} (${o.detail})`), `${rewritten} of ${outcomes.length} backup(s) rewritten for ${settings.encryption?.recipients.length ?? 0} recipient(s)`].join('\n'),
    };
  },
};
