import { startProgress } from '../report/progress';
import { AGE_IDENTITY_INPUT, loadIdentity } from '../crypto/age';
import { writeFileSync } from 'node:fs';
import { relative, resolve } from 'node:path';
import { Catalog } from '../catalog/store';
import { runDrill } from '../drill/drill';
import { loadHistory, recordedRunning } from '../deploy/history';
import { evaluateGate, gatherGateEvidence, renderGateMarkdown, renderGateText } from '../drill/gate';
import { DRILL_BUNDLE_FILE, DRILL_REPORT_PAYLOAD_TYPE, drillListing, drillsTable, listDrillReports, renderDrillText, type DrillReportSigner } from '../drill/report';
import { signDssePayload } from '../manifest/create';
import { buildRunbook, renderRunbookMarkdown, renderRunbookText } from '../drill/runbook';
import { listBackups } from '../backup/metadata';
import { renderTextTable } from '../report/table';
import { parsePositiveDuration } from '../settings/duration';
import { loadConfig } from '../settings/load';
import { resolveEnvironment, type EnvironmentSettings } from '../settings/resolve';
import { singleCommandAction } from './action-spec';
import { optionalSignerFor, parseSignerInputs, SIGNER_INPUTS, type SignerInputs } from './manifest';
import { parsePolicyInputs, POLICY_INPUTS, verificationPolicyFor, type PolicyInputs } from './policy';
import { declaredInputs, describedAs, environmentFor, parseJobs, urlInput, type CommandContext, type CommandSpec, type DeclaredInputs, type InputSpec } from './spec';

function optionalDuration<N extends string>(inputs: DeclaredInputs<N>, name: N): number | undefined {
  const value = inputs.string(name);
  return value === undefined ? undefined : parsePositiveDuration(value, `--${name}`);
}

const DRILL_INPUTS = [
  { name: 'backup', type: 'string', description: 'Backup id, or "latest".', default: 'latest' },
  {
    name: 'target',
    type: 'string',
    description:
      'URL of an isolated PostgreSQL database to restore into (default: drill.targetUrlEnv, else a throwaway cluster Lifeline starts and removes). The live database is refused. Masked in logs; prefer target-env, which keeps the password out of the process list.',
  },
  { name: 'target-env', type: 'string', description: 'Name of an environment variable holding the target URL (instead of target).' },
  { name: 'smoke-sql', type: 'string', description: 'File of smoke queries: blocks of "-- expect: <value>" followed by one query (default: drill.smokeSql).' },
  { name: 'rto', type: 'string', description: "RTO target such as 15m (default: the environment's rto)." },
  { name: 'rpo', type: 'string', description: "RPO target such as 1h (default: the environment's rpo)." },
  { name: 'pitr', type: 'string', description: 'Point-in-time drill through pgBackRest to this time, e.g. "2026-11-21 23:59:00+00" (needs postgres.physical).' },
  { name: 'jobs', type: 'string', description: 'Parallel pg_restore jobs.', default: '2' },
  ...describedAs(SIGNER_INPUTS, 'Signs report.json like a release manifest.'),
  AGE_IDENTITY_INPUT,
] as const satisfies readonly InputSpec[];

export interface DrillInputs {
  backup: string | undefined;
  targetUrl: string | undefined;
  /** Resolved from the working directory. */
  smokeSql: string | undefined;
  rtoSeconds: number | undefined;
  rpoSeconds: number | undefined;
  pitr: string | undefined;
  jobs: number;
  signer: SignerInputs;
}

export function parseDrillInputs(ctx: CommandContext): DrillInputs {
  const inputs = declaredInputs(ctx, DRILL_INPUTS);
  const targetUrl = urlInput(ctx, inputs, 'target', { example: 'postgres://user:password@127.0.0.1:5432/drill_scratch' });
  const smoke = inputs.string('smoke-sql');
  return {
    backup: inputs.string('backup'),
    targetUrl,
    smokeSql: smoke ? resolve(ctx.cwd, smoke) : undefined,
    rtoSeconds: optionalDuration(inputs, 'rto'),
    rpoSeconds: optionalDuration(inputs, 'rpo'),
    pitr: inputs.string('pitr'),
    jobs: parseJobs(inputs.string('jobs')),
    signer: parseSignerInputs(ctx, inputs),
  };
}

export const drillCommand: CommandSpec = {
  name: 'drill',
  summary: 'Restore a backup into an isolated database, check it, and measure RTO and RPO',
  inputs: [...DRILL_INPUTS],
  outputs: [
    { name: 'drill-id', description: 'Id of the drill report in the catalog.' },
    { name: 'passed', description: '"true" when every check passed and both targets were met.' },
    { name: 'rto-seconds', description: 'Measured RTO in seconds (verify + restore + checks).' },
    { name: 'rpo-seconds', description: 'Measured RPO in seconds (the worse of backup age and the largest gap between backups).' },
    { name: 'report', description: 'Path of report.json in the catalog.' },
    { name: 'signed', description: '"key" or "keyless" when report.json was signed, "unsigned" without a signer, "failed" when signing failed.' },
  ],
  implemented: true,
  async run(ctx) {
    // Read (and masked) before anything else is printed.
    const identity = await loadIdentity(ctx.env, ctx.logger);
    const settings = environmentFor(ctx);
    const input = parseDrillInputs(ctx);
    const { report, entry, summary } = await runDrill({
      settings,
      catalog: new Catalog(settings.store, { warn: (m) => ctx.logger.warn(m) }),
      logger: ctx.logger,
      progress: startProgress(ctx, 'drill', { unit: 'count', noun: 'steps done' }),
      backup: input.backup,
      targetUrl: input.targetUrl,
      smokeSql: input.smokeSql,
      rtoSeconds: input.rtoSeconds,
      rpoSeconds: input.rpoSeconds,
      pitr: input.pitr,
      jobs: input.jobs,
      reportSigner: reportSignerFor(ctx, input.signer),
      identity,
    });
    const signing = entry.signing;
    if (signing.status === 'unsigned')
      ctx.logger.warn(`drill report ${report.id} is not signed (no --signing-key / LIFELINE_SIGNING_KEY or --keyless); a gate with a signing policy will not accept it`);
    return {
      json: report,
      text: `${renderDrillText(report)}\nreport signature: ${signing.status === 'unsigned' ? 'none (unsigned)' : signing.status === 'failed' ? `FAILED (${signing.detail})` : `${signing.status}-signed (${DRILL_BUNDLE_FILE})`}`,
      summary,
      outputs: {
        'drill-id': report.id,
        passed: String(report.passed),
        'rto-seconds': String(report.rto.seconds ?? ''),
        'rpo-seconds': String(report.rpo.seconds ?? ''),
        report: resolve(entry.dir, 'report.json'),
        signed: signing.status,
      },
      annotations: report.failures.map((f) => ({ level: 'error' as const, title: `restore drill failed (${report.environment})`, message: f })),
      ...(report.passed ? {} : { exitCode: 1 as const, failureMessage: `restore drill ${report.id} failed: ${report.failures.join('; ')}` }),
      ...(report.passed && signing.status === 'failed'
        ? { exitCode: 1 as const, failureMessage: `restore drill ${report.id} passed, but its report could not be signed (${signing.detail}); the gate will not accept it unsigned` }
        : {}),
    };
  },
};

/** A signer for report.json built from the same inputs as the release manifest's; undefined without a key or keyless. */
function reportSignerFor(ctx: CommandContext, input: SignerInputs): DrillReportSigner | undefined {
  const signer = optionalSignerFor(ctx, input);
  if (!signer) return undefined;
  const githubOidc = { requestUrl: ctx.env.ACTIONS_ID_TOKEN_REQUEST_URL, requestToken: ctx.env.ACTIONS_ID_TOKEN_REQUEST_TOKEN };
  return { sign: (payload) => signDssePayload({ signer, githubOidc, logger: ctx.logger }, payload, DRILL_REPORT_PAYLOAD_TYPE, 'drill report') };
}

/** The manifest verification policy, or undefined when neither flags nor `manifest:` name one (the gate then says so). */
function optionalPolicyFor(input: PolicyInputs, settings: EnvironmentSettings) {
  const policy = verificationPolicyFor(input, settings);
  const given = policy as Partial<{ publicKey: string; certificateIdentity: string; certificateOidcIssuer: string }>;
  return given.publicKey || given.certificateIdentity || given.certificateOidcIssuer ? policy : undefined;
}

export const drillsCommand: CommandSpec = {
  name: 'drills',
  summary: 'List drill reports, newest first',
  inputs: [],
  outputs: [],
  implemented: true,
  async run(ctx) {
    const settings = environmentFor(ctx);
    const reports = (await listDrillReports(new Catalog(settings.store), settings.name)).map((e) => e.metadata);
    return {
      json: reports.map(drillListing),
      text: reports.length ? renderTextTable(drillsTable(reports)) : `no drills for ${settings.name} yet: run lifeline drill --env ${settings.name}`,
    };
  },
};

const GATE_INPUTS = [
  { name: 'max-drill-age', type: 'string', description: 'Oldest acceptable drill, e.g. 7d (default: drill.maxAge).' },
  { name: 'rpo', type: 'string', description: "RPO target the newest verified backup must meet (default: the environment's rpo)." },
  { name: 'rto', type: 'string', description: "RTO target the newest drill must have met (default: the environment's rto)." },
  ...describedAs(POLICY_INPUTS, 'Drill reports must be signed as this policy demands (as release manifests).'),
] as const satisfies readonly InputSpec[];

export interface GateInputs {
  maxDrillAgeSeconds: number | undefined;
  rpoSeconds: number | undefined;
  rtoSeconds: number | undefined;
  policy: PolicyInputs;
}

export function parseGateInputs(ctx: CommandContext): GateInputs {
  const inputs = declaredInputs(ctx, GATE_INPUTS);
  return {
    policy: parsePolicyInputs(ctx, inputs),
    maxDrillAgeSeconds: optionalDuration(inputs, 'max-drill-age'),
    rpoSeconds: optionalDuration(inputs, 'rpo'),
    rtoSeconds: optionalDuration(inputs, 'rto'),
  };
}

export const gateCommand: CommandSpec = {
  name: 'gate',
  summary: 'Fail a release when backups or drills are stale or failing',
  inputs: [...GATE_INPUTS],
  outputs: [
    { name: 'passed', description: '"true" when the release may proceed.' },
    { name: 'reasons', description: 'One line per failed check.' },
  ],
  implemented: true,
  async run(ctx) {
    const settings = environmentFor(ctx);
    const input = parseGateInputs(ctx);
    const catalog = new Catalog(settings.store, { warn: (m) => ctx.logger.warn(m) });
    const now = new Date();
    const { drills, damaged, evidence } = await gatherGateEvidence({ catalog, env: settings.name, policy: optionalPolicyFor(input.policy, settings), now });
    const result = evaluateGate({
      environment: settings.name,
      drills,
      damaged,
      evidence,
      backups: (await listBackups(catalog, settings.name)).map((e) => e.metadata),
      maxDrillAgeSeconds: input.maxDrillAgeSeconds ?? settings.drill.maxAgeSeconds,
      rpoSeconds: input.rpoSeconds ?? settings.rpoSeconds,
      rtoSeconds: input.rtoSeconds ?? settings.rtoSeconds,
      now,
      deployHistory: recordedRunning(await loadHistory(catalog, settings.name)),
    });
    return {
      json: result,
      text: renderGateText(result),
      summary: renderGateMarkdown(result),
      outputs: { passed: String(result.passed), reasons: result.reasons.join('\n') },
      annotations: result.reasons.map((r) => ({ level: 'error' as const, title: `release gate (${settings.name})`, message: r })),
      ...(result.passed ? {} : { exitCode: 1 as const, failureMessage: result.reasons.join('\nerror: ') }),
    };
  },
};

const RUNBOOK_INPUTS = [{ name: 'output', type: 'string', description: 'Also write the runbook as Markdown to this file (e.g. docs/runbook.md).' }] as const satisfies readonly InputSpec[];

export const runbookCommand: CommandSpec = {
  name: 'runbook',
  summary: 'Print the ordered restore runbook (the steps every drill walks)',
  inputs: [...RUNBOOK_INPUTS],
  outputs: [],
  implemented: true,
  async run(ctx) {
    const first = environmentFor(ctx);
    const globals = ctx.inputs.globals();
    // Restore priority is an order across environments, so the runbook lists every one declared.
    const names = first.configPath ? Object.keys(loadConfig(first.configPath, { explicit: true }).config.environments) : [];
    const all = names.length ? names.map((name) => (name === first.name ? first : resolveEnvironment({ ...globals, env: name }, { env: ctx.env, cwd: ctx.cwd }))) : [first];
    const displayPath = (path: string) => (path.startsWith(`${ctx.cwd}/`) ? relative(ctx.cwd, path) : path);
    const runbook = buildRunbook(all, { displayPath });
    const only = globals.env ? [first.name] : undefined;
    const markdown = renderRunbookMarkdown(runbook, first.configPath ? displayPath(first.configPath) : 'flags and environment variables', only);
    const output = declaredInputs(ctx, RUNBOOK_INPUTS).string('output');
    if (output) writeFileSync(resolve(ctx.cwd, output), markdown);
    return { json: { environments: only ? runbook.filter((e) => only.includes(e.name)) : runbook, order: runbook.map((e) => e.name) }, text: renderRunbookText(runbook, only), summary: markdown };
  },
};

export const drillAction = singleCommandAction('drill', 'Run a restore drill in an isolated database and measure RTO/RPO.', drillCommand);
export const gateAction = singleCommandAction('gate', 'Release gate: fail when backups or restore drills are stale or failing.', gateCommand);
