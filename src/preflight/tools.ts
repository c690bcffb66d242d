import { constants, statfsSync, accessSync, existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { sharedStoreProblem } from '../catalog/confine';
import { Catalog, type EntryMetadata } from '../catalog/store';
import { parsePgUrl } from '../runner/postgres-env';
import { queryOnce } from '../runner/psql';
import type { Runner } from '../runner/runner';
import { lastLines, runText } from '../runner/runner';
import { displayPath, fail, notChecked, pass, warn, type CheckContext, type Finding } from './findings';
import { formatBytes } from '../report/progress';

/** `pg_dump` refuses to dump a server of a newer major version: find out before a backup is due. */
export async function checkPgDumpVersion(runner: Runner, ctx: CheckContext, databaseUrl: string | undefined): Promise<Finding[]> {
  if (!databaseUrl) return [notChecked('tools.pg_dump', 'no database URL configured', 'pass --database-url, set DATABASE_URL, or set postgres.urlEnv in lifeline.yml')];
  let client = '';
  try {
    const result = await runText(runner, { tool: 'pg_dump', args: ['--version'], cwd: ctx.cwd });
    if (result.exitCode === 0) client = /(\d+)(?:\.(\d+))?/.exec(result.stdout)?.[0] ?? '';
  } catch {
    // Not installed or does not run: the same finding as a failed --version.
  }
  if (!client) {
    return [
      fail({
        check: 'tools.pg_dump',
        message: 'pg_dump is not installed (or does not run)',
        fix: "install the PostgreSQL client of the server's major version (Debian: postgresql-client-15) or set postgres.binDir",
      }),
    ];
  }
  let serverNum: number;
  try {
    const rows = await queryOnce<{ v: string }>(runner, parsePgUrl(databaseUrl), "SELECT current_setting('server_version_num') AS v");
    serverNum = Number(rows[0]?.v);
  } catch (error) {
    return [
      fail({
        check: 'tools.pg_dump',
        message: `cannot ask the database server for its version: ${(error as Error).message.split('\n')[0]}`,
        fix: 'check the database URL and that the server accepts connections from here',
      }),
    ];
  }
  const serverMajor = Math.floor(serverNum / 10000);
  const clientMajor = Number(client.split('.')[0]);
  if (clientMajor < serverMajor) {
    return [
      fail({
        check: 'tools.pg_dump',
        message: `pg_dump ${client} is older than the server's major version ${serverMajor}: it refuses to dump it`,
        fix: `install postgresql-client-${serverMajor} (or newer) and point postgres.binDir at it`,
      }),
    ];
  }
  return [pass({ check: 'tools.pg_dump', message: `pg_dump ${client} can dump server major ${serverMajor}` })];
}

export interface PhysicalBackupSettings {
  stanza: string;
  configFile?: string;
}

/** `pgbackrest check` proves the stanza, the repository and WAL archiving all work. */
export async function checkPgBackRest(runner: Runner, ctx: CheckContext, physical: PhysicalBackupSettings | undefined): Promise<Finding[]> {
  if (!physical) return [pass({ check: 'tools.pgbackrest', message: 'physical backups are not configured (postgres.physical): nothing to check' })];
  const args = [...(physical.configFile ? [`--config=${physical.configFile}`] : []), `--stanza=${physical.stanza}`, 'check'];
  let result;
  try {
    result = await runText(runner, { tool: 'pgbackrest', args, cwd: ctx.cwd });
  } catch {
    return [fail({ check: 'tools.pgbackrest', message: 'pgbackrest is not installed', fix: 'install pgbackrest (Debian: apt-get install pgbackrest)' })];
  }
  if (result.exitCode !== 0) {
    const output = `${result.stdout}\n${result.stderr}`;
    return [
      fail({
        check: 'tools.pgbackrest',
        file: physical.configFile ? displayPath(ctx, physical.configFile) : undefined,
        message: `pgbackrest check for stanza ${physical.stanza} failed: ${lastLines(
          output
            .split('\n')
            .filter((l) => /ERROR|WARN/.test(l))
            .join('\n') || output,
          2,
        )}`,
        fix: `run pgbackrest --stanza=${physical.stanza} check as the postgres user; create the stanza (stanza-create) and set archive_command if it is missing`,
      }),
    ];
  }
  return [pass({ check: 'tools.pgbackrest', message: `pgbackrest check passes for stanza ${physical.stanza}` })];
}

/** The catalog can be written and has room for at least twice the newest backup. */
export async function checkCatalogSpace(ctx: CheckContext, store: string, environment: string): Promise<Finding[]> {
  const where = displayPath(ctx, store);
  let existing = store;
  while (!existsSync(existing) && dirname(existing) !== existing) existing = dirname(existing);
  try {
    accessSync(existing, constants.W_OK);
  } catch {
    return [
      fail({
        check: 'backups.catalog',
        message: `the catalog ${where} is not writable (${displayPath(ctx, existing)})`,
        fix: "fix the directory's owner or permissions, or point --store / store: at a writable disk",
      }),
    ];
  }
  const findings: Finding[] = [
    pass({
      check: 'backups.catalog',
      message: existing === store ? `the catalog ${where} is writable` : `the catalog ${where} will be created under ${displayPath(ctx, existing)}, which is writable`,
    }),
  ];
  const shared = sharedStoreProblem(store, environment);
  findings.push(
    shared
      ? fail({ check: 'backups.catalog-private', file: where, message: shared.message, fix: shared.fix })
      : pass({ check: 'backups.catalog-private', message: `the catalog ${where} is private to its owner` }),
  );

  const stats = statfsSync(existing);
  const freeBytes = stats.bavail * stats.bsize;
  let lastBytes: number | undefined;
  let lastId: string | undefined;
  try {
    const [newest] = await new Catalog(store).list<EntryMetadata & { files?: Record<string, { bytes?: unknown } | undefined> }>(environment, 'backups', 'backup.json');
    if (newest) {
      lastId = newest.id;
      lastBytes = Object.values(newest.metadata.files ?? {}).reduce((sum, f) => sum + (typeof f?.bytes === 'number' && f.bytes > 0 ? f.bytes : 0), 0);
    }
  } catch (error) {
    findings.push(
      warn({
        check: 'backups.free-space',
        file: join(where, environment, 'backups'),
        message: `the newest backup's size could not be read: ${(error as Error).message}`,
        fix: 'run lifeline backups to inspect the catalog',
      }),
    );
    return findings;
  }
  if (lastBytes === undefined) {
    findings.push(pass({ check: 'backups.free-space', message: `${formatBytes(freeBytes, { binary: true })} free; no backup yet to size against` }));
  } else if (freeBytes < 2 * lastBytes) {
    findings.push(
      fail({
        check: 'backups.free-space',
        message: `${formatBytes(freeBytes, { binary: true })} free for the catalog, but the last backup (${lastId}) took ${formatBytes(lastBytes, { binary: true })}: the next one needs room for twice that`,
        fix: 'free space or prune old backups (lifeline prune), or move the store to a larger disk',
      }),
    );
  } else {
    findings.push(pass({ check: 'backups.free-space', message: `${formatBytes(freeBytes, { binary: true })} free, at least twice the last backup (${formatBytes(lastBytes, { binary: true })})` }));
  }
  return findings;
}
