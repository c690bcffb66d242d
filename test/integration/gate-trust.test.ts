import { cpSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Catalog } from '../../src/catalog/store';
import { formatSums, parseSums } from '../../src/catalog/sums';
import { backupsTheGateNeeds, believedPassingDrills } from '../../src/drill/gate';
import { createMemoryLogger } from '../../src/logger';
import { generateSigningKeyPair } from '../../src/manifest/keys';
import { createBackup } from '../../src/backup/create';
import { pruneBackups } from '../../src/backup/retention';
import { formatPgUrl } from '../../src/runner/postgres-env';
import { lifeline } from '../helpers/cli';
import { createSampleDatabase, dropDatabase, runner, tempDir } from '../helpers/db';

// The release gate attacked from outside: every way a catalog can lie about a drill must fail the
// gate (exit 1) with a reason that names what was wrong, and a genuine signed drill must still pass.
// Each test runs several CLI processes (tsx start-up included); on a loaded 2-core host that takes minutes.
describe('the release gate believes only real, recent, passing drills', { timeout: 400_000 }, () => {
  const work = tempDir('lifeline-gate-trust-');
  let live: Awaited<ReturnType<typeof createSampleDatabase>>;
  let store: string;
  let keyPath: string;
  let otherKeyPath: string;
  let backupId: string;
  let passingId: string;
  let failingId: string;
  const created: string[] = [];

  /** A config for `store`; `signed` adds the public key the gate verifies reports with. */
  const configFor = (storeDir: string, signed: boolean) => {
    const path = join(work.path, `lifeline-${signed ? 'signed' : 'plain'}-${created.length}-${Math.random().toString(36).slice(2)}.yml`);
    const env = (name: string) => [`  ${name}:`, '    rto: 10m', '    rpo: 30d', ...(signed ? ['    manifest:', `      publicKey: ${join(work.path, 'signing.pub')}`] : [])];
    writeFileSync(path, ['version: 1', `store: ${storeDir}`, 'environments:', ...env('production'), ...env('staging'), ''].join('\n'));
    return path;
  };
  const env = () => ({ DATABASE_URL: live.url, LIFELINE_STORE: undefined, LIFELINE_CONFIG: undefined, LIFELINE_SIGNING_KEY: undefined });
  const drill = async (config: string, extra: string[]) => {
    const name = `gate_trust_${created.length}_${process.pid}`;
    created.push(name);
    return lifeline(['drill', '--config', config, '--env', 'production', '--target', formatPgUrl({ ...live.conn, database: name }), '--json', ...extra], { env: env() });
  };
  const gate = (config: string, extra: string[] = [], environment = 'production') => lifeline(['gate', '--config', config, '--env', environment, ...extra], { env: env() });
  /** A private copy of the catalog for one attack, so attacks never see each other. */
  const copyStore = (without: string[] = []) => {
    const copy = join(work.path, `store-${Math.random().toString(36).slice(2)}`);
    cpSync(store, copy, { recursive: true });
    for (const id of without) rmSync(join(copy, 'production', 'drills', id), { recursive: true });
    return copy;
  };
  const drillDir = (storeDir: string, id: string, environment = 'production') => join(storeDir, environment, 'drills', id);
  const sha = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex');
  /** What a careful forger does after editing a file: rewrite SHA256SUMS to match. */
  const resum = (dir: string) => {
    const sums = parseSums(readFileSync(join(dir, 'SHA256SUMS'), 'utf8')).map((s) => ({ file: s.file, sha256: sha(join(dir, s.file)) }));
    writeFileSync(join(dir, 'SHA256SUMS'), formatSums(sums));
  };

  beforeAll(async () => {
    live = await createSampleDatabase(1, 'gate_trust');
    store = join(work.path, 'store');
    const pair = generateSigningKeyPair();
    keyPath = join(work.path, 'signing.key');
    writeFileSync(keyPath, pair.privateKeyPem, { mode: 0o600 });
    writeFileSync(join(work.path, 'signing.pub'), pair.publicKeyPem);
    otherKeyPath = join(work.path, 'other.key');
    writeFileSync(otherKeyPath, generateSigningKeyPair().privateKeyPem, { mode: 0o600 });
    const backup = await createBackup({ catalog: new Catalog(store), environment: 'production', runner, conn: live.conn, label: 'manual', logger: createMemoryLogger() });
    backupId = backup.id;
    // The drill's RPO is at least the backup's age at drill time; 2.5 s lets the RPO test go below it.
    await new Promise((r) => setTimeout(r, 2500));
    const config = configFor(store, true);
    const passing = await drill(config, ['--signing-key', keyPath]);
    expect(passing.code, passing.stderr).toBe(0);
    passingId = JSON.parse(passing.stdout).id;
    const smoke = join(work.path, 'failing-smoke.sql');
    writeFileSync(smoke, '-- name: impossible order count\n-- expect: -1\nSELECT count(*) FROM pg_class\n');
    const failing = await drill(config, ['--signing-key', keyPath, '--smoke-sql', smoke]);
    expect(failing.code, failing.stderr).toBe(1);
    failingId = JSON.parse(failing.stdout).id;
  }, 600_000);

  afterAll(async () => {
    for (const name of created) await dropDatabase(name);
    if (live) await dropDatabase(live.name);
    work.cleanup();
  });

  it('passes a genuine, signed, passing drill, covering report.json in SHA256SUMS and verifying its signature', async () => {
    const dir = drillDir(store, passingId);
    expect(parseSums(readFileSync(join(dir, 'SHA256SUMS'), 'utf8')).map((s) => s.file)).toEqual(['report.json', 'report.sigstore.json', 'summary.md']);
    const copy = copyStore([failingId]);
    const run = await gate(configFor(copy, true));
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toMatch(/newest drill report signature\s+\S?\s*signed by key/);
    expect(run.stdout).toContain('release gate for production: PASSED');
  });

  it('fails a failed drill whose report.json was edited to passed: true, whether or not SHA256SUMS was rewritten', async () => {
    const copy = copyStore();
    const dir = drillDir(copy, failingId);
    const report = JSON.parse(readFileSync(join(dir, 'report.json'), 'utf8'));
    writeFileSync(join(dir, 'report.json'), `${JSON.stringify({ ...report, passed: true, failures: [] }, null, 2)}\n`);
    const naive = await gate(configFor(copy, false));
    expect(naive.code).toBe(1);
    expect(naive.stderr).toMatch(/the newest drill \S+ did not pass: its check "smoke: impossible order count" failed/);
    expect(naive.stderr).toMatch(/fails its checksums: report.json has sha256/);

    // A careful forger flips the check too and rewrites SHA256SUMS: only the signature can tell.
    report.checks = report.checks.map((c: { status: string }) => ({ ...c, status: c.status === 'fail' ? 'pass' : c.status }));
    report.steps = report.steps.map((s: { status: string }) => ({ ...s, status: s.status === 'failed' ? 'done' : s.status }));
    writeFileSync(join(dir, 'report.json'), `${JSON.stringify({ ...report, passed: true, failures: [] }, null, 2)}\n`);
    resum(dir);
    const forged = await gate(configFor(copy, true));
    expect(forged.code).toBe(1);
    expect(forged.stderr).toMatch(
      new RegExp(`the newest drill's report ${failingId} fails signature verification: drill report ${failingId} signature verification failed: .*report.json differs from the signed payload`),
    );
    // Without a signing policy the forgery passes, and the gate says that it could not tell.
    const unsignedPolicy = await gate(configFor(copy, false));
    expect(unsignedPolicy.code, unsignedPolicy.stderr).toBe(0);
    expect(unsignedPolicy.stdout).toContain('note: drill report signatures are NOT checked');
  });

  it('never takes a future-dated report as the newest drill, so it cannot hide the newer failed drill', async () => {
    const copy = copyStore();
    const futureId = '20271231T000000000Z-fffff0';
    const dir = drillDir(copy, futureId);
    cpSync(drillDir(copy, passingId), dir, { recursive: true });
    const report = JSON.parse(readFileSync(join(dir, 'report.json'), 'utf8'));
    writeFileSync(join(dir, 'report.json'), `${JSON.stringify({ ...report, id: futureId, createdAt: '2027-12-31T00:00:00.000Z', finishedAt: '2027-12-31T00:05:00.000Z' }, null, 2)}\n`);
    resum(dir);
    const run = await gate(configFor(copy, false), ['--json']);
    expect(run.code).toBe(1);
    const result = JSON.parse(run.stdout);
    expect(result.newestDrillId).toBe(failingId);
    expect(result.reasons[0]).toMatch(new RegExp(`^drill report ${futureId} is dated 2027-12-31T00:00:00.000Z, .* in the future`));
    expect(result.reasons[1]).toMatch(new RegExp(`^the newest drill ${failingId} failed: smoke: impossible order count`));
  });

  it("refuses a production report copied into staging's catalog", async () => {
    const copy = copyStore([failingId]);
    mkdirSync(join(copy, 'staging', 'drills'), { recursive: true });
    cpSync(drillDir(copy, passingId), drillDir(copy, passingId, 'staging'), { recursive: true });
    cpSync(join(copy, 'production', 'backups'), join(copy, 'staging', 'backups'), { recursive: true });
    const run = await gate(configFor(copy, true), [], 'staging');
    expect(run.code).toBe(1);
    expect(run.stderr).toContain(`drill report ${passingId} was recorded for environment "production", not staging`);
    expect(run.stderr).toContain('no restore drill has run for staging');
  });

  it('fails when the drilled backup was deleted, or no longer matches its checksums', async () => {
    const gone = copyStore([failingId]);
    rmSync(join(gone, 'production', 'backups', backupId), { recursive: true });
    const run = await gate(configFor(gone, true));
    expect(run.code).toBe(1);
    expect(run.stderr).toContain(`the backup the newest drill ${passingId} restored cannot be relied on: backup ${backupId} is no longer in the catalog`);

    const damaged = copyStore([failingId]);
    const dump = join(damaged, 'production', 'backups', backupId, 'postgres.dump');
    const bytes = readFileSync(dump);
    bytes[Math.floor(bytes.length / 2)] ^= 0xff;
    writeFileSync(dump, bytes);
    const flipped = await gate(configFor(damaged, true));
    expect(flipped.code).toBe(1);
    expect(flipped.stderr).toMatch(new RegExp(`backup ${backupId}: postgres.dump has sha256 [0-9a-f]{64}, SHA256SUMS says`));
  });

  it('judges RPO and RTO against the targets in force now', async () => {
    const copy = copyStore([failingId]);
    const run = await gate(configFor(copy, true), ['--rpo', '1s']);
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/the newest drill's RPO was \S+; the target is 1s/);
    expect(run.stderr).toMatch(/the newest verified backup \S+ is \S+ old; the RPO target is 1s/);
  });

  it('fails an unsigned report, or one signed with another key, when signing is configured', async () => {
    const unsigned = copyStore([failingId]);
    const config = configFor(unsigned, true);
    rmSync(drillDir(unsigned, passingId), { recursive: true });
    const plain = await drill(config, []);
    expect(plain.code, plain.stderr).toBe(0);
    expect(plain.stderr).toContain('is not signed');
    const run = await gate(config);
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/fails signature verification: .* it is not signed \(.*report.sigstore.json is missing\)/);
    expect(run.stderr).toContain('run lifeline drill with --signing-key');
    // Keyless identities (the example config's): a drill run on the host is said to be unsigned, with
    // the way out, before any attempt to fetch Sigstore's trust root (which failed on a host offline).
    const keyless = join(work.path, `lifeline-keyless-${Math.random().toString(36).slice(2)}.yml`);
    writeFileSync(
      keyless,
      [
        'version: 1',
        `store: ${unsigned}`,
        'environments:',
        '  production:',
        '    rto: 10m',
        '    rpo: 30d',
        '    manifest:',
        '      certificateIdentity: https://github.com/acme/lifeline/.github/workflows/drill.yml@refs/heads/main',
        '      certificateOidcIssuer: https://token.actions.githubusercontent.com',
        '',
      ].join('\n'),
    );
    const keylessRun = await gate(keyless);
    expect(keylessRun.code).toBe(1);
    expect(keylessRun.stderr).toMatch(
      /it is not signed \(report.sigstore.json is missing\), and manifest.certificateIdentity accepts only drill reports signed keyless inside GitHub Actions by a listed identity: run the drill action with keyless: true/,
    );
    expect(keylessRun.stderr).not.toMatch(/TUF|trusted root/);

    const other = await drill(config, ['--signing-key', otherKeyPath]);
    expect(other.code, other.stderr).toBe(0);
    const wrongKey = await gate(config);
    expect(wrongKey.code).toBe(1);
    expect(wrongKey.stderr).toMatch(/fails signature verification: .*the signature does not match the public key/);
  });

  it('fails when the newer failed drill has a damaged report (emptied, removed, "{" with SHA256SUMS recomputed, a FIFO), naming it', async () => {
    const damages: [string, (dir: string) => void, RegExp][] = [
      ['emptied', (dir) => writeFileSync(join(dir, 'report.json'), ''), /report\.json is empty/],
      ['removed', (dir) => rmSync(join(dir, 'report.json')), /it has no report\.json/],
      ['"{", resummed', (dir) => (writeFileSync(join(dir, 'report.json'), '{'), resum(dir)), /report\.json is not valid JSON/],
      // A FIFO in its place must be damage, never a gate that hangs reading it.
      ['a FIFO', (dir) => (rmSync(join(dir, 'report.json')), execFileSync('mkfifo', [join(dir, 'report.json')])), /report\.json is a FIFO/],
    ];
    for (const [what, damage, why] of damages) {
      const copy = copyStore();
      damage(drillDir(copy, failingId));
      const run = await gate(configFor(copy, true));
      expect(run.code, `${what}: ${run.stdout}`).toBe(1);
      expect(run.stdout, what).toContain('release gate for production: FAILED');
      expect(run.stderr, what).toMatch(new RegExp(`drill entry ${failingId} cannot be read: ${why.source}`));
      expect(run.stderr, what).toContain('run lifeline drill --env production');
      expect(run.stderr, what).toContain(drillDir(copy, failingId));
      // Retention still sees the older passing drill: a damaged newer entry never lets its backup go.
      expect(await believedPassingDrills(new Catalog(copy), 'production'), what).toEqual([{ id: passingId, backupId }]);
    }
  });

  it('does not fail on a damaged report older than the newest passing drill (it warns)', async () => {
    const copy = copyStore([failingId]);
    // An entry id one hour before the passing drill's: an old drill whose report was later damaged.
    const stamp = (d: Date) => d.toISOString().replace(/[-:]/g, '').replace('.', '');
    const passedAt = new Date(JSON.parse(readFileSync(join(drillDir(copy, passingId), 'report.json'), 'utf8')).createdAt);
    const oldId = `${stamp(new Date(passedAt.getTime() - 3_600_000))}-00abcd`;
    cpSync(drillDir(copy, passingId), drillDir(copy, oldId), { recursive: true });
    writeFileSync(join(drillDir(copy, oldId), 'report.json'), '');
    const run = await gate(configFor(copy, true));
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toContain('release gate for production: PASSED');
    expect(run.stdout).toContain(`note: drill entry ${oldId} cannot be read (report.json is empty); it is older than the newest drill ${passingId}`);
  });

  it('retention keeps the backup the gate relies on', async () => {
    const copy = copyStore([failingId]);
    const catalog = new Catalog(copy);
    // Newer backups push the drilled one out of keepLast 1 / daily 1 / weekly 1.
    for (let i = 0; i < 2; i++) await createBackup({ catalog, environment: 'production', runner, conn: live.conn, label: 'manual', logger: createMemoryLogger() });
    expect([...(await backupsTheGateNeeds(catalog, 'production')).keys()]).toEqual([backupId]);
    const result = await pruneBackups(
      catalog,
      'production',
      { keepLast: 1, keepDaily: 1, keepWeekly: 1, preRestore: { keepLast: 0, keepDays: 0 } },
      { apply: true, logger: createMemoryLogger(), passingDrills: believedPassingDrills },
    );
    expect(result.decisions.find((d) => d.id === backupId)).toMatchObject({ keep: true, reasons: expect.arrayContaining([expect.stringMatching(/newest passing drill/)]) });
    expect(readdirSync(join(copy, 'production', 'backups'))).toContain(backupId);
    const run = await gate(configFor(copy, true));
    expect(run.code, run.stderr).toBe(0);
  });
});
