#!/usr/bin/env node
// The operator CLI runs the same bundled code as the actions (dist/cli is built by `npm run build`);
// the installed package needs nothing from node_modules. Node's on-disk compile cache (Node >= 22.1)
// skips re-compiling the bundle on every call, which is most of a short command's start-up time.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import module from 'node:module';

module.enableCompileCache?.();

// `lifeline --version`: the package version and the commit it was built from (build-info.json,
// written when the package is packed), or the checkout's own commit when run from a clone.
// Only when asked: a git call on every start would cost every command its start-up time.
if (!process.env.LIFELINE_VERSION && process.argv.includes('--version')) {
  const root = new URL('..', import.meta.url);
  const read = (name) => {
    try {
      return JSON.parse(readFileSync(new URL(name, root), 'utf8'));
    } catch {
      return undefined;
    }
  };
  const info = read('build-info.json');
  let commit = info?.commit;
  if (!commit) {
    try {
      commit = execFileSync('git', ['rev-parse', 'HEAD'], { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    } catch {
      commit = 'unknown';
    }
  }
  process.env.LIFELINE_VERSION = `${read('package.json')?.version ?? '0.0.0'} (commit ${commit}${info?.dirty ? ', built with uncommitted changes' : ''})`;
}
await import('../dist/cli/index.js');
