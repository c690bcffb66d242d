import { spawn, type ChildProcess } from 'node:child_process';
import { copyFileSync, linkSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { containerMembership, dockerProxyTarget, engineOnThisHost, freshHttpStatus, listeningSockets, parseProcNetTcp, proveHealthOwner } from '../../src/runner/listeners';
import { judgeProof } from '../../src/deploy/health';
import { freePort, stopPid, waitFor } from '../../src/runner/ports';

const FAKE_ID = 'a'.repeat(64);

/** Listens on 127.0.0.1:port in this process. */
async function listenHere(port: number, reusePort = false): Promise<Server> {
  const server = createServer((socket) => socket.end());
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ port, host: '127.0.0.1', reusePort }, resolve);
  });
  return server;
}

/** A child node process listening on the port (optionally under another program name), resolved once it listens. */
async function listenInChild(port: number, program = process.execPath, extra: string[] = [], reusePort = false): Promise<ChildProcess> {
  const code = `require('net').createServer(s => s.end()).listen({ port: ${port}, host: '127.0.0.1', reusePort: ${reusePort} }, () => console.log('up'))`;
  const child = spawn(program, ['-e', code, '--', ...extra], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    child.stdout!.once('data', () => resolve());
    child.once('exit', (code) => reject(new Error(`the listener exited (${code})`)));
  });
  return child;
}

describe('who owns a listening socket (real sockets, real /proc)', () => {
  const children: ChildProcess[] = [];
  const dirs: string[] = [];
  afterAll(async () => {
    for (const child of children) if (child.pid && child.exitCode === null) await stopPid(child.pid, 'SIGKILL', 5000).catch(() => {});
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  });

  it('parses /proc/net/tcp and tcp6 LISTEN lines (host byte order, mapped and compressed IPv6)', () => {
    const v4 = [
      '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode',
      '   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0',
      '   1: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4243 1 0000000000000000 100 0 0 10 0',
      '   2: 0100007F:1F90 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000     0        0 4244 1 0000000000000000 100 0 0 10 0',
    ].join('\n');
    expect(parseProcNetTcp(v4, 4, true)).toEqual([
      { family: 4, address: '127.0.0.1', port: 8080, uid: 0, inode: 4242 },
      { family: 4, address: '0.0.0.0', port: 80, uid: 1000, inode: 4243 },
    ]);
    const v6 = [
      '  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode',
      '   0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5001 1 0000000000000000 100 0 0 10 0',
      '   1: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5002 1 0000000000000000 100 0 0 10 0',
      '   2: 0000000000000000FFFF00000100007F:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5003 1 0000000000000000 100 0 0 10 0',
    ].join('\n');
    expect(parseProcNetTcp(v6, 6, true).map((s) => s.address)).toEqual(['::', '::1', '::ffff:127.0.0.1']);
  });

  it('finds this process as the owner of a node server it runs, and never ties it to a container it is not in', async () => {
    const port = await freePort();
    const server = await listenHere(port);
    try {
      const sockets = await listeningSockets(port);
      expect(sockets).toHaveLength(1);
      expect(sockets[0]).toMatchObject({ family: 4, address: '127.0.0.1', port });
      const proof = await proveHealthOwner(`http://127.0.0.1:${port}/health`, [{ id: FAKE_ID, pid: 999_999_999, addresses: [] }]);
      expect(proof.status).toBe('other');
      if (proof.status !== 'other') return;
      expect(proof.strangers.map((s) => s.pid)).toEqual([process.pid]);
      expect(proof.detail).toContain(`port ${port} is held by pid ${process.pid} (`);
      expect(proof.detail).toContain(`not a process of the container ${FAKE_ID.slice(0, 12)}`);
      // localhost resolves to a loopback address: the same listener is found.
      expect((await proveHealthOwner(`http://localhost:${port}/`, [{ id: FAKE_ID, pid: 999_999_999, addresses: [] }])).status).toBe('other');
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });

  it("ties a child process's socket to a 'container' whose init is its ancestor, and to no other", async () => {
    const port = await freePort();
    const child = await listenInChild(port);
    children.push(child);
    // This test process stands in for the container's init: the listener descends from it.
    const proof = await proveHealthOwner(`http://127.0.0.1:${port}/health`, [{ id: FAKE_ID, pid: process.pid, addresses: [] }]);
    expect(proof).toMatchObject({ status: 'owned', port });
    if (proof.status === 'owned') {
      expect(proof.owners.map((o) => o.pid)).toEqual([child.pid]);
      expect(proof.detail).toContain(`descends from the container's init (pid ${process.pid})`);
    }
    // The child itself as State.Pid: it is the init.
    expect(await containerMembership(child.pid!, { id: FAKE_ID, pid: child.pid!, addresses: [] })).toContain("container's init");
    // A container with another init: the child is a stranger, named with its command line.
    const other = await proveHealthOwner(`http://127.0.0.1:${port}/health`, [{ id: FAKE_ID, pid: 999_999_999, addresses: [] }]);
    expect(other.status).toBe('other');
    if (other.status === 'other') expect(other.detail).toContain(`pid ${child.pid} (${process.execPath} -e`);
  });

  it('counts every listener on the port: a stray sharing it with SO_REUSEPORT (the kernel spreads connections over both) is a stranger', async () => {
    const port = await freePort();
    const child = await listenInChild(port, process.execPath, [], true);
    children.push(child);
    const url = `http://127.0.0.1:${port}/health`;
    const container = [{ id: FAKE_ID, pid: child.pid!, addresses: [] }];
    expect((await proveHealthOwner(url, container)).status).toBe('owned');
    const stray = await listenHere(port, true);
    try {
      expect(await listeningSockets(port)).toHaveLength(2);
      const proof = await proveHealthOwner(url, container);
      expect(proof.status).toBe('other');
      if (proof.status === 'other') expect(proof.strangers.map((s) => s.pid)).toEqual([process.pid]);
    } finally {
      await new Promise((resolve) => stray.close(resolve));
    }
  });

  it("accepts docker-proxy only when it forwards to the container's address", async () => {
    const dir = mkdtempSync(join(tmpdir(), 'lifeline-proxy-'));
    dirs.push(dir);
    const program = join(dir, 'docker-proxy');
    // The node binary under docker-proxy's name (a hard link when possible): /proc/[pid]/exe says docker-proxy.
    try {
      linkSync(process.execPath, program);
    } catch {
      copyFileSync(process.execPath, program);
    }
    const port = await freePort();
    const proxy = await listenInChild(port, program, ['-proto', 'tcp', '-host-ip', '127.0.0.1', '-host-port', String(port), '-container-ip', '172.17.0.5', '-container-port', '80']);
    children.push(proxy);
    const url = `http://127.0.0.1:${port}/health`;
    const ours = await proveHealthOwner(url, [{ id: FAKE_ID, pid: 999_999_999, addresses: ['172.17.0.5'] }]);
    expect(ours.status).toBe('owned');
    if (ours.status === 'owned') expect(ours.detail).toContain('docker-proxy forwarding to its address 172.17.0.5');
    expect((await proveHealthOwner(url, [{ id: FAKE_ID, pid: 999_999_999, addresses: ['172.17.0.6'] }])).status).toBe('other');
    expect(dockerProxyTarget({ pid: 1, command: '/usr/bin/node -container-ip 10.0.0.1' })).toBeUndefined();
  });

  it('reads the container id from cgroup v1 and v2 paths', async () => {
    const proc = mkdtempSync(join(tmpdir(), 'lifeline-proc-'));
    dirs.push(proc);
    const lines: Record<number, string> = {
      101: `12:memory:/docker/${FAKE_ID}\n0::/\n`,
      102: `0::/system.slice/docker-${FAKE_ID}.scope\n`,
      103: `0::/kubepods/besteffort/pod1/${'b'.repeat(64)}\n`,
    };
    for (const [pid, text] of Object.entries(lines)) {
      mkdirSync(join(proc, pid));
      writeFileSync(join(proc, pid, 'cgroup'), text);
      writeFileSync(join(proc, pid, 'stat'), `${pid} (httpd) S 1 ${pid} ${pid} 0 -1`);
    }
    const container = { id: FAKE_ID, pid: 0, addresses: [] };
    expect(await containerMembership(101, container, proc)).toBe('its cgroup names the container');
    expect(await containerMembership(102, container, proc)).toBe('its cgroup names the container');
    expect(await containerMembership(103, container, proc)).toBeUndefined();
  });

  it('says why it cannot tie the answer: another host, a remote engine, nothing listening', async () => {
    const container = [{ id: FAKE_ID, pid: 999_999_999, addresses: [] }];
    const remote = await proveHealthOwner('http://192.0.2.10:8000/health', container);
    expect(remote).toMatchObject({ status: 'unknown' });
    if (remote.status === 'unknown') expect(remote.reason).toContain('not an address of this host');
    const port = await freePort();
    const engine = await proveHealthOwner(`http://127.0.0.1:${port}/`, container, { engineOnThisHost: false });
    expect(engine.status).toBe('unknown');
    if (engine.status === 'unknown') expect(engine.reason).toContain('may be on another host');
    const none = await proveHealthOwner(`http://127.0.0.1:${port}/`, container);
    expect(none.status).toBe('unknown');
    if (none.status === 'unknown') expect(none.reason).toContain(`no listening socket for port ${port}`);
    expect(engineOnThisHost({})).toBe(true);
    expect(engineOnThisHost({ DOCKER_HOST: 'unix:///run/docker.sock' })).toBe(true);
    expect(engineOnThisHost({ DOCKER_HOST: 'ssh://deploy@db1' })).toBe(false);
    expect(engineOnThisHost({ DOCKER_CONTEXT: 'prod' })).toBe(false);
  });

  it("an unprivileged Lifeline that cannot read a root process's fds says so instead of passing", async () => {
    if (process.getuid?.() !== 0) return;
    const port = await freePort();
    const child = await listenInChild(port);
    children.push(child);
    // Run the proof as nobody: it cannot read the root-owned listener's fd table.
    const script = `import('${join(import.meta.dirname, '../../src/runner/listeners.ts')}').then(async (m) => { const p = await m.proveHealthOwner('http://127.0.0.1:${port}/', [{ id: '${FAKE_ID}', pid: 999_999_999, addresses: [] }]); console.log(JSON.stringify(p)); })`;
    const run = spawn('runuser', ['-u', 'nobody', '--', process.execPath, '--import', 'tsx', '-e', script], { cwd: join(import.meta.dirname, '../..'), stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    run.stdout!.on('data', (c) => (out += c));
    run.stderr!.on('data', (c) => (err += c));
    await new Promise((resolve) => run.on('close', resolve));
    await waitFor(async () => out.length > 0 || err.length > 0, { timeoutMs: 1000, what: 'output' }).catch(() => {});
    const proof = JSON.parse(out.trim() || `{"error": ${JSON.stringify(err)}}`);
    expect(proof, err).toMatchObject({ status: 'unknown' });
    expect(proof.reason).toContain('could not be read');
  });
});

describe('what a proof means for a deploy', () => {
  const url = 'http://127.0.0.1:3000/health';
  it('fails on a stranger with its pid, port and the fix; passes on the container; warns or fails when it cannot tell', () => {
    const other = judgeProof(
      'web',
      url,
      {
        status: 'other',
        port: 3000,
        strangers: [{ pid: 4242, command: 'python3 -m http.server 3000' }],
        detail: 'port 3000 is held by pid 4242 (python3 -m http.server 3000), which is not a process of the container 1a2b3c4d5e6f',
      },
      false,
    );
    expect(other.failed?.reason).toContain("is not answered by web's new container: port 3000 is held by pid 4242 (python3 -m http.server 3000)");
    expect(other.failed?.fix).toContain('kill 4242');
    expect(other.failed?.fix).toContain("ss -ltnp 'sport = :3000'");
    expect(judgeProof('web', url, { status: 'owned', port: 3000, owners: [], detail: 'answered on port 3000 by pid 7 (node server.js) in container 1a2b3c4d5e6f' }, true)).toEqual({
      info: `web: ${url} answered on port 3000 by pid 7 (node server.js) in container 1a2b3c4d5e6f`,
    });
    const unknown = { status: 'unknown' as const, port: 3000, reason: 'no process visible here holds it' };
    const warned = judgeProof('web', url, unknown, false);
    expect(warned.failed).toBeUndefined();
    expect(warned.warning).toBe(
      `web: the answering process could not be tied to the container (${url}: no process visible here holds it); its 2xx was accepted (set compose.requireOwnedHealth: true to refuse such answers)`,
    );
    const strict = judgeProof('web', url, unknown, true);
    expect(strict.failed?.reason).toContain('compose.requireOwnedHealth is true');
    expect(strict.warning).toBeUndefined();
  });
});

describe('attacks on the proof (outside review)', () => {
  it('asks each health question over a connection of its own, so a process that handed the port over cannot keep answering', async () => {
    const { createServer } = await import('node:http');
    let connections = 0;
    const server = createServer((_req, res) => res.end('ok')).on('connection', () => connections++);
    server.keepAliveTimeout = 60_000;
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as import('node:net').AddressInfo;
    try {
      for (let i = 0; i < 3; i++) expect(await freshHttpStatus(`http://127.0.0.1:${port}/health`, 2000)).toEqual({ ok: true, answered: true, detail: 'HTTP 200' });
      expect(connections).toBe(3);
    } finally {
      server.closeAllConnections();
      server.close();
    }
    expect(await freshHttpStatus(`http://127.0.0.1:${port}/health`, 2000)).toMatchObject({ ok: false, answered: false, detail: 'ECONNREFUSED' });
  });

  it('a 2xx with nothing listening any more, in the namespace the container shares with Lifeline, is a failure, not "unknown"', async () => {
    const { createServer } = await import('node:net');
    const probe = createServer();
    await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
    const { port } = probe.address() as import('node:net').AddressInfo;
    await new Promise((resolve) => probe.close(resolve));
    // This process stands for a container on the host network: same network namespace.
    const proof = await proveHealthOwner(`http://127.0.0.1:${port}/health`, [{ id: 'c'.repeat(64), pid: process.pid, addresses: [] }]);
    expect(proof).toMatchObject({ status: 'other', port, strangers: [], detail: expect.stringMatching(/nothing listens on port \d+ any more/) });
    expect(judgeProof('web', `http://127.0.0.1:${port}/health`, proof, false).failed?.reason).toMatch(/proves nothing about web/);
    // Without a container pid to compare namespaces with, it stays unknown (a warning).
    expect(await proveHealthOwner(`http://127.0.0.1:${port}/health`, [{ id: 'c'.repeat(64), pid: 0, addresses: [] }])).toMatchObject({ status: 'unknown' });
  });
});
