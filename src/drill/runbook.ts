import { renderMarkdownTable, renderTextTable } from '../report/table';
import { formatDuration } from '../settings/duration';
import type { EnvironmentSettings } from '../settings/resolve';
import { composeCommandText } from '../runner/compose';

export type RestoreMode = 'logical' | 'pitr';

/** The step ids the drill knows how to carry out; every other step is one only a real restore performs. */
export type RunbookStepId = 'stop-writes' | 'select-backup' | 'verify-backup' | 'restore' | 'check-data' | 'check-indexes' | 'restore-redis' | 'smoke-queries' | 'start-app' | 'switch-over';

export interface RunbookStep {
  id: RunbookStepId;
  title: string;
  /** What the operator runs. */
  command: string;
  /** How the operator knows the step worked. */
  verification: string;
  owner: string;
  /** Why a drill does not perform this step; absent when the drill performs it. */
  drillSkips?: string;
}

export interface RunbookEnvironment {
  name: string;
  priority: number;
  owner: string;
  rtoSeconds?: number;
  rpoSeconds?: number;
  /** Restore from the newest logical backup: the usual path. */
  steps: RunbookStep[];
  /** Restore to a point in time through pgBackRest, when the environment has physical backups. */
  pitrSteps?: RunbookStep[];
  /** The Compose stack the commands act on: project name, files, and where the database and Redis tools run. */
  stack: string;
}

const UNOWNED = 'on-call engineer (set owner: in lifeline.yml)';

/**
 * The ordered restore steps of one environment: the single list that `lifeline runbook` prints and
 * that `lifeline drill` walks, so every drill exercises the runbook.
 */
export interface RunbookOptions {
  /** How file paths appear in commands (the runbook in docs/ shows them relative to the repository). */
  displayPath?: (path: string) => string;
}

export function restoreSteps(settings: EnvironmentSettings, mode: RestoreMode = 'logical', options: RunbookOptions = {}): RunbookStep[] {
  const show = options.displayPath ?? ((path: string) => path);
  const env = settings.name;
  const owner = settings.owner ?? UNOWNED;
  const flags = `--env ${env}`;
  // The configured Compose CLI, files and project: the commands work in the stack's own layout.
  const compose = composeCommandText(settings.compose.command, settings.compose.files.map(show), settings.compose.projectName);
  // With postgres.service the client tools are in the db container, not on this host: psql runs there.
  const pgService = settings.postgres.service;
  const psql = pgService ? `${compose} exec -T ${pgService} psql` : 'psql';
  const api = settings.compose.services.api;
  const physical = settings.postgres.physical;
  const pgbr = physical ? `pgbackrest${physical.configFile ? ` --config=${show(physical.configFile)}` : ''} --stanza=${physical.stanza}` : 'pgbackrest';
  const rpo = settings.rpoSeconds !== undefined ? formatDuration(settings.rpoSeconds) : 'the RPO target';
  const smoke = settings.drill.smokeSql ? show(settings.drill.smokeSql) : undefined;
  const appCheck = settings.drill.appCheck;
  const steps: RunbookStep[] = [
    {
      id: 'stop-writes',
      title: 'Stop writes to the damaged database',
      command: `${compose} stop ${api.name} ${settings.compose.services.worker.name}`,
      verification: 'no client connections remain: SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()',
      owner,
      drillSkips: 'a drill never touches the live stack',
    },
  ];
  if (mode === 'pitr') {
    steps.push(
      {
        id: 'select-backup',
        title: 'Choose the recovery time and the base backup before it',
        command: `${pgbr} info`,
        verification: 'status ok; a full or differential backup finished before the chosen time; WAL archived past it',
        owner,
      },
      {
        id: 'restore',
        title: 'Restore to the chosen time and let PostgreSQL replay WAL',
        command: `${pgbr} --pg1-path=<new data dir> --type=time --target="<time>" --target-action=promote restore, then pg_ctl -D <new data dir> start`,
        verification: 'pgbackrest exits 0; SELECT pg_is_in_recovery() returns false; pg_last_xact_replay_timestamp() is at or before the chosen time',
        owner,
      },
    );
  } else {
    steps.push(
      {
        id: 'select-backup',
        title: 'Choose the backup to restore',
        command: `lifeline backups ${flags}`,
        verification: `the newest verified backup is younger than ${rpo}, and no newer backup exists that would lose less data`,
        owner,
      },
      {
        id: 'verify-backup',
        title: "Verify the backup's checksums",
        command: `lifeline verify <backup-id> ${flags}`,
        verification: 'every file matches SHA256SUMS and backup.json',
        owner,
      },
      {
        id: 'restore',
        title: 'Restore into the database',
        // The environment form: a URL with its password on the command line is readable in ps.
        command: `TARGET_URL=<database-url> lifeline restore ${flags} --backup <backup-id> --target-env TARGET_URL --confirm <database>`,
        verification: 'pg_restore exits 0 (the restore checks a scratch copy before swapping it in)',
        owner,
      },
      {
        id: 'check-data',
        title: 'Check the restored data against the backup',
        command: '(part of lifeline restore; lifeline drill repeats it on an isolated copy)',
        verification: 'exact row count of every table, the schema fingerprint and the migration head equal backup.json',
        owner,
      },
    );
  }
  steps.push({
    id: 'check-indexes',
    title: 'Check every B-tree index (amcheck)',
    command: `${psql} "$DATABASE_URL" -c 'CREATE EXTENSION IF NOT EXISTS amcheck' -c 'SELECT bt_index_check(c.oid) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam WHERE a.amname = $$btree$$ AND i.indisvalid'`,
    verification: 'no index reports corruption',
    owner,
  });
  // Redis holds runtime data (cache, rate limits, realtime state) that backups snapshot beside the dump.
  if (settings.redis && mode === 'logical') {
    const service = settings.redis.service;
    steps.push({
      id: 'restore-redis',
      title: "Restore Redis from the backup's snapshot",
      command: service
        ? `lifeline redis-restore ${flags} --backup <backup-id> --confirm ${service}`
        : `lifeline redis-restore ${flags} --backup <backup-id> --confirm <redis service> (set redis.service first)`,
      verification: "redis-cli PING answers PONG and the key count equals the snapshot's (keys with a TTL may have expired)",
      owner,
    });
  }
  steps.push(
    {
      id: 'smoke-queries',
      title: "Run the operator's smoke queries",
      // Inside a container the file is read from stdin: the container cannot see this host's files.
      command: pgService ? `${psql} "$DATABASE_URL" < ${smoke ?? '<smoke.sql>'}` : `psql "$DATABASE_URL" -f ${smoke ?? '<smoke.sql>'}`,
      verification: 'every query returns the value on its -- expect: line (a drill compares them for you)',
      owner,
      ...(smoke ? {} : { drillSkips: 'no drill.smokeSql configured (pass --smoke-sql to the drill)' }),
    },
    {
      id: 'start-app',
      title: 'Start the application on the restored data',
      command: appCheck
        ? `docker run -d --network host -e ${appCheck.databaseUrlEnv}=<restored database URL> ${appCheck.image ?? `<the ${api.name} image of the running release>`}${appCheck.command ? ` ${appCheck.command.join(' ')}` : ''}`
        : `${compose} up -d ${api.name}`,
      verification: appCheck
        ? `${appCheck.healthUrl} answers 2xx within ${formatDuration(appCheck.timeoutSeconds)}`
        : api.healthUrl
          ? `${api.healthUrl} answers 2xx`
          : 'the api service reports healthy',
      owner,
      ...(appCheck && mode === 'logical'
        ? {}
        : { drillSkips: appCheck ? 'the point-in-time cluster listens on a Unix socket only, which the application container cannot reach' : 'no drill.appCheck configured' }),
    },
    {
      id: 'switch-over',
      title: 'Reopen writes and tell the restaurants',
      command: `${compose} up -d`,
      verification: 'the health endpoints answer and new writes arrive in the restored database',
      owner,
      drillSkips: 'a drill never touches the live stack',
    },
  );
  return steps;
}

/** Every environment's restore steps, in restore priority order (then by name). */
export function buildRunbook(environments: EnvironmentSettings[], options: RunbookOptions = {}): RunbookEnvironment[] {
  return [...environments]
    .sort((a, b) => a.restorePriority - b.restorePriority || a.name.localeCompare(b.name))
    .map((s) => ({
      name: s.name,
      priority: s.restorePriority,
      owner: s.owner ?? UNOWNED,
      rtoSeconds: s.rtoSeconds,
      rpoSeconds: s.rpoSeconds,
      steps: restoreSteps(s, 'logical', options),
      stack: describeStack(s, options),
      ...(s.postgres.physical ? { pitrSteps: restoreSteps(s, 'pitr', options) } : {}),
    }));
}

function describeStack(s: EnvironmentSettings, options: RunbookOptions): string {
  const show = options.displayPath ?? ((path: string) => path);
  const project = s.compose.projectName ? `Compose project ${s.compose.projectName}` : 'Compose project: the default (the directory name of the first Compose file); set compose.projectName to pin it';
  const files = s.compose.files.length ? `files ${s.compose.files.map(show).join(', ')}` : 'the Compose file of the current directory';
  const tools = [
    s.postgres.service ? `PostgreSQL tools run in service ${s.postgres.service}` : 'PostgreSQL tools run on this host',
    ...(s.redis ? [s.redis.service ? `Redis tools in service ${s.redis.service}` : 'Redis tools on this host'] : []),
  ].join('; ');
  return `${project}, ${files}; ${tools}`;
}

const target = (seconds?: number) => (seconds === undefined ? 'not set' : formatDuration(seconds));

function priorityTable(runbook: RunbookEnvironment[]) {
  return { headers: ['order', 'environment', 'owner', 'RTO target', 'RPO target'], rows: runbook.map((e, i) => [String(i + 1), e.name, e.owner, target(e.rtoSeconds), target(e.rpoSeconds)]) };
}

function stepsTable(steps: RunbookStep[]) {
  return {
    headers: ['#', 'step', 'command', 'verification', 'owner', 'drill'],
    rows: steps.map((s, i) => [String(i + 1), s.title, s.command, s.verification, s.owner, s.drillSkips ? `skipped: ${s.drillSkips}` : 'exercised']),
  };
}

/** The restore order lists every environment; `only` limits the step lists to some of them. */
export function renderRunbookMarkdown(runbook: RunbookEnvironment[], source: string, only?: string[]): string {
  const lines = [
    '# Restore runbook',
    '',
    `Generated by \`lifeline runbook\` from ${source}. Do not edit by hand: change lifeline.yml and regenerate.`,
    '`lifeline drill` walks the same steps; the last column says which ones a drill exercises.',
    '',
    '## Restore order',
    '',
    renderMarkdownTable(priorityTable(runbook)),
  ];
  for (const env of runbook.filter((e) => !only || only.includes(e.name))) {
    lines.push('', `## ${env.name}`, '', `Stack: ${env.stack}.`, '', `### From the newest backup (\`lifeline drill --env ${env.name}\`)`, '', renderMarkdownTable(stepsTable(env.steps)));
    if (env.pitrSteps) lines.push('', `### To a point in time through pgBackRest (\`lifeline drill --env ${env.name} --pitr <time>\`)`, '', renderMarkdownTable(stepsTable(env.pitrSteps)));
  }
  lines.push(
    '',
    '## Smoke query files',
    '',
    'Blocks of `-- expect: <value>` (optionally after `-- name: <text>`) followed by one query. The query runs against the restored',
    'database; its single value (first column of the first row) must equal the expected text exactly. `NULL` stands for a null.',
    '',
    '```sql',
    '-- name: no order line has a non-positive quantity',
    '-- expect: 0',
    'SELECT count(*) FROM order_items WHERE quantity <= 0',
    '```',
  );
  return `${lines.join('\n')}\n`;
}

export function renderRunbookText(runbook: RunbookEnvironment[], only?: string[]): string {
  const lines = ['Restore order:', renderTextTable(priorityTable(runbook))];
  for (const env of runbook.filter((e) => !only || only.includes(e.name))) {
    const paths: Array<[string, RunbookStep[]]> = [[`${env.name} (owner: ${env.owner}): restore from the newest backup\n  stack: ${env.stack}`, env.steps]];
    if (env.pitrSteps) paths.push([`${env.name}: restore to a point in time (pgBackRest)`, env.pitrSteps]);
    for (const [heading, steps] of paths) {
      lines.push('', heading);
      steps.forEach((s, i) => {
        lines.push(`  ${i + 1}. ${s.title}${s.drillSkips ? `   [drill skips: ${s.drillSkips}]` : '   [drill exercises]'}`);
        lines.push(`     run:   ${s.command}`);
        lines.push(`     check: ${s.verification}`);
        lines.push(`     owner: ${s.owner}`);
      });
    }
  }
  return lines.join('\n');
}
