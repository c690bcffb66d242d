import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const tracked = new Set<string>();

/**
 * A temporary directory removed after the test file ends (by the afterAll that
 * test/helpers/temp-cleanup.ts registers in every file), even when its tests fail: test keys and
 * scratch files must not pile up in /tmp run after run.
 */
export function trackedTempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  tracked.add(dir);
  return dir;
}

export function removeTrackedTempDirs(): void {
  for (const dir of tracked) {
    rmSync(dir, { recursive: true, force: true });
    tracked.delete(dir);
  }
}
