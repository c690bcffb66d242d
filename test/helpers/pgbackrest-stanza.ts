import { chownSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startThrowawayCluster, type ThrowawayCluster } from '../../src/postgres/cluster';
import { runPgBackRest, type PhysicalSettings } from '../../src/postgres/pgbackrest';

function chownToPostgres(path: string): void {
  if (process.getuid?.() !== 0) return;
  const [, , uid, gid] = readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .find((l) => l.startsWith('postgres:'))!
    .split(':');
  chownSync(path, Number(uid), Number(gid));
}

export interface ArchivingCluster {
  cluster: ThrowawayCluster;
  physical: PhysicalSettings;
  dir: string;
  stop(): Promise<void>;
}

/**
 * A real cluster whose WAL pgBackRest archives into a private repository, with the stanza created
 * and checked: the production set-up that `lifeline drill --pitr` restores from, in miniature.
 */
export async function startArchivingCluster(stanza = 'lifeline'): Promise<ArchivingCluster> {
  const dir = mkdtempSync(join(tmpdir(), 'lifeline-pgbr-'));
  chownToPostgres(dir);
  for (const sub of ['repo', 'log', 'lock']) {
    mkdirSync(join(dir, sub), { mode: 0o750 });
    chownToPostgres(join(dir, sub));
  }
  const configFile = join(dir, 'pgbackrest.conf');
  let cluster: ThrowawayCluster | undefined;
  try {
    cluster = await startThrowawayCluster({
      settings: {
        wal_level: 'replica',
        archive_mode: 'on',
        archive_command: `'pgbackrest --config=${configFile} --stanza=${stanza} archive-push %p'`,
        max_wal_senders: '3',
      },
    });
    writeFileSync(
      configFile,
      [
        '[global]',
        `repo1-path=${join(dir, 'repo')}`,
        `log-path=${join(dir, 'log')}`,
        `lock-path=${join(dir, 'lock')}`,
        'log-level-console=warn',
        'start-fast=y',
        'compress-type=zst',
        'repo1-retention-full=2',
        `[${stanza}]`,
        `pg1-path=${cluster.dataDir}`,
        `pg1-port=${cluster.port}`,
        `pg1-socket-path=${cluster.socketDir}`,
        '',
      ].join('\n'),
      { mode: 0o640 },
    );
    chownToPostgres(configFile);
    const physical: PhysicalSettings = { stanza, configFile, type: 'full' };
    await runPgBackRest(physical, 'stanza-create', [], 'pgbackrest stanza-create');
    await runPgBackRest(physical, 'check', [], 'pgbackrest check');
    const started = cluster;
    return {
      cluster: started,
      physical,
      dir,
      async stop() {
        await started.stop();
        rmSync(dir, { recursive: true, force: true });
      },
    };
  } catch (error) {
    await cluster?.stop();
    rmSync(dir, { recursive: true, force: true });
    throw error;
  }
}
