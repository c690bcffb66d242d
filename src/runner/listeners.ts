import { lookup } from 'node:dns/promises';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { readdir, readFile, readlink } from 'node:fs/promises';
import { isIP } from 'node:net';
import { endianness, networkInterfaces } from 'node:os';
import { basename } from 'node:path';

/**
 * Who answers a health URL: the process that owns the LISTEN socket of the URL's port on this
 * host, found the way `ss -ltnp` finds it (/proc/net/tcp and tcp6 give the socket's inode, a scan
 * of /proc/[pid]/fd finds the processes holding `socket:[inode]`), and whether that process belongs
 * to a given container (its /proc/[pid]/cgroup names the container id, cgroup v1 or v2, or it
 * descends from the container's init, `State.Pid`). A health URL answered by anything else proves
 * nothing about the container.
 */

/** The words of the warning when the answer of a health URL could not be tied to the container (the docs and tests quote them). */
export const UNTIED_HEALTH = 'the answering process could not be tied to the container';

export interface ListenSocket {
  family: 4 | 6;
  /** The bound address as text (`0.0.0.0`, `127.0.0.1`, `::`, `::ffff:127.0.0.1`). */
  address: string;
  port: number;
  inode: number;
  uid: number;
}

export interface ProcessInfo {
  pid: number;
  /** The command line, arguments joined by spaces (or `[comm]` when it has none). */
  command: string;
  /** What /proc/[pid]/exe points at, when readable. */
  exe?: string;
}

/** What identifies a container on this host: its full id, its init's pid (`State.Pid`) and its addresses (`NetworkSettings.Networks`). */
export interface ContainerIdentity {
  id: string;
  pid: number;
  addresses: string[];
}

export type HealthProof =
  /** Every process holding a listening socket that can take the URL's connections belongs to one of the containers. */
  | { status: 'owned'; port: number; owners: (ProcessInfo & { container: string; how: string })[]; detail: string }
  /** At least one such process belongs to none of them: it may be what answered. */
  | { status: 'other'; port: number; strangers: ProcessInfo[]; detail: string }
  /** The answering process could not be tied to the container, for the reason given. */
  | { status: 'unknown'; port?: number; reason: string };

const LISTEN = '0A';
const MAX_ANCESTRY = 128;

/** The LISTEN sockets of /proc/net/tcp or /proc/net/tcp6 text. */
export function parseProcNetTcp(text: string, family: 4 | 6, littleEndian = endianness() === 'LE'): ListenSocket[] {
  const out: ListenSocket[] = [];
  for (const line of text.split('\n').slice(1)) {
    const fields = line.trim().split(/\s+/);
    if (fields.length < 10 || fields[3] !== LISTEN) continue;
    const [addressHex, portHex] = fields[1]!.split(':');
    if (!addressHex || !portHex) continue;
    out.push({ family, address: decodeAddress(addressHex, family, littleEndian), port: parseInt(portHex, 16), uid: Number(fields[7]), inode: Number(fields[9]) });
  }
  return out;
}

/** The kernel prints each 32-bit word of the address in host byte order. */
function decodeAddress(hex: string, family: 4 | 6, littleEndian: boolean): string {
  const words: number[][] = [];
  for (let i = 0; i < hex.length; i += 8) {
    const bytes = [0, 2, 4, 6].map((j) => parseInt(hex.slice(i + j, i + j + 2), 16));
    words.push(littleEndian ? bytes.reverse() : bytes);
  }
  const bytes = words.flat();
  if (family === 4) return bytes.join('.');
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((bytes[i]! << 8) | bytes[i + 1]!).toString(16));
  if (groups.slice(0, 5).every((g) => g === '0') && groups[5] === 'ffff') return `::ffff:${bytes.slice(12).join('.')}`;
  return compressV6(groups);
}

function compressV6(groups: string[]): string {
  let best = -1;
  let bestLength = 0;
  for (let i = 0; i < groups.length;) {
    if (groups[i] !== '0') {
      i++;
      continue;
    }
    let j = i;
    while (j < groups.length && groups[j] === '0') j++;
    if (j - i > bestLength) [best, bestLength] = [i, j - i];
    i = j;
  }
  if (bestLength < 2) return groups.join(':');
  return `${groups.slice(0, best).join(':')}::${groups.slice(best + bestLength).join(':')}`;
}

/** Every LISTEN TCP socket on `port` in this process's network namespace. */
export async function listeningSockets(port: number, procRoot = '/proc'): Promise<ListenSocket[]> {
  const out: ListenSocket[] = [];
  for (const [file, family] of [
    ['tcp', 4],
    ['tcp6', 6],
  ] as const) {
    const text = await readFile(`${procRoot}/net/${file}`, 'utf8').catch(() => '');
    out.push(...parseProcNetTcp(text, family).filter((s) => s.port === port));
  }
  return out;
}

/**
 * The processes holding each socket inode. `unreadable` counts processes whose fd table could not
 * be read (not root, another user's process): an inode with no owner may be held by one of them.
 */
export async function socketOwners(inodes: Iterable<number>, procRoot = '/proc'): Promise<{ owners: Map<number, ProcessInfo[]>; unreadable: number }> {
  const wanted = new Map([...inodes].map((inode) => [`socket:[${inode}]`, inode]));
  const owners = new Map<number, ProcessInfo[]>();
  let unreadable = 0;
  const pids = (await readdir(procRoot)).filter((name) => /^\d+$/.test(name)).map(Number);
  for (const pid of pids) {
    let fds: string[];
    try {
      fds = await readdir(`${procRoot}/${pid}/fd`);
    } catch (error) {
      // Gone meanwhile is nothing; no permission is a process we cannot rule out.
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT' && (error as NodeJS.ErrnoException).code !== 'ESRCH') unreadable++;
      continue;
    }
    const found = new Set<number>();
    for (const fd of fds) {
      const target = await readlink(`${procRoot}/${pid}/fd/${fd}`).catch(() => '');
      const inode = wanted.get(target);
      if (inode !== undefined) found.add(inode);
    }
    if (found.size === 0) continue;
    const info = await processInfo(pid, procRoot);
    for (const inode of found) owners.set(inode, [...(owners.get(inode) ?? []), info]);
  }
  return { owners, unreadable };
}

export async function processInfo(pid: number, procRoot = '/proc'): Promise<ProcessInfo> {
  const raw = await readFile(`${procRoot}/${pid}/cmdline`, 'utf8').catch(() => '');
  let command = raw.replace(/\0+$/, '').split('\0').join(' ');
  if (!command) command = `[${(await readFile(`${procRoot}/${pid}/comm`, 'utf8').catch(() => '?')).trim()}]`;
  const exe = await readlink(`${procRoot}/${pid}/exe`).catch(() => undefined);
  return { pid, command, ...(exe ? { exe } : {}) };
}

/** The parent pid, from /proc/[pid]/stat (the command name in parentheses may hold spaces and parentheses). */
async function parentPid(pid: number, procRoot: string): Promise<number | undefined> {
  const stat = await readFile(`${procRoot}/${pid}/stat`, 'utf8').catch(() => '');
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ppid = Number(rest[1]);
  return Number.isInteger(ppid) && ppid > 0 ? ppid : undefined;
}

/**
 * How `pid` belongs to the container, or undefined when it does not: its cgroup path names the
 * container's full id (Docker's cgroupfs driver `/docker/<id>`, systemd `docker-<id>.scope`, v1 or
 * v2), or it is the container's init or one of its descendants.
 */
export async function containerMembership(pid: number, container: ContainerIdentity, procRoot = '/proc'): Promise<string | undefined> {
  const cgroup = await readFile(`${procRoot}/${pid}/cgroup`, 'utf8').catch(() => '');
  if (container.id.length >= 64 && cgroup.includes(container.id)) return 'its cgroup names the container';
  // pid 1 (or 0) would make every process a descendant: only a real container init counts.
  if (container.pid > 1) {
    let current: number | undefined = pid;
    for (let i = 0; current !== undefined && i < MAX_ANCESTRY; i++) {
      if (current === container.pid) return i === 0 ? "it is the container's init (State.Pid)" : `it descends from the container's init (pid ${container.pid})`;
      if (current === 1) break;
      current = await parentPid(current, procRoot);
    }
  }
  return undefined;
}

/** For docker-proxy (published ports in bridge mode): the container address it forwards to, from `-container-ip`. */
export function dockerProxyTarget(info: ProcessInfo): string | undefined {
  const program = basename(info.exe?.replace(/ \(deleted\)$/, '') ?? info.command.split(' ')[0] ?? '');
  if (program !== 'docker-proxy') return undefined;
  const args = info.command.split(' ');
  const at = args.indexOf('-container-ip');
  return at >= 0 ? args[at + 1] : undefined;
}

function isLoopback(address: string): boolean {
  return address.startsWith('127.') || address === '::1' || address.startsWith('::ffff:127.');
}

function localAddresses(): Set<string> {
  const out = new Set<string>();
  for (const list of Object.values(networkInterfaces())) for (const entry of list ?? []) out.add(entry.address.replace(/%.*$/, ''));
  return out;
}

/** Does a socket bound to `bound` take connections to `target`? (The kernel prefers the exact address; both count here.) */
function accepts(bound: ListenSocket, target: string): boolean {
  const targetV4 = isIP(target) === 4 ? target : target.startsWith('::ffff:') ? target.slice(7) : undefined;
  if (bound.address === target) return true;
  if (bound.family === 4) return bound.address === '0.0.0.0' ? targetV4 !== undefined : bound.address === targetV4;
  // An IPv6 wildcard takes IPv4 too unless the socket is v6-only (not visible here: counted).
  if (bound.address === '::') return true;
  return targetV4 !== undefined && bound.address === `::ffff:${targetV4}`;
}

/** Where the URL connects: its port and the addresses its host resolves to. */
async function urlTarget(url: string): Promise<{ port: number; addresses: string[] } | { reason: string }> {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return { reason: `${url} is not a URL` };
  }
  const port = parsed.port ? Number(parsed.port) : parsed.protocol === 'https:' ? 443 : parsed.protocol === 'http:' ? 80 : NaN;
  if (!Number.isInteger(port)) return { reason: `${url} is not an http or https URL` };
  const host = parsed.hostname.replace(/^\[|\]$/g, '');
  if (isIP(host)) return { port, addresses: [host] };
  try {
    const found = await lookup(host, { all: true });
    return { port, addresses: found.map((a) => a.address) };
  } catch (error) {
    return { reason: `${host} does not resolve (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})` };
  }
}

export interface ProveOptions {
  procRoot?: string;
  /** False when the Docker engine runs elsewhere (DOCKER_HOST on another host): its pids mean nothing here. */
  engineOnThisHost?: boolean;
}

/**
 * Ties the answer of `url` to `containers` (the service's new containers), or says why it cannot.
 * Strict: every process holding a listening socket that can take the URL's connections must belong
 * to one of them (docker-proxy counts when it forwards to one of their addresses), since the kernel
 * may hand a connection to any of them.
 */
export async function proveHealthOwner(url: string, containers: ContainerIdentity[], options: ProveOptions = {}): Promise<HealthProof> {
  const procRoot = options.procRoot ?? '/proc';
  const target = await urlTarget(url);
  if ('reason' in target) return { status: 'unknown', reason: target.reason };
  const { port } = target;
  const local = localAddresses();
  const remote = target.addresses.filter((a) => !isLoopback(a) && !local.has(a));
  if (remote.length) return { status: 'unknown', port, reason: `${url} points at ${remote.join(', ')}, not an address of this host, so its listener cannot be looked up here` };
  if (options.engineOnThisHost === false)
    return {
      status: 'unknown',
      port,
      reason:
        'the docker CLI does not reach the engine through a local unix socket (DOCKER_HOST is tcp:// or ssh://, or DOCKER_CONTEXT names a context), so the engine may be on another host and its container pids cannot be looked up here',
    };
  if (containers.length === 0) return { status: 'unknown', port, reason: 'no container to tie the answer to' };

  const sockets = (await listeningSockets(port, procRoot)).filter((s) => target.addresses.some((a) => accepts(s, a)));
  if (sockets.length === 0) {
    // The containers share this network namespace (network_mode: host, Lifeline on the host): had
    // one of them answered, its socket would be here. What answered has gone (a stray that held the
    // port through the checks and left): a failure, never an unprovable pass.
    if (await sharesNetworkNamespace(containers, procRoot)) {
      return {
        status: 'other',
        port,
        strangers: [],
        detail: `nothing listens on port ${port} any more, in the network namespace ${containers.length > 1 ? 'the containers share' : 'the container shares'} with Lifeline: what answered was not the container (it has gone), or the container stopped listening`,
      };
    }
    return {
      status: 'unknown',
      port,
      reason: `no listening socket for port ${port} in this network namespace (answered through NAT, or Lifeline runs in another network namespace than the containers)`,
    };
  }
  const { owners, unreadable } = await socketOwners(
    sockets.map((s) => s.inode),
    procRoot,
  );
  const orphaned = sockets.filter((s) => !owners.get(s.inode)?.length);
  if (orphaned.length) {
    const why = unreadable
      ? `${unreadable} processes' open files could not be read (Lifeline needs to run as root, or as the containers' user, to see them)`
      : 'no process visible here holds it (Lifeline runs in another PID namespace than the containers)';
    return { status: 'unknown', port, reason: `the socket listening on ${orphaned.map((s) => `${s.address}:${port}`).join(', ')} could not be tied to a process: ${why}` };
  }

  const tied: (ProcessInfo & { container: string; how: string })[] = [];
  const strangers: ProcessInfo[] = [];
  for (const info of new Map(sockets.flatMap((s) => owners.get(s.inode)!).map((o) => [o.pid, o])).values()) {
    let match: { container: string; how: string } | undefined;
    for (const container of containers) {
      const how = await containerMembership(info.pid, container, procRoot);
      if (how) {
        match = { container: container.id, how };
        break;
      }
    }
    const proxied = match ? undefined : dockerProxyTarget(info);
    if (proxied) {
      const forwarded = containers.find((c) => c.addresses.includes(proxied));
      if (forwarded) match = { container: forwarded.id, how: `docker-proxy forwarding to its address ${proxied}` };
    }
    if (match) tied.push({ ...info, ...match });
    else strangers.push(info);
  }
  if (strangers.length) {
    return {
      status: 'other',
      port,
      strangers,
      detail: `port ${port} is held by ${strangers.map(describeProcess).join(', ')}, which ${strangers.length === 1 ? 'is' : 'are'} not a process of the container${containers.length === 1 ? '' : 's'} ${containers.map((c) => c.id.slice(0, 12)).join(', ')}`,
    };
  }
  return {
    status: 'owned',
    port,
    owners: tied,
    detail: `answered on port ${port} by ${tied.map((t) => `${describeProcess(t)} in container ${t.container.slice(0, 12)} (${t.how})`).join(', ')}`,
  };
}

export function describeProcess(info: ProcessInfo): string {
  const command = info.command.length > 160 ? `${info.command.slice(0, 157)}...` : info.command;
  return `pid ${info.pid} (${command})`;
}

/** True when the docker CLI talks to an engine on this host: DOCKER_HOST unset or a unix socket, no other context chosen. */
export function engineOnThisHost(env: NodeJS.ProcessEnv): boolean {
  const host = env.DOCKER_HOST;
  const context = env.DOCKER_CONTEXT;
  return (!host || host.startsWith('unix://') || host.startsWith('npipe://')) && (!context || context === 'default');
}

/**
 * One GET of a health URL over a connection of its own (no keep-alive, no pooling), closed after
 * the answer: every answer then comes through a connection made now, so it came from whatever
 * holds the LISTEN socket now. A pooled connection would let a process that has already handed the
 * port over keep answering for it (an attack on the ownership proof). `answered`: any HTTP
 * response at all; `ok`: a 2xx one.
 */
export function freshHttpStatus(url: string, timeoutMs: number): Promise<{ ok: boolean; answered: boolean; detail: string }> {
  return new Promise((resolve) => {
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch (error) {
      resolve({ ok: false, answered: false, detail: (error as Error).message });
      return;
    }
    const request = (parsed.protocol === 'https:' ? httpsRequest : httpRequest)(parsed, { method: 'GET', agent: false, headers: { connection: 'close' }, timeout: timeoutMs }, (response) => {
      const status = response.statusCode ?? 0;
      response.resume();
      response.on('error', () => {});
      request.destroy();
      resolve({ ok: status >= 200 && status < 300, answered: true, detail: `HTTP ${status}` });
    });
    request.on('timeout', () => request.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    request.on('error', (error: NodeJS.ErrnoException) => resolve({ ok: false, answered: false, detail: error.code ?? error.message }));
    request.end();
  });
}

/** True when one of the containers' init processes is in this process's network namespace (host networking). */
async function sharesNetworkNamespace(containers: ContainerIdentity[], procRoot: string): Promise<boolean> {
  let own: string;
  try {
    own = await readlink(`${procRoot}/self/ns/net`);
  } catch {
    return false;
  }
  for (const container of containers) {
    if (container.pid <= 1) continue;
    try {
      if ((await readlink(`${procRoot}/${container.pid}/ns/net`)) === own) return true;
    } catch {
      // gone or unreadable: cannot say
    }
  }
  return false;
}
