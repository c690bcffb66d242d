// Builds every bundle with @vercel/ncc: dist/<action>/index.js, dist/main (the root action) and dist/cli.
import { spawn } from 'node:child_process';
import { readdirSync, rmSync, existsSync, renameSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const entries = readdirSync(join(root, 'src/actions'), { withFileTypes: true })
  .filter((d) => d.isDirectory() && existsSync(join(root, 'src/actions', d.name, 'index.ts')))
  .map((d) => ({ name: d.name, entry: `src/actions/${d.name}/index.ts` }));
entries.push({ name: 'cli', entry: 'src/cli/index.ts' });

// `node scripts/build.mjs backup cli` rebuilds only those bundles; no argument rebuilds all from scratch.
const only = process.argv.slice(2);
if (only.length) {
  const unknown = only.filter((n) => !entries.some((e) => e.name === n));
  if (unknown.length) throw new Error(`unknown bundle(s): ${unknown.join(', ')}; known: ${entries.map((e) => e.name).join(', ')}`);
  entries.splice(0, entries.length, ...entries.filter((e) => only.includes(e.name)));
  for (const e of entries) rmSync(join(root, 'dist', e.name), { recursive: true, force: true });
} else {
  rmSync(join(root, 'dist'), { recursive: true, force: true });
}

function build({ name, entry }) {
  return new Promise((resolve, reject) => {
    const out = join(root, 'dist', name);
    const child = spawn(process.execPath, [join(root, 'node_modules/@vercel/ncc/dist/ncc/cli.js'), 'build', entry, '-o', out, '--target', 'es2023', '--transpile-only', '-q'], { cwd: root, stdio: 'inherit' });
    child.on('close', (code) => {
      if (code !== 0) return reject(new Error(`ncc failed for ${entry}`));
      // ncc writes index.mjs for ESM input in some versions; the action runner wants index.js.
      if (existsSync(join(out, 'index.mjs')) && !existsSync(join(out, 'index.js'))) renameSync(join(out, 'index.mjs'), join(out, 'index.js'));
      // Remove absolute build paths so the bundle is byte-identical on every machine.
      const file = join(out, 'index.js');
      writeFileSync(file, readFileSync(file, 'utf8').split(root).join('./'));
      resolve();
    });
  });
}

const queue = [...entries];
const workers = Array.from({ length: 2 }, async () => {
  while (queue.length) await build(queue.shift());
});
await Promise.all(workers);
// ncc's asset relocator copies files it thinks the code reads at run time (it read
// `resolve(cwd, 'lifeline.yml')` as a glob once). Nothing but code belongs in dist/.
const stray = [];
const walk = (dir) => {
  for (const d of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, d.name);
    if (d.isDirectory()) walk(path);
    else if (!/\.js$/.test(d.name) && d.name !== 'package.json') stray.push(path.slice(root.length));
  }
};
walk(join(root, 'dist'));
if (stray.length) throw new Error(`the bundler copied assets into dist/ (find the path expression that made it, e.g. path.resolve(<variable>, 'file')):\n  ${stray.join('\n  ')}`);
console.log(`built ${entries.length} bundles: ${entries.map((e) => `dist/${e.name}/index.js`).join(', ')}`);
