import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, chownSync, copyFileSync, cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { DockerEnvironment } from './docker';

/** uid/gid of the image's `postgres` user, as in the official image. */
export const POSTGRES_UID = 999;

const PG_MAJOR = '15';
const PG_BIN = `/usr/lib/postgresql/${PG_MAJOR}/bin`;
const PG_LIB = `/usr/lib/postgresql/${PG_MAJOR}/lib`;
const PG_SHARE = `/usr/share/postgresql/${PG_MAJOR}`;
const PG_TOOLS = ['postgres', 'initdb', 'pg_ctl', 'pg_dump', 'pg_dumpall', 'pg_restore', 'psql', 'pg_isready'];
const BUSYBOX_APPLETS = ['sh', 'cat', 'ls', 'rm', 'mkdir', 'printf', 'stat', 'id', 'sleep', 'test', 'true', 'false', 'echo', 'env', 'chmod', 'mktemp'];
/** Bumped whenever the layout below changes, so a cached root filesystem is rebuilt. */
const LAYOUT_VERSION = 'pg-image-1';

/** Where built root filesystems are cached across runs, by a hash of everything that goes into them. */
const CACHE_DIR = '/var/tmp/lifeline-test-images';

function sharedLibraries(binary: string): string[] {
  const ldd = spawnSync('ldd', [binary], { encoding: 'utf8' });
  if (ldd.status !== 0) return [];
  return [...ldd.stdout.matchAll(/(\/\S+) \(0x/g)].map((m) => m[1]!);
}

function copyInto(rootfs: string, file: string): void {
  const target = join(rootfs, file);
  mkdirSync(dirname(target), { recursive: true });
  copyFileSync(file, target);
  chmodSync(target, statSync(file).mode & 0o777);
}

/** Every input file with its size and mtime: the cache key changes when the host's packages change. */
function inputs(): string[] {
  const modules = readdirSync(PG_LIB)
    .filter((n) => n.endsWith('.so') && n !== 'llvmjit.so')
    .map((n) => join(PG_LIB, n));
  const binaries = [...PG_TOOLS.map((t) => join(PG_BIN, t)), ...modules, '/bin/busybox'];
  return [...new Set([...binaries, ...binaries.flatMap(sharedLibraries)])].sort();
}

/**
 * A PostgreSQL 15 image from this host's Debian binaries (server and client, their libraries,
 * share files and time zones) on a busybox-static root filesystem, running as `postgres` (uid 999)
 * with an empty /var/lib/postgresql/data it owns (a fresh named volume copies that owner). The root
 * filesystem is cached as a tar under /var/tmp by a hash of its inputs: a second run only imports it.
 */
export function buildPostgresImage(docker: DockerEnvironment, name = 'lifeline-test/postgres:15'): string {
  const files = inputs();
  const hash = createHash('sha256').update(LAYOUT_VERSION);
  for (const file of files) {
    const s = statSync(file);
    hash.update(`${file}\0${s.size}\0${s.mtimeMs}\n`);
  }
  const key = hash.digest('hex').slice(0, 16);
  mkdirSync(CACHE_DIR, { recursive: true, mode: 0o700 });
  const cached = join(CACHE_DIR, `postgres-${key}.tar`);
  if (!existsSync(cached)) {
    const rootfs = mkdtempSync(join(docker.root, 'pg-rootfs-'));
    try {
      for (const dir of ['bin', 'etc', 'tmp', 'var/lib/postgresql/data', 'var/run/postgresql']) mkdirSync(join(rootfs, dir), { recursive: true });
      chmodSync(join(rootfs, 'tmp'), 0o1777);
      copyInto(rootfs, '/bin/busybox');
      for (const applet of BUSYBOX_APPLETS) symlinkSync('busybox', join(rootfs, 'bin', applet));
      for (const file of files) if (file !== '/bin/busybox') copyInto(rootfs, file);
      cpSync(PG_SHARE, join(rootfs, PG_SHARE), { recursive: true, dereference: true });
      cpSync('/usr/share/zoneinfo', join(rootfs, 'usr/share/zoneinfo'), { recursive: true, dereference: true });
      writeFileSync(join(rootfs, 'etc', 'passwd'), `root:x:0:0:root:/root:/bin/sh\npostgres:x:${POSTGRES_UID}:${POSTGRES_UID}:postgres:/var/lib/postgresql:/bin/sh\n`);
      writeFileSync(join(rootfs, 'etc', 'group'), `root:x:0:\npostgres:x:${POSTGRES_UID}:\n`);
      for (const dir of ['var/lib/postgresql', 'var/lib/postgresql/data', 'var/run/postgresql']) chownSync(join(rootfs, dir), POSTGRES_UID, POSTGRES_UID);
      chmodSync(join(rootfs, 'var/lib/postgresql/data'), 0o700);
      const partial = `${cached}.${process.pid}.part`;
      const tar = spawnSync('tar', ['--numeric-owner', '-C', rootfs, '-cf', partial, '.'], { encoding: 'utf8' });
      if (tar.status !== 0) throw new Error(`tar of the postgres root filesystem failed: ${tar.stderr}`);
      renameSync(partial, cached);
    } finally {
      rmSync(rootfs, { recursive: true, force: true });
    }
  }
  const changes = [`USER ${POSTGRES_UID}:${POSTGRES_UID}`, `ENV PATH=${PG_BIN}:/usr/bin:/bin`, 'ENV TZ=UTC', 'ENV PGDATA=/var/lib/postgresql/data', 'WORKDIR /var/lib/postgresql'];
  const imported = spawnSync('docker', ['import', ...changes.flatMap((c) => ['-c', c]), cached, name], { env: { ...process.env, ...docker.env }, encoding: 'utf8' });
  if (imported.status !== 0) throw new Error(`docker import of the postgres image failed: ${imported.stderr}`);
  return name;
}
