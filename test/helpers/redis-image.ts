import { spawnSync } from 'node:child_process';
import { chmodSync, chownSync, copyFileSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { DockerEnvironment } from './docker';

/** The uid/gid the image's `redis` user has, as in the official image: the data files must stay readable to it. */
export const REDIS_UID = 999;

const BUSYBOX_APPLETS = ['sh', 'cat', 'ls', 'rm', 'mkdir', 'printf', 'stat', 'id', 'sleep', 'test', 'true', 'false', 'echo', 'env'];

/** The shared libraries a binary needs, as `ldd` lists them (absolute paths). */
function sharedLibraries(binary: string): string[] {
  const ldd = spawnSync('ldd', [binary], { encoding: 'utf8' });
  if (ldd.status !== 0) throw new Error(`ldd ${binary} failed: ${ldd.stderr}`);
  return [...ldd.stdout.matchAll(/(\/\S+) \(0x/g)].map((m) => m[1]!);
}

/**
 * A Redis image built from this host's redis-server and redis-cli plus their shared libraries,
 * on a busybox-static root filesystem, imported with `docker import` (nothing can be pulled here).
 * It has a `redis` user (uid 999) and a /data directory it owns, like the official image.
 */
export function buildRedisImage(docker: DockerEnvironment, name = 'lifeline-test/redis:7'): string {
  const rootfs = mkdtempSync(join(docker.root, 'redis-rootfs-'));
  try {
    for (const dir of ['bin', 'usr/bin', 'etc', 'tmp', 'data']) mkdirSync(join(rootfs, dir), { recursive: true });
    chmodSync(join(rootfs, 'tmp'), 0o1777);
    copyFileSync('/bin/busybox', join(rootfs, 'bin', 'busybox'));
    chmodSync(join(rootfs, 'bin', 'busybox'), 0o755);
    for (const applet of BUSYBOX_APPLETS) symlinkSync('busybox', join(rootfs, 'bin', applet));
    const binaries = ['/usr/bin/redis-server', '/usr/bin/redis-cli'];
    const libraries = new Set(binaries.flatMap(sharedLibraries));
    for (const file of [...binaries, ...libraries]) {
      const target = join(rootfs, file);
      mkdirSync(dirname(target), { recursive: true });
      copyFileSync(file, target);
      chmodSync(target, 0o755);
    }
    // Like the official image: redis-check-rdb is the same program (it dispatches on its name).
    symlinkSync('redis-server', join(rootfs, 'usr', 'bin', 'redis-check-rdb'));
    writeFileSync(join(rootfs, 'etc', 'passwd'), `root:x:0:0:root:/root:/bin/sh\nredis:x:${REDIS_UID}:${REDIS_UID}:redis:/data:/bin/false\n`);
    writeFileSync(join(rootfs, 'etc', 'group'), `root:x:0:\nredis:x:${REDIS_UID}:\n`);
    chownSync(join(rootfs, 'data'), REDIS_UID, REDIS_UID);
    const imported = spawnSync('sh', ['-c', `tar --numeric-owner -C "$0" -c . | docker import -c 'USER ${REDIS_UID}:${REDIS_UID}' -c 'WORKDIR /data' - "$1"`, rootfs, name], {
      env: { ...process.env, ...docker.env },
      encoding: 'utf8',
    });
    if (imported.status !== 0) throw new Error(`docker import of the redis image failed: ${imported.stderr}`);
    return name;
  } finally {
    rmSync(rootfs, { recursive: true, force: true });
  }
}
