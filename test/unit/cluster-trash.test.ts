import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { removeInBackground, sweepAbandonedTrash } from '../../src/postgres/cluster';
import { waitFor } from '../../src/runner/ports';

describe('throwaway cluster directories', () => {
  const parents: string[] = [];
  const parent = () => {
    const dir = mkdtempSync(join(tmpdir(), 'lifeline-trash-test-'));
    parents.push(dir);
    return dir;
  };
  afterEach(() => {
    for (const dir of parents.splice(0)) rmSync(dir, { recursive: true, force: true });
  });

  it('frees the path at once and deletes the files in the background', async () => {
    const root = parent();
    const dir = join(root, 'lifeline-pg-abc');
    mkdirSync(join(dir, 'data', 'base'), { recursive: true });
    for (let i = 0; i < 50; i++) writeFileSync(join(dir, 'data', 'base', String(i)), Buffer.alloc(64 * 1024));
    removeInBackground(dir);
    expect(existsSync(dir)).toBe(false);
    await waitFor(async () => readdirSync(root).length === 0, { timeoutMs: 10000, what: 'the background removal' });
  });

  it('removes trash left by a removal that was cut short, but only once it is old', () => {
    const root = parent();
    const old = join(root, 'lifeline-pitr-old.lifeline-trash');
    const fresh = join(root, 'lifeline-pitr-new.lifeline-trash');
    const other = join(root, 'someone-else.lifeline-trash');
    for (const d of [old, fresh, other]) mkdirSync(join(d, 'data'), { recursive: true });
    const hourAgo = new Date(Date.now() - 3600_000);
    utimesSync(old, hourAgo, hourAgo);
    utimesSync(other, hourAgo, hourAgo);
    sweepAbandonedTrash(root);
    expect(readdirSync(root).sort()).toEqual(['lifeline-pitr-new.lifeline-trash', 'someone-else.lifeline-trash']);
  });
});
