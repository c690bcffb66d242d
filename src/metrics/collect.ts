import { lstat, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { Catalog } from '../catalog/store';
import { listDrillReports } from '../drill/report';
import { listBackups, type BackupEntry } from '../backup/metadata';
import type { EnvironmentSettings } from '../settings/resolve';
import type { MetricFamily, Sample } from './exposition';

/** What one environment's catalog says, at `now`. */
export interface EnvironmentFacts {
  settings: EnvironmentSettings;
  backups: BackupEntry[];
  drills: Awaited<ReturnType<typeof listDrillReports>>;
  runs: { at: string; command: string; outcome: string }[];
  catalogBytes: number;
  /** The live server's WAL archive lag, where physical backups are configured and it could be read. */
  walArchiveLagSeconds?: number | null;
}

export async function environmentFacts(catalog: Catalog, settings: EnvironmentSettings, runsLog: string): Promise<Omit<EnvironmentFacts, 'walArchiveLagSeconds'>> {
  const [backups, drills, runs, catalogBytes] = await Promise.all([
    listBackups(catalog, settings.name),
    listDrillReports(catalog, settings.name),
    catalog.readLog<{ at: string; command: string; outcome: string }>(settings.name, runsLog).catch(() => []),
    treeBytes(catalog.envDir(settings.name)),
  ]);
  return { settings, backups, drills, runs, catalogBytes };
}

/** Bytes of the regular files under a directory; symlinks are neither followed nor counted. */
async function treeBytes(dir: string): Promise<number> {
  let total = 0;
  const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
  for (const entry of entries) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) total += await treeBytes(path);
    else if (entry.isFile()) total += (await lstat(path).catch(() => ({ size: 0 }))).size;
  }
  return total;
}

const seconds = (iso: string) => Date.parse(iso) / 1000;

/** Every family, for every environment, in base units with the `environment` (and `database`) labels. */
export function metricFamilies(environments: EnvironmentFacts[], now: Date): MetricFamily[] {
  const family = (name: string, help: string): MetricFamily => ({ name, help, type: 'gauge', samples: [] });
  const f = {
    backupLast: family('lifeline_backup_last_timestamp_seconds', 'When the newest backup of the database was taken (pre-restore backups excluded).'),
    backupAge: family('lifeline_backup_age_seconds', 'Age of the newest backup of the database.'),
    backupSize: family('lifeline_backup_last_size_bytes', 'Stored size of the newest backup of the database (all its files).'),
    verifiedLast: family('lifeline_backup_last_verified_timestamp_seconds', 'When the newest backup that passed verification was taken.'),
    verifiedAge: family('lifeline_backup_verified_age_seconds', 'Age of the newest backup that passed verification: compare with lifeline_rpo_target_seconds.'),
    backupCount: family('lifeline_backup_entries', 'Backups in the catalog (pre-restore backups included).'),
    rpoTarget: family('lifeline_rpo_target_seconds', "The environment's recovery point objective."),
    rtoTarget: family('lifeline_rto_target_seconds', "The environment's recovery time objective."),
    drillLast: family('lifeline_drill_last_timestamp_seconds', 'When the newest restore drill ran.'),
    drillPassed: family('lifeline_drill_last_passed', 'Whether the newest restore drill passed (1) or failed (0).'),
    drillPassing: family('lifeline_drill_last_passed_timestamp_seconds', 'When the newest passing restore drill ran.'),
    drillMaxAge: family('lifeline_drill_max_age_seconds', 'How old the newest passing drill may be before the release gate refuses deploys.'),
    drillRto: family('lifeline_drill_rto_seconds', 'RTO measured by the newest restore drill.'),
    drillRpo: family('lifeline_drill_rpo_seconds', 'RPO measured by the newest restore drill.'),
    gatePassed: family('lifeline_gate_last_passed', 'Whether the newest release gate run passed (1) or not (0).'),
    gateLast: family('lifeline_gate_last_timestamp_seconds', 'When the release gate last ran.'),
    syncLast: family('lifeline_sync_last_timestamp_seconds', 'When the last off-host sync ran.'),
    syncSucceeded: family('lifeline_sync_last_succeeded', 'Whether the last off-host sync succeeded (1) or not (0).'),
    catalogSize: family('lifeline_catalog_size_bytes', "Bytes of the environment's catalog on this host."),
    walLag: family('lifeline_wal_archive_lag_seconds', "Time since the live server's last archived WAL segment (point-in-time recovery reaches this far)."),
  };
  const push = (target: MetricFamily, labels: Record<string, string>, value: number | null | undefined) => {
    if (value === null || value === undefined || !Number.isFinite(value)) return;
    target.samples.push({ labels, value } satisfies Sample);
  };
  const nowSeconds = now.getTime() / 1000;
  for (const env of environments) {
    const environment = env.settings.name;
    const own = env.backups.filter((b) => b.metadata.label !== 'pre-restore');
    const databases = [...new Set(own.map((b) => b.metadata.database))].sort();
    for (const database of databases) {
      const labels = { environment, database };
      const ofDatabase = own.filter((b) => b.metadata.database === database).sort((a, b) => b.metadata.createdAt.localeCompare(a.metadata.createdAt));
      const newest = ofDatabase[0]!;
      push(f.backupLast, labels, seconds(newest.metadata.createdAt));
      push(f.backupAge, labels, Math.max(0, nowSeconds - seconds(newest.metadata.createdAt)));
      const files = newest.metadata.files;
      push(f.backupSize, labels, (files.postgres?.bytes ?? 0) + (files.globals?.bytes ?? 0) + (files.redis?.bytes ?? 0));
      const verified = ofDatabase.find((b) => b.metadata.verified?.ok === true);
      if (verified) {
        push(f.verifiedLast, labels, seconds(verified.metadata.createdAt));
        push(f.verifiedAge, labels, Math.max(0, nowSeconds - seconds(verified.metadata.createdAt)));
      }
    }
    const labels = { environment };
    push(f.backupCount, labels, env.backups.length);
    push(f.rpoTarget, labels, env.settings.rpoSeconds);
    push(f.rtoTarget, labels, env.settings.rtoSeconds);
    push(f.drillMaxAge, labels, env.settings.drill.maxAgeSeconds);
    // A drill dated in the future is no evidence of anything: it is not "the newest".
    const drills = env.drills
      .map((d) => d.metadata)
      .filter((d) => seconds(d.createdAt) <= nowSeconds + 300)
      .sort((a, b) => b.createdAt.localeCompare(a.createdAt));
    const drill = drills[0];
    if (drill) {
      push(f.drillLast, labels, seconds(drill.createdAt));
      push(f.drillPassed, labels, drill.passed ? 1 : 0);
      push(f.drillRto, labels, drill.rto?.seconds);
      push(f.drillRpo, labels, drill.rpo?.seconds);
    }
    const passing = drills.find((d) => d.passed);
    if (passing) push(f.drillPassing, labels, seconds(passing.createdAt));
    const lastOf = (command: string) => [...env.runs].reverse().find((r) => r.command === command);
    const gate = lastOf('gate');
    if (gate) {
      push(f.gateLast, labels, seconds(gate.at));
      push(f.gatePassed, labels, gate.outcome === 'succeeded' ? 1 : 0);
    }
    const sync = lastOf('sync');
    if (sync) {
      push(f.syncLast, labels, seconds(sync.at));
      push(f.syncSucceeded, labels, sync.outcome === 'succeeded' ? 1 : 0);
    }
    push(f.catalogSize, labels, env.catalogBytes);
    push(f.walLag, labels, env.walArchiveLagSeconds);
  }
  return Object.values(f);
}
