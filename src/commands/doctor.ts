import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { LOCK_FILE, lockStatus } from '../catalog/lock';
import { Catalog, processAlive } from '../catalog/store';
import { environmentConnection } from '../postgres/connection';
import { postgresRunner } from '../runner/factory';
import { leftoverDatabases, type LeftoverDatabase } from '../postgres/leftovers';
import { describeLeftover, findLeftovers, leftoverRemoveCommand } from '../runner/leftovers';
import { environmentFor, type CommandSpec } from './spec';

interface LeftoverDirectory {
  path: string;
  kind: 'staging' | 'deleting' | 'set-aside';
  remove: string;
}

/**
 * Lists what killed runs left behind: half-written (`.staging-*`) and half-deleted (`.deleting-*`)
 * catalog entries whose writer is gone, and restore scratch databases (`*_lifeline_restore_*`,
 * `*_lifeline_old_*`) on the environment's server, an environment lock whose holder is gone, each with the command that removes it. It
 * removes nothing itself: exit 1 when something is left over, 0 when clean.
 */
export const doctorCommand: CommandSpec = {
  name: 'doctor',
  summary: 'List leftovers of killed runs (staging entries, restore scratch databases, a stale lock) and how to remove them',
  inputs: [],
  outputs: [],
  implemented: true,
  async run(ctx) {
    const settings = environmentFor(ctx);
    const catalog = new Catalog(settings.store);
    const envDir = catalog.envDir(settings.name);
    const directories = await leftoverDirectories(envDir);
    let databases: LeftoverDatabase[] = [];
    let databaseNote: string | undefined;
    if (settings.postgres.url) {
      databases = await leftoverDatabases(await postgresRunner(settings), environmentConnection(settings));
    } else {
      databaseNote = 'no PostgreSQL URL for this environment: restore scratch databases were not looked for (pass --database-url)';
      ctx.logger.warn(databaseNote);
    }
    const lock = await lockStatus(envDir);
    const running = lock.held && !lock.stale;
    // A lock left by a killed run (its holder on this host is gone, per lock.ts) makes every later
    // command exit 3 until it is broken: a leftover like the others. A live holder is not one.
    const staleLock = lock.held && lock.stale ? { path: join(envDir, LOCK_FILE), holder: lock.info, remove: `lifeline lock break --env ${settings.name}` } : undefined;
    // Host-wide, not per environment: servers, copies and containers of drills killed on this host.
    const drills = findLeftovers()
      .filter((l) => l.state === 'orphaned')
      .map((l) => ({ kind: l.kind, description: describeLeftover(l), remove: leftoverRemoveCommand(l) }));
    const total = directories.length + databases.length + drills.length + (staleLock ? 1 : 0);
    const lines = [
      ...(staleLock
        ? [
            `environment lock left by a killed run: ${staleLock.holder ? `pid ${staleLock.holder.pid} on ${staleLock.holder.host}, "${staleLock.holder.command}" since ${staleLock.holder.acquiredAt}, is gone` : `${staleLock.path} is unreadable`}; every later command exits 3 until it is broken\n    remove: ${staleLock.remove}`,
          ]
        : []),
      ...drills.map((d) => `left by a killed drill (the next drill removes it): ${d.description}\n    remove: ${d.remove}`),
      ...directories.map(
        (d) =>
          `${d.kind === 'staging' ? 'half-written entry ' : d.kind === 'deleting' ? 'half-deleted entry ' : 'entry set aside by a re-encryption killed between its two renames (it may be the only whole copy):'} ${d.path}\n    ${d.kind === 'set-aside' ? 'fix' : 'remove'}: ${d.remove}`,
      ),
      ...databases.map(
        (d) =>
          `${d.kind === 'scratch' ? 'restore scratch database' : 'replaced database kept by a restore'} ${d.database}${d.sessions ? ` (${d.sessions} sessions connected)` : ''}\n    remove: ${d.remove}`,
      ),
    ];
    const caution = running
      ? `\nnote: ${lock.info?.command ?? 'something'} (pid ${lock.info?.pid}) holds the environment lock now; a database it is restoring into shows up here until it finishes`
      : '';
    const text = total
      ? `${total} leftover${total === 1 ? '' : 's'} in environment ${settings.name}:\n${lines.join('\n')}${caution}`
      : `environment ${settings.name}: no leftovers${databaseNote ? ` in the catalog (${databaseNote})` : ''}`;
    return {
      json: { environment: settings.name, clean: total === 0, directories, databases, drills, lockHeld: running, ...(staleLock ? { staleLock } : {}), ...(databaseNote ? { note: databaseNote } : {}) },
      text,
      ...(total ? { exitCode: 1 as const, failureMessage: `${total} leftover${total === 1 ? '' : 's'} of killed runs; each line above says how to remove it` } : {}),
    };
  },
};

/** `.staging-*` / `.deleting-*` directories under the environment whose writer (the pid in the name) is gone, or older than an hour. */
async function leftoverDirectories(envDir: string): Promise<LeftoverDirectory[]> {
  const found: LeftoverDirectory[] = [];
  const walk = async (dir: string, depth: number) => {
    let names: string[];
    try {
      names = await readdir(dir);
    } catch {
      return;
    }
    for (const name of names.sort()) {
      const path = join(dir, name);
      const info = await stat(path).catch(() => undefined);
      if (!info?.isDirectory()) continue;
      const kind = name.startsWith('.staging-') ? 'staging' : name.startsWith('.deleting-') ? 'deleting' : name.startsWith('.reencrypt-old-') ? 'set-aside' : undefined;
      if (kind) {
        const pid = Number(/-(\d+)$/.exec(name)?.[1]);
        const abandoned = Date.now() - info.mtimeMs > 60 * 60 * 1000 || !pid || !processAlive(pid);
        // An entry a re-encryption set aside between its two renames may be the only whole copy: never rm.
        const remove =
          kind === 'set-aside'
            ? 'run lifeline reencrypt again in this environment: it puts the entry back, or removes this copy if the re-encrypted entry is in place (do not delete it by hand)'
            : `rm -rf -- '${path.replace(/'/g, `'\\''`)}'`;
        if (abandoned) found.push({ path, kind, remove });
      } else if (depth < 3 && !name.startsWith('.')) {
        await walk(path, depth + 1);
      }
    }
  };
  await walk(envDir, 0);
  return found;
}
