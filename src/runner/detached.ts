import { spawn } from 'node:child_process';

/**
 * Starts a process that outlives this one's interest in it (detached, no stdio, not awaited), e.g.
 * a background `rm -rf` of a large directory. `onError` runs instead when it cannot be started,
 * synchronously or asynchronously (the tool is missing); it runs at most once.
 */
export function startDetached(tool: string, args: string[], onError: () => void): void {
  let failed = false;
  const fail = () => {
    if (failed) return;
    failed = true;
    onError();
  };
  try {
    const child = spawn(tool, args, { detached: true, stdio: 'ignore' });
    child.on('error', fail);
    child.unref();
  } catch {
    fail();
  }
}
