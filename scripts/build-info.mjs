// Run by `npm pack` (prepack): records the commit the package is built from in build-info.json,
// which `lifeline --version` prints. Not committed: a commit cannot contain its own hash.
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';

const root = new URL('..', import.meta.url).pathname;
const { version } = JSON.parse(readFileSync(`${root}package.json`, 'utf8'));
let commit = 'unknown';
let dirty = false;
try {
  commit = execFileSync('git', ['rev-parse', 'HEAD'], { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  dirty = execFileSync('git', ['status', '--porcelain', '--untracked-files=no'], { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim() !== '';
} catch {
  // Not a git checkout (a tarball being repacked): the commit stays unknown.
}
writeFileSync(`${root}build-info.json`, `${JSON.stringify({ version, commit, dirty }, null, 2)}\n`);
console.error(`build-info.json: ${version} at ${commit}${dirty ? ' (uncommitted changes)' : ''}`);
