import { describe, expect, it } from 'vitest';
import { parseFlags } from '../../src/cli/main';
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

  it('still reads --no-verify as verify=false for a flag named verify', () => {
    const values = parseFlags(backupCommand, ['--no-verify']);
    expect(values.verify).toBe(false);
    expect(new Inputs(backupCommand, values).boolean('verify')).toBe(false);
  });
});
