// Whose leftovers a drill may reap: an owner is judged only from its own PID namespace and host.
// A drill in a runner container sharing /tmp (another PID namespace) once saw every recorded owner
// as dead and deleted the data directories of clusters that were still serving.
import { spawn, spawnSync } from 'node:child_process';
import { readlinkSync } from 'node:fs';
import { hostname } from 'node:os';
import { describe, expect, it } from 'vitest';
import { ownerAlive, selfOwner } from '../../src/runner/leftovers';

describe('leftover owners', () => {
  it('records the PID namespace and host with the pid', () => {
    const owner = selfOwner();
    expect(owner).toMatchObject({ pid: process.pid, pidns: readlinkSync('/proc/self/ns/pid'), host: hostname() });
    expect(ownerAlive(owner)).toBe(true);
  });

  it('a dead owner in this namespace is gone; one recorded elsewhere is never judged dead', async () => {
    const child = spawn('true');
    await new Promise((resolve) => child.on('close', resolve));
    const here = { ...selfOwner(), pid: child.pid!, started: '1' };
    expect(ownerAlive(here)).toBe(false);
    expect(ownerAlive({ ...here, pidns: 'pid:[1]' })).toBe(true);
    expect(ownerAlive({ ...here, host: `${hostname()}-other` })).toBe(true);
    // Records written before namespaces were recorded keep the old rule.
    expect(ownerAlive({ pid: child.pid!, started: '1' })).toBe(false);
  });

  it('seen from a new PID namespace, this live process is not judged dead', () => {
    const owner = JSON.stringify(selfOwner());
    const script = `import('${new URL('../../src/runner/leftovers.ts', import.meta.url).pathname}').then((m) => console.log(m.ownerAlive(${owner})))`;
    const run = spawnSync('unshare', ['--pid', '--fork', '--mount-proc', process.execPath, '--import', 'tsx', '-e', script], { encoding: 'utf8', cwd: new URL('../..', import.meta.url).pathname });
    if (run.status !== 0 && /Operation not permitted|cannot/.test(run.stderr)) return void console.warn(`unshare is not permitted here: ${run.stderr}`);
    expect(run.stderr).toBe('');
    expect(run.stdout.trim()).toBe('true');
  });
});
