import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseFlags, runCli } from '../../src/cli/main';
import { COMMANDS } from '../../src/commands/registry';
import { backupCommand, restoreCommand } from '../../src/commands/backup';
import { Inputs } from '../../src/commands/spec';

describe('CLI flags', () => {
  it('reads --no-owner as the no-owner flag, not as a negated "owner"', () => {
    const values = parseFlags(restoreCommand, ['--target', 'postgres://u@127.0.0.1/db', '--no-owner']);
    expect(values['no-owner']).toBe(true);
    expect(values).not.toHaveProperty('owner');
    expect(new Inputs(restoreCommand, values).boolean('no-owner')).toBe(true);
    expect(new Inputs(restoreCommand, parseFlags(restoreCommand, ['--target', 'postgres://u@127.0.0.1/db'])).boolean('no-owner')).toBe(false);
  });

  it('refuses a flag given twice (the last one would silently win), without repeating the values', () => {
    const twice = (args: string[]) => {
      try {
        parseFlags(backupCommand, args);
      } catch (error) {
        return error as Error & { exitCode: number; code: string };
      }
      throw new Error('expected a refusal');
    };
    expect(twice(['--env', 'default', '--env', 'production'])).toMatchObject({ code: 'BAD_FLAGS', exitCode: 2, message: expect.stringContaining('--env is given more than once') });
    expect(twice(['--verify', '--no-verify']).message).toContain('--verify is given more than once');
    const urls = twice(['--database-url', 'postgres://u:s3cret-a@h/d', '--database-url=postgres://u:s3cret-b@h/d']);
    expect(urls.message).toContain('--database-url');
    expect(urls.message).not.toMatch(/s3cret/);
    // Once each is fine, and so is a list flag given several times.
    expect(parseFlags(backupCommand, ['--env', 'production', '--no-verify'])).toMatchObject({ env: 'production', verify: false });
    expect(parseFlags(restoreCommand, ['--target', 'postgres://u@127.0.0.1/db', '--no-owner'])['no-owner']).toBe(true);
  });

  it('still reads --no-verify as verify=false for a flag named verify', () => {
    const values = parseFlags(backupCommand, ['--no-verify']);
    expect(values.verify).toBe(false);
    expect(new Inputs(backupCommand, values).boolean('verify')).toBe(false);
  });
});

describe('CLI papercuts', () => {
  const capture = () => {
    const out = { stdout: '', stderr: '' };
    const io = { stdout: (t: string) => void (out.stdout += t), stderr: (t: string) => void (out.stderr += t), env: {}, cwd: process.cwd(), interactive: false };
    return { out, io };
  };

  it('a --store that names a file (or runs through one) is a clear failure naming the path, not an unexpected error', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'lifeline-store-file-'));
    try {
      const file = join(dir, 'not-a-dir');
      writeFileSync(file, 'x');
      for (const store of [file, join(file, 'below')]) {
        const run = capture();
        expect(await runCli(COMMANDS, ['backups', '--store', store], run.io), run.out.stderr).toBe(1);
        expect(run.out.stderr).toContain('is a file, not a directory');
        expect(run.out.stderr).toContain('point --store');
        expect(run.out.stderr).not.toMatch(/UNEXPECTED|internal error/i);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("lifeline help COMMAND shows that command's help, as COMMAND --help does", async () => {
    const a = capture();
    const b = capture();
    expect(await runCli(COMMANDS, ['help', 'manifest', 'keygen'], a.io)).toBe(0);
    expect(await runCli(COMMANDS, ['manifest', 'keygen', '--help'], b.io)).toBe(0);
    expect(a.out.stdout).toBe(b.out.stdout);
    expect(a.out.stdout).toContain('Usage: lifeline manifest keygen');
    const unknown = capture();
    expect(await runCli(COMMANDS, ['help', 'restorr'], unknown.io)).toBe(2);
    expect(unknown.out.stderr).toContain('did you mean "lifeline restore"');
  });

  it('manifest keygen takes --json and the global flags like every other command', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'lifeline-keygen-'));
    try {
      const run = capture();
      expect(await runCli(COMMANDS, ['manifest', 'keygen', '--out', join(dir, 'keys'), '--json', '--env', 'production'], run.io), run.out.stderr).toBe(0);
      const written = JSON.parse(run.out.stdout);
      expect(statSync(written.privateKey).mode & 0o777).toBe(0o600);
      expect(readFileSync(written.publicKey, 'utf8')).toContain('BEGIN PUBLIC KEY');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
