import { failure, usageError } from '../errors';
import type { Logger } from '../logger';
import { LocalRunner, runChecked, type Runner } from '../runner/runner';
import type { EnvironmentSettings, PostgresSettings } from '../settings/resolve';

export type PhysicalSettings = NonNullable<PostgresSettings['physical']>;

/** pgBackRest must run as the OS user that owns the cluster's files (it reads the data dir, and archive-push runs as it). */
const PGBACKREST_OS_USER = 'postgres';

export function pgbackrestRunner(): Runner {
  return new LocalRunner({ asUser: PGBACKREST_OS_USER });
}

export function requirePhysical(settings: EnvironmentSettings): PhysicalSettings {
  const physical = settings.postgres.physical;
  if (!physical) {
    throw usageError(
      'NO_PHYSICAL_BACKUPS',
      `environment ${settings.name} has no physical backups configured`,
      `add postgres.physical.stanza (and configFile, repoPath) for ${settings.name} in lifeline.yml; pgBackRest must already archive WAL for that stanza`,
    );
  }
  return physical;
}

/** The options every pgBackRest call takes: the config file, the stanza and the repository. */
export function pgbackrestBaseArgs(physical: PhysicalSettings): string[] {
  return [...(physical.configFile ? [`--config=${physical.configFile}`] : []), `--stanza=${physical.stanza}`, ...(physical.repoPath ? [`--repo1-path=${physical.repoPath}`] : [])];
}

export async function runPgBackRest(physical: PhysicalSettings, command: string, extraArgs: string[], what: string, runner: Runner = pgbackrestRunner()): Promise<string> {
  return runChecked(runner, { tool: 'pgbackrest', args: [...pgbackrestBaseArgs(physical), ...extraArgs, command] }, what);
}

export interface PhysicalBackupInfo {
  label: string;
  type: 'full' | 'diff' | 'incr';
  startedAt: string;
  stoppedAt: string;
  /** Size of the database at backup time, and of what the repository stored for this backup. */
  databaseBytes: number;
  repositoryBytes: number;
  walStart?: string;
  walStop?: string;
}

export interface StanzaInfo {
  stanza: string;
  status: { code: number; message: string };
  backups: PhysicalBackupInfo[];
  /** Oldest and newest WAL segment in the archive. */
  archive?: { min?: string; max?: string };
}

interface RawInfo {
  name: string;
  status: { code: number; message: string };
  backup?: Array<{
    label: string;
    type: 'full' | 'diff' | 'incr';
    timestamp: { start: number; stop: number };
    info?: { size?: number; repository?: { delta?: number; size?: number } };
    archive?: { start?: string; stop?: string };
  }>;
  archive?: Array<{ min?: string; max?: string }>;
}

/** `pgbackrest info --output=json` for the stanza, oldest backup first. */
export async function stanzaInfo(physical: PhysicalSettings, runner?: Runner): Promise<StanzaInfo> {
  const out = await runPgBackRest(physical, 'info', ['--output=json'], 'pgbackrest info', runner);
  let parsed: RawInfo[];
  try {
    parsed = JSON.parse(out) as RawInfo[];
  } catch (error) {
    throw failure('PGBACKREST_OUTPUT', 'could not read the output of pgbackrest info', { cause: error });
  }
  const raw = parsed.find((s) => s.name === physical.stanza);
  if (!raw) throw failure('PGBACKREST_NO_STANZA', `pgBackRest knows no stanza "${physical.stanza}"`, { fix: 'run pgbackrest stanza-create for it, or fix postgres.physical.stanza' });
  const iso = (seconds: number) => new Date(seconds * 1000).toISOString();
  const archives = raw.archive ?? [];
  return {
    stanza: raw.name,
    status: raw.status,
    backups: (raw.backup ?? []).map((b) => ({
      label: b.label,
      type: b.type,
      startedAt: iso(b.timestamp.start),
      stoppedAt: iso(b.timestamp.stop),
      databaseBytes: b.info?.size ?? 0,
      repositoryBytes: b.info?.repository?.delta ?? b.info?.repository?.size ?? 0,
      walStart: b.archive?.start,
      walStop: b.archive?.stop,
    })),
    archive: archives.length ? { min: archives[0]?.min, max: archives[archives.length - 1]?.max } : undefined,
  };
}

/** `pgbackrest check`: the archive_command works and the repository is reachable (used by preflight). */
export async function checkPhysicalBackups(settings: EnvironmentSettings, logger: Logger): Promise<void> {
  const physical = requirePhysical(settings);
  await logger.group(`pgbackrest check (stanza ${physical.stanza})`, () => runPgBackRest(physical, 'check', [], 'pgbackrest check'));
}

/**
 * A physical base backup through pgBackRest (`lifeline backup --physical`). WAL archiving, which
 * makes point-in-time recovery possible between base backups, is pgBackRest's archive_command's job.
 */
export async function runPhysicalBackup(settings: EnvironmentSettings, logger: Logger, options: { type?: PhysicalSettings['type'] } = {}): Promise<PhysicalBackupInfo> {
  const physical = requirePhysical(settings);
  const type = options.type ?? physical.type;
  const before = new Set((await stanzaInfo(physical)).backups.map((b) => b.label));
  await logger.group(`pgbackrest backup --type=${type} (stanza ${physical.stanza})`, () => runPgBackRest(physical, 'backup', [`--type=${type}`], `pgbackrest ${type} backup`));
  const created = (await stanzaInfo(physical)).backups.filter((b) => !before.has(b.label));
  const backup = created[created.length - 1];
  if (!backup) throw failure('PGBACKREST_NO_NEW_BACKUP', 'pgbackrest backup exited 0 but lists no new backup', { fix: 'run pgbackrest info and inspect the repository' });
  logger.info(`physical backup ${backup.label} (${backup.type}) done`);
  return backup;
}

/**
 * A recovery target time with an explicit zone (without one, the server's zone would silently
 * decide): date, time (seconds and up to six fraction digits optional) and every offset spelling
 * PostgreSQL accepts: `Z`, `+00`, `+0000`, `+00:00`, `-05`, `+05:30`.
 */
const TARGET_TIME = /^(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,6}))?)?\s*(?:(Z)|([+-])(\d{2})(?::?(\d{2}))?)$/i;

const TARGET_TIME_FORMAT = 'write it as YYYY-MM-DD HH:MM[:SS[.ffffff]] with a zone: Z, +HH, +HHMM or +HH:MM (e.g. 2026-11-21T23:59:00Z or "2026-11-21 23:59:00.123456+05:30")';

/**
 * Checks a point-in-time target before anything starts and normalises it to UTC
 * (`YYYY-MM-DD HH:MM:SS[.ffffff]+00`), which pgBackRest and PostgreSQL both read: every offset
 * spelling of one instant gives the same text. Impossible dates and times (2026-02-30, 25:00) are
 * usage errors, never rolled over into another day.
 */
export function parseRecoveryTargetTime(value: string): { text: string; at: Date } {
  const input = value.trim();
  const bad = (why: string) => usageError('BAD_PITR_TIME', `--pitr "${value}" ${why}`, TARGET_TIME_FORMAT);
  const m = TARGET_TIME.exec(input);
  if (!m) throw bad('is not a timestamp with a time zone');
  const [year, month, day, hour, minute] = [m[1], m[2], m[3], m[4], m[5]].map(Number) as [number, number, number, number, number];
  const second = Number(m[6] ?? '0');
  const fraction = m[7] ?? '';
  if (month < 1 || month > 12) throw bad(`has no month ${m[2]}`);
  const daysInMonth = utcDate(year, month, 0, 0, 0, 0).getUTCDate();
  if (day < 1 || day > daysInMonth) throw bad(`is not a date: ${m[1]}-${m[2]} has ${daysInMonth} days`);
  if (hour > 23 || minute > 59 || second > 59) throw bad(`is not a time of day: ${m[4]}:${m[5]}${m[6] ? `:${m[6]}` : ''} (hours 00-23, minutes and seconds 00-59)`);
  let offsetMinutes = 0;
  if (!m[8]) {
    const offsetHours = Number(m[10]);
    const offsetMins = Number(m[11] ?? '0');
    if (offsetHours > 15 || offsetMins > 59) throw bad(`has an impossible offset ${m[9]}${m[10]}${m[11] ? `:${m[11]}` : ''}`);
    offsetMinutes = (m[9] === '-' ? -1 : 1) * (offsetHours * 60 + offsetMins);
  }
  // Whole seconds are exact; the fraction is carried as text so microseconds survive.
  const utc = new Date(utcDate(year, month - 1, day, hour, minute, second).getTime() - offsetMinutes * 60_000);
  const iso = utc.toISOString();
  const text = `${iso.slice(0, 10)} ${iso.slice(11, 19)}${fraction ? `.${fraction}` : ''}+00`;
  const at = new Date(utc.getTime() + Number(fraction.padEnd(3, '0').slice(0, 3)));
  return { text, at };
}

/** Date.UTC without its mapping of years 0-99 onto 1900-1999. */
function utcDate(year: number, monthIndex: number, day: number, hour: number, minute: number, second: number): Date {
  const date = new Date(0);
  date.setUTCFullYear(year, monthIndex, day);
  date.setUTCHours(hour, minute, second, 0);
  return date;
}

/**
 * `pgbackrest restore --type=time` into an empty data directory owned by the postgres user.
 * The restored cluster replays archived WAL up to the target when it starts, then promotes.
 */
export async function restorePhysicalToTime(physical: PhysicalSettings, dataDir: string, targetTime: string, backupLabel: string, runner?: Runner): Promise<void> {
  const args = [`--pg1-path=${dataDir}`, `--set=${backupLabel}`, '--type=time', `--target=${targetTime}`, '--target-action=promote'];
  await runPgBackRest(physical, 'restore', args, 'pgbackrest restore', runner);
}
