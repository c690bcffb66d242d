import { readdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseBackupInputs, parseRestoreInputs, parseVerifyInputs, backupCommand, restoreCommand, verifyCommand } from '../../src/commands/backup';
import { drillCommand, gateCommand, parseDrillInputs, parseGateInputs } from '../../src/commands/drill';
import { manifestCreateCommand, parseManifestCreateInputs } from '../../src/commands/manifest';
import { parsePreflightInputs, preflightCommand } from '../../src/commands/preflight';
import { parseRedisRestoreInputs, redisRestoreCommand } from '../../src/commands/redis-restore';
import { parseReencryptInputs, reencryptCommand } from '../../src/commands/reencrypt';
import { allInputs, declaredInputs, GLOBAL_INPUTS, Inputs, type CommandContext, type CommandSpec, type RawValue } from '../../src/commands/spec';
import { fetchCommand, parseFetchInputs, parseSyncInputs, syncCommand } from '../../src/commands/sync';
import { parseTenantExportInputs, tenantExportCommand } from '../../src/commands/tenant';
import { LifelineError } from '../../src/errors';
import { createMemoryLogger } from '../../src/logger';

// Issue #23, typed inputs: each command parses its inputs once, at the top of run, into a typed
// object, through a reader that only accepts the names its spec declares.

const ROOT = resolve(__dirname, '../..');

function contextFor(command: CommandSpec, values: Record<string, RawValue>, env: Record<string, string> = {}) {
  const inputs = new Inputs(command, values);
  const logger = createMemoryLogger();
  const ctx: CommandContext = { inputs, env, cwd: '/srv/app', logger, interactive: false };
  return { ctx, inputs, logger };
}

interface ParseCase {
  command: CommandSpec;
  parse: (ctx: CommandContext) => unknown;
  /** Value sets that, together, take the parse down every branch that reads an input. */
  runs: Array<Record<string, RawValue>>;
}

const CASES: ParseCase[] = [
  { command: syncCommand, parse: parseSyncInputs, runs: [{}, { compare: 'true' }] },
  { command: fetchCommand, parse: parseFetchInputs, runs: [{}] },
  { command: backupCommand, parse: parseBackupInputs, runs: [{}, { physical: 'true' }] },
  { command: verifyCommand, parse: parseVerifyInputs, runs: [{}] },
  { command: restoreCommand, parse: parseRestoreInputs, runs: [{ target: 'postgres://u@127.0.0.1/shop' }] },
  { command: drillCommand, parse: parseDrillInputs, runs: [{}] },
  { command: gateCommand, parse: parseGateInputs, runs: [{}] },
  { command: manifestCreateCommand, parse: parseManifestCreateInputs, runs: [{ release: 'v1', image: ['api=r/a:1', 'web=r/w:1', 'worker=r/k:1'] }] },
  { command: tenantExportCommand, parse: parseTenantExportInputs, runs: [{ tenant: 't1' }] },
  { command: preflightCommand, parse: parsePreflightInputs, runs: [{}] },
  { command: redisRestoreCommand, parse: parseRedisRestoreInputs, runs: [{}] },
  { command: reencryptCommand, parse: (ctx) => parseReencryptInputs(ctx, 'production'), runs: [{ backup: 'all' }] },
];

/** Read by the doors themselves, not by a parse: the globals (settings resolution) and the age identity (masked and moved to the environment by the action door). */
const READ_AT_THE_DOOR = new Set<string>([...GLOBAL_INPUTS.map((i) => i.name), 'age-identity']);

describe('typed command inputs (issue #23)', () => {
  for (const { command, parse, runs } of CASES) {
    it(`${command.name}: the parse reads only declared inputs, and every declared one`, () => {
      const declared = new Set(allInputs(command).map((i) => i.name));
      const read = new Set<string>();
      for (const values of runs) {
        const { ctx, inputs } = contextFor(command, values);
        // An undeclared name would throw INTERNAL_UNDECLARED_INPUT here.
        expect(() => parse(ctx)).not.toThrow();
        for (const name of inputs.read) read.add(name);
      }
      expect([...read].filter((name) => !declared.has(name))).toEqual([]);
      expect([...declared].filter((name) => !read.has(name) && !READ_AT_THE_DOOR.has(name))).toEqual([]);
    });
  }

  it('a misspelt input name fails typecheck, and throws an internal error if forced through', () => {
    const { ctx } = contextFor(syncCommand, {});
    const inputs = declaredInputs(ctx, [{ name: 'dry-run', type: 'boolean', description: '' }] as const);
    expect(inputs.boolean('dry-run')).toBe(false);
    expect(inputs.string('env')).toBeUndefined();
    // @ts-expect-error 'dryrun' is not a declared name: this line is the typecheck's proof.
    expect(() => inputs.boolean('dryrun')).toThrow(/internal error: input "dryrun" is read but not declared/);
  });

  it('bad values are usage errors (exit 2) from the parse, before anything runs', () => {
    const usage = (command: CommandSpec, parse: (ctx: CommandContext) => unknown, values: Record<string, RawValue>, message: RegExp) => {
      const { ctx } = contextFor(command, values);
      let thrown: unknown;
      try {
        parse(ctx);
      } catch (error) {
        thrown = error;
      }
      expect(thrown).toBeInstanceOf(LifelineError);
      expect((thrown as LifelineError).exitCode).toBe(2);
      expect((thrown as LifelineError).message).toMatch(message);
    };
    usage(syncCommand, parseSyncInputs, { to: 'ftp' }, /--to must be one of bucket, artifact, both/);
    usage(syncCommand, parseSyncInputs, { 'artifact-retention-days': '91' }, /1 to 90/);
    usage(backupCommand, parseBackupInputs, { compress: 'brotli:3' }, /brotli/);
    usage(backupCommand, parseBackupInputs, { 'lock-timeout': 'soon' }, /--lock-timeout/);
    usage(restoreCommand, parseRestoreInputs, {}, /missing --target-env/);
    usage(restoreCommand, parseRestoreInputs, { target: 'postgres://u@h/db', 'target-env': 'T' }, /not both/);
    usage(restoreCommand, parseRestoreInputs, { target: 'postgres://u@h/db', jobs: '0' }, /--jobs/);
    usage(drillCommand, parseDrillInputs, { rto: 'fast' }, /--rto/);
    // A drill's --jobs is checked as a restore's is (a bad value once silently became 2).
    usage(drillCommand, parseDrillInputs, { jobs: 'two' }, /--jobs must be a whole number/);
    usage(drillCommand, parseDrillInputs, { jobs: '0' }, /--jobs/);
    // Outside attack: Number() took 1e1 (10 jobs), 0x2, +2 and padded values; zero waits and targets ran.
    for (const jobs of ['1e1', '0x2', '+2', '02', '2 ', '65', '1.5']) usage(restoreCommand, parseRestoreInputs, { target: 'postgres://u@h/db', jobs }, /--jobs must be a whole number/);
    usage(drillCommand, parseDrillInputs, { rto: '0s' }, /--rto: "0s" is zero/);
    usage(drillCommand, parseDrillInputs, { rpo: '0' }, /--rpo: "0" is zero/);
    usage(gateCommand, parseGateInputs, { 'max-drill-age': '0d' }, /--max-drill-age: "0d" is zero/);
    usage(backupCommand, parseBackupInputs, { 'lock-timeout': '0s' }, /--lock-timeout: "0s" is zero/);
    usage(restoreCommand, parseRestoreInputs, { target: 'postgres://u@h/db', 'lock-timeout': '0m' }, /--lock-timeout: "0m" is zero/);
    usage(gateCommand, parseGateInputs, { 'max-drill-age': '-1d' }, /--max-drill-age/);
    usage(manifestCreateCommand, parseManifestCreateInputs, { release: 'v1', image: ['api=a', 'api=b'] }, /given twice/);
    usage(tenantExportCommand, parseTenantExportInputs, { tenant: 't1', 'row-cap': '0' }, /--row-cap/);
    usage(tenantExportCommand, parseTenantExportInputs, {}, /missing --tenant/);
    usage(preflightCommand, parsePreflightInputs, { 'nginx-config': 'a', 'caddy-config': 'b' }, /not both/);
    usage(preflightCommand, parsePreflightInputs, { 'required-env': ['OK', 'NOT-A-NAME'] }, /NOT-A-NAME/);
    usage(redisRestoreCommand, parseRedisRestoreInputs, { 'skip-verify': 'maybe' }, /true or false/);
    usage(reencryptCommand, (ctx) => parseReencryptInputs(ctx, 'production'), {}, /--backup ID\|all/);
  });

  it('the parse masks the secrets it reads (a target URL from the environment, a PEM signing key, a registry password)', () => {
    const { ctx, logger } = contextFor(restoreCommand, { 'target-env': 'TARGET_URL' }, { TARGET_URL: 'postgres://app:s3cret-pw@127.0.0.1/shop' });
    expect(parseRestoreInputs(ctx).targetUrl).toBe('postgres://app:s3cret-pw@127.0.0.1/shop');
    logger.info('connecting with s3cret-pw');
    const pem = '-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49\n-----END PRIVATE KEY-----';
    const manifest = contextFor(manifestCreateCommand, { release: 'v1', image: ['api=a', 'web=b', 'worker=c'], 'signing-key': pem, 'registry-password': 'reg-token-9' });
    const parsed = parseManifestCreateInputs(manifest.ctx);
    expect(parsed.signer.signingKey).toBe(pem);
    manifest.logger.warn('key MIGHAgEAMBMGByqGSM49AgEGCCqGSM49 and reg-token-9');
    expect([...logger.lines, ...manifest.logger.lines].join('\n')).not.toMatch(/s3cret-pw|MIGHAgEAMBMGByqGSM49AgEGCCqGSM49|reg-token-9/);
  });

  it('no command reads an input by name outside its parse (ctx.inputs.string(...) and the like)', () => {
    const pattern = /\bctx\.inputs\.(string|boolean|list|requiredString)\(/;
    const dir = join(ROOT, 'src/commands');
    const offenders = readdirSync(dir)
      .filter((name) => name.endsWith('.ts') && name !== 'spec.ts')
      .flatMap((name) =>
        readFileSync(join(dir, name), 'utf8')
          .split('\n')
          .map((line, i) => ({ where: `src/commands/${name}:${i + 1}`, line }))
          .filter(({ line }) => pattern.test(line)),
      )
      .map(({ where }) => where);
    expect(offenders).toEqual([]);
    // The pattern catches the shape it forbids.
    expect(pattern.test("    const to = ctx.inputs.string('to') ?? 'bucket';")).toBe(true);
    expect(pattern.test('    const inputs = declaredInputs(ctx, SYNC_INPUTS);')).toBe(false);
  });
});
