import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO, runProcess } from '../helpers/cli';
import { createSampleDatabase, dropDatabase, tempDir } from '../helpers/db';

const HEAD = execFileSync('git', ['rev-parse', 'HEAD'], { cwd: REPO, encoding: 'utf8' }).trim();

/** `lifeline` as an operator has it after `npm install -g`: found on PATH, run from anywhere but the checkout. */
function installedLifeline(prefix: string, cwd: string) {
  return (args: string[]) =>
    runProcess(join(prefix, 'bin', 'lifeline'), args, {
      cwd,
      env: { PATH: `${join(prefix, 'bin')}:${process.env.PATH}`, DATABASE_URL: undefined, LIFELINE_STORE: undefined, LIFELINE_CONFIG: undefined, LIFELINE_VERSION: undefined },
    });
}

describe('installing the CLI on a host', () => {
  const work = tempDir('lifeline-install-');
  let db: Awaited<ReturnType<typeof createSampleDatabase>>;

  beforeAll(async () => {
    db = await createSampleDatabase(1, 'install');
  });
  afterAll(async () => {
    await dropDatabase(db.name);
    work.cleanup();
  });

  it('npm install -g of the packed tarball adds one package, needs no node_modules, and runs against a real database from elsewhere', async () => {
    // What the release job does: record the commit, then pack.
    try {
      execFileSync(process.execPath, ['scripts/build-info.mjs'], { cwd: REPO, stdio: 'ignore' });
      execFileSync('npm', ['pack', '--pack-destination', work.path, '--silent'], { cwd: REPO, stdio: 'ignore' });
    } finally {
      rmSync(join(REPO, 'build-info.json'), { force: true });
    }
    const tarball = readdirSync(work.path).find((f) => f.endsWith('.tgz'))!;
    expect(tarball).toBe('acme-lifeline-0.1.0.tgz');
    const prefix = join(work.path, 'prefix');
    // --offline: the package has no dependency to fetch.
    const installed = execFileSync('npm', ['install', '-g', '--prefix', prefix, '--offline', '--no-audit', '--no-fund', join(work.path, tarball)], { cwd: work.path, encoding: 'utf8' });
    expect(installed).toContain('added 1 package');
    const packageDir = join(prefix, 'lib', 'node_modules', '@acme', 'lifeline');
    expect(existsSync(join(packageDir, 'node_modules'))).toBe(false);
    expect(existsSync(join(packageDir, 'src'))).toBe(false);

    const elsewhere = join(work.path, 'elsewhere');
    execFileSync('mkdir', ['-p', elsewhere]);
    const lifeline = installedLifeline(prefix, elsewhere);
    const version = await lifeline(['--version']);
    expect(version.code, version.stderr).toBe(0);
    expect(version.stdout).toMatch(new RegExp(`^0\\.1\\.0 \\(commit ${HEAD}[,)]`));

    const store = join(work.path, 'store');
    const backup = await lifeline(['backup', '--store', store, '--database-url', db.url, '--json']);
    expect(backup.code, backup.stderr).toBe(0);
    const verify = await lifeline(['verify', 'latest', '--store', store, '--json']);
    expect(verify.code, verify.stderr).toBe(0);
    const listed = JSON.parse((await lifeline(['backups', '--store', store, '--json'])).stdout);
    expect(JSON.stringify(listed)).toContain(db.name);
  });

  it('npm install -g from a git URL at a commit (github:OWNER/REPO#SHA takes the same path; here a file URL of this checkout)', async () => {
    const prefix = join(work.path, 'git-prefix');
    // No lifecycle script makes npm install the dev dependencies of a git dependency: it clones and packs.
    execFileSync('npm', ['install', '-g', '--prefix', prefix, '--no-audit', '--no-fund', `git+file://${REPO}#${HEAD}`], { cwd: work.path, encoding: 'utf8' });
    const packageDir = join(prefix, 'lib', 'node_modules', '@acme', 'lifeline');
    expect(existsSync(join(packageDir, 'node_modules'))).toBe(false);
    const version = await installedLifeline(prefix, work.path)(['--version']);
    expect(version.code, version.stderr).toBe(0);
    expect(version.stdout).toMatch(/^0\.1\.0 \(commit /);
    const help = await installedLifeline(prefix, work.path)(['--help']);
    expect(help.stdout).toContain('restore');
  }, 300_000);
});
