import { existsSync, lstatSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { once } from 'node:events';
import { afterEach, describe, expect, it } from 'vitest';
import { Catalog } from '../../src/catalog/store';
import { tempDir } from '../helpers/db';

// The Redis snapshot's `.part` file is written through the catalog's StagedEntry.scratchFile
// (issue #23: every catalog file is written by the catalog). Attack it as a hostile store would.

const cleanups: Array<() => void> = [];
afterEach(() => cleanups.splice(0).forEach((c) => c()));

function store() {
  const dir = tempDir('lifeline-scratch-');
  cleanups.push(dir.cleanup);
  return { catalog: new Catalog(dir.path), root: dir.path };
}

describe('StagedEntry.scratchFile', () => {
  it('is private, never listed in SHA256SUMS, and gone once removed and committed', async () => {
    const { catalog } = store();
    const staged = await catalog.begin('production', 'backups', '20260101T000000Z-aaaaaa', 'backup.json');
    const scratch = staged.scratchFile('redis.rdb.part');
    scratch.stream.end(Buffer.from('REDIS0011 payload and trailing EOF marker'));
    await once(scratch.stream, 'finish');
    expect(lstatSync(scratch.path).mode & 0o777).toBe(0o600);
    expect(scratch.path.startsWith(staged.dir)).toBe(true);
    await scratch.remove();
    await staged.addText('redis.rdb', 'REDIS0011 payload');
    await staged.commit({ schemaVersion: 1, id: '20260101T000000Z-aaaaaa', createdAt: new Date().toISOString() });
    const dir = catalog.entryDir('production', 'backups', '20260101T000000Z-aaaaaa');
    expect(readdirSync(dir).sort()).toEqual(['SHA256SUMS', 'backup.json', 'redis.rdb']);
    expect(readFileSync(join(dir, 'SHA256SUMS'), 'utf8')).not.toContain('.part');
  });

  it('never follows or overwrites a file planted at its name (a symlink to a file outside stays untouched)', async () => {
    const { catalog, root } = store();
    const staged = await catalog.begin('production', 'backups', '20260101T000000Z-bbbbbb', 'backup.json');
    const outside = join(root, 'outside.txt');
    writeFileSync(outside, 'precious');
    symlinkSync(outside, join(staged.dir, 'redis.rdb.part'));
    const scratch = staged.scratchFile('redis.rdb.part');
    const [error] = await once(scratch.stream, 'error');
    expect((error as NodeJS.ErrnoException).code).toBe('EEXIST');
    expect(readFileSync(outside, 'utf8')).toBe('precious');
    await staged.abort();
    expect(existsSync(outside)).toBe(true);
  });

  it('refuses a name that is not one safe path segment', async () => {
    const { catalog } = store();
    const staged = await catalog.begin('production', 'backups', '20260101T000000Z-cccccc', 'backup.json');
    expect(() => staged.scratchFile('../escape.part')).toThrow();
    expect(() => staged.scratchFile('a/b.part')).toThrow();
    await staged.abort();
  });
});
