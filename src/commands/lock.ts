import { Catalog } from '../catalog/store';
import { breakLock, lockStatus } from '../catalog/lock';
import { declaredInputs, environmentFor, type CommandSpec, type InputSpec } from './spec';

export const lockStatusCommand: CommandSpec = {
  name: 'lock status',
  summary: "Show who holds the environment's lock, and whether it is stale",
  inputs: [],
  outputs: [],
  implemented: true,
  async run(ctx) {
    const settings = environmentFor(ctx);
    const status = await lockStatus(new Catalog(settings.store).envDir(settings.name));
    const text = !status.held
      ? `${settings.name}: not locked`
      : `${settings.name}: locked by ${status.info ? `${status.info.owner} (pid ${status.info.pid} on ${status.info.host}, "${status.info.command}" since ${status.info.acquiredAt})` : 'an unknown holder'}${status.stale ? '; STALE: the process is gone (lifeline lock break to remove it)' : ''}`;
    return { json: { environment: settings.name, ...status }, text };
  },
};

const LOCK_BREAK_INPUTS = [
  { name: 'force', type: 'boolean', description: 'Break a lock held from another host (check there first that its process is gone).', default: 'false' },
] as const satisfies readonly InputSpec[];

export const lockBreakCommand: CommandSpec = {
  name: 'lock break',
  summary: "Remove the environment's lock when its holder is gone (refused while the holder runs on this host)",
  inputs: [...LOCK_BREAK_INPUTS],
  outputs: [],
  implemented: true,
  async run(ctx) {
    const settings = environmentFor(ctx);
    const status = await breakLock(new Catalog(settings.store).envDir(settings.name), { env: settings.name, force: declaredInputs(ctx, LOCK_BREAK_INPUTS).boolean('force') });
    const text = status.held ? `${settings.name}: removed the lock held by ${status.info?.owner ?? 'an unknown holder'} (pid ${status.info?.pid ?? '?'})` : `${settings.name}: was not locked`;
    ctx.logger.warn(text);
    return { json: { environment: settings.name, removed: status.held, previous: status.info ?? null }, text };
  },
};
