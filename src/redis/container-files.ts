import { stat } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { firstTarFile, tarStream, type TarMember } from '../catalog/tar';
import { failure } from '../errors';
import type { Logger } from '../logger';
import { describeExit, lastLines, runText, type Runner } from '../runner/runner';
import type { RedisPersistence } from './live-server';

/** The uid and gid Redis' files belong to inside its container. */
export interface FileOwner {
  uid: number;
  gid: number;
}

/** The uid and gid redis-server runs as inside the container (`docker top`), so the files copied in stay its own. */
export function parseTopOwner(output: string): { uid: number; gid: number } | undefined {
  const lines = output.split('\n').filter((l) => l.trim());
  for (const line of lines.slice(1)) {
    const [, uid, gid, ...args] = line.trim().split(/\s+/);
    if (args.join(' ').includes('redis-server') && /^\d+$/.test(uid ?? '') && /^\d+$/.test(gid ?? '')) return { uid: Number(uid), gid: Number(gid) };
  }
  return undefined;
}

/** The files a Redis 7 AOF manifest lists (`file NAME seq N type b|h|i`). */
export function manifestFiles(manifest: string): string[] {
  return [...manifest.matchAll(/^file\s+(\S+)\s/gm)].map((m) => m[1]!);
}

/** The multi-part AOF layout that makes Redis 7 load `base` as its whole dataset. */
export function aofLayout(appendfilename: string): { base: string; incr: string; manifestName: string; manifest: string } {
  const base = `${appendfilename}.1.base.rdb`;
  const incr = `${appendfilename}.1.incr.aof`;
  return { base, incr, manifestName: `${appendfilename}.manifest`, manifest: `file ${base} seq 1 type b\nfile ${incr} seq 1 type i\n` };
}

/**
 * Who owns Redis' files in `container`: the uid/gid redis-server runs as (`docker top`, through
 * `docker` on this host), else the owner of its dir (`stat` through `inContainer`).
 */
export async function redisFileOwner(docker: Runner, container: string, inContainer: Runner, dir: string): Promise<FileOwner> {
  const top = await runText(docker, { tool: 'docker', args: ['top', container, '-o', 'pid,uid,gid,args'] }).catch(() => undefined);
  const fromTop = top?.exitCode === 0 ? parseTopOwner(top.stdout) : undefined;
  if (fromTop) return fromTop;
  const statted = await runText(inContainer, { tool: 'stat', args: ['-c', '%u:%g', dir] }).catch(() => undefined);
  const match = statted?.exitCode === 0 ? /^(\d+):(\d+)\s*$/.exec(statted.stdout) : null;
  if (match) return { uid: Number(match[1]), gid: Number(match[2]) };
  throw failure('REDIS_OWNER_UNKNOWN', `cannot tell which user redis-server runs as in container ${container.slice(0, 12)} (docker top and stat both failed); nothing was changed`, {
    fix: 'check that docker top works against this engine',
  });
}

/** The snapshot to copy in: a file on this host (its size checked against `expectedBytes`), or a plaintext stream opened once per tar member. */
export type SnapshotBody = { path: string; expectedBytes: number } | { open: () => Promise<Readable>; size: number };

/**
 * Copies a snapshot into the stopped `container` with `docker cp` (a tar stream, so file owners
 * are the Redis user's). With AOF on, Redis loads only what its manifest lists, so the snapshot
 * becomes the base of a fresh one-part AOF; `dbfilename` gets it too, so turning AOF off later
 * does not bring the old data back. Returns the old AOF files the new manifest no longer lists.
 */
export async function replaceContainerData(docker: Runner, container: string, persistence: RedisPersistence, owner: FileOwner, snapshot: SnapshotBody, logger: Logger): Promise<string[]> {
  let size: number;
  if ('open' in snapshot) size = snapshot.size;
  else {
    size = (await stat(snapshot.path)).size;
    if (size !== snapshot.expectedBytes) throw failure('SNAPSHOT_CHANGED', `${snapshot.path} is ${size} bytes, the catalog recorded ${snapshot.expectedBytes}`);
  }
  // A stream is decrypted in the stream into docker cp's tar (once per member), never onto this host's disk.
  const body = (): { path: string; size: number } | { open: () => Promise<Readable>; size: number } => ('open' in snapshot ? { open: snapshot.open, size } : { path: snapshot.path, size });
  const entries: TarMember[] = [{ name: persistence.dbfilename, ...body(), ...owner }];
  let stale: string[] = [];
  if (persistence.appendonly) {
    const dirName = persistence.appenddirname!;
    const layout = aofLayout(persistence.appendfilename);
    const oldManifest = await readContainerFile(docker, container, `${persistence.dir}/${dirName}/${layout.manifestName}`);
    const keep = new Set([layout.base, layout.incr, layout.manifestName]);
    stale = oldManifest ? manifestFiles(oldManifest.toString('utf8')).filter((name) => !keep.has(name) && /^[A-Za-z0-9][A-Za-z0-9._+-]*$/.test(name)) : [];
    entries.push(
      { name: dirName, directory: true, ...owner },
      { name: `${dirName}/${layout.base}`, ...body(), ...owner },
      { name: `${dirName}/${layout.incr}`, text: '', ...owner },
      { name: `${dirName}/${layout.manifestName}`, text: layout.manifest, ...owner },
    );
  }
  const tar = tarStream(entries);
  let tarError: Error | undefined;
  const running = docker.start({ tool: 'docker', args: ['cp', '-', `${container}:${persistence.dir}`], stdin: tar });
  // A member that fails while it streams (a decrypted chunk that fails authentication, a file that changed) stops docker cp.
  tar.on('error', (error) => {
    tarError ??= error;
    running.kill('SIGTERM');
  });
  running.stdout.resume();
  const result = await running.done;
  if (tarError)
    throw failure('REDIS_COPY_FAILED', `the snapshot failed while it was copied in: ${tarError.message}`, {
      fix: 'the snapshot could not be read to its end (the message says why): restore it again once the cause is fixed, or restore another snapshot',
      cause: tarError,
    });
  if (result.exitCode !== 0)
    throw failure('REDIS_COPY_FAILED', `docker cp ${describeExit(result)}: ${lastLines(result.stderr, 3)}`, {
      fix: `read docker cp's error: the container must exist and ${persistence.dir} in it must have room for the snapshot`,
    });
  logger.info(
    `     wrote ${persistence.dir}/${persistence.dbfilename}${persistence.appendonly ? ` and a one-part AOF in ${persistence.dir}/${persistence.appenddirname} (${aofLayout(persistence.appendfilename).manifestName})` : ''}`,
  );
  return stale;
}

/** A small file out of a (stopped) container, or undefined when it does not exist. */
export async function readContainerFile(docker: Runner, container: string, path: string): Promise<Buffer | undefined> {
  const running = docker.start({ tool: 'docker', args: ['cp', `${container}:${path}`, '-'] });
  const chunks: Buffer[] = [];
  let bytes = 0;
  running.stdout.on('data', (chunk: Buffer) => {
    bytes += chunk.length;
    if (bytes <= 1024 * 1024) chunks.push(chunk);
  });
  const result = await running.done;
  if (result.exitCode !== 0) {
    if (/no such file|could not find/i.test(result.stderr)) return undefined;
    throw failure('CONTAINER_FILE_UNREADABLE', `reading ${path} from the container failed (docker cp ${describeExit(result)}): ${lastLines(result.stderr, 2)}`, {
      fix: `read docker cp's error: the container ${container.slice(0, 12)} must still exist`,
    });
  }
  if (bytes > 1024 * 1024)
    throw failure('CONTAINER_FILE_UNREADABLE', `${path} is larger than a manifest should be (${bytes} bytes)`, {
      fix: `look at ${path} in the container: an AOF manifest lists a few files; move the oversized file away, then re-run`,
    });
  return firstTarFile(Buffer.concat(chunks));
}

/** Removes old AOF files the new manifest no longer lists; Redis ignores them, so a failure is a warning. */
export async function removeStaleAofFiles(inContainer: Runner, persistence: RedisPersistence, names: string[], logger: Logger): Promise<string[]> {
  const paths = names.map((name) => `${persistence.dir}/${persistence.appenddirname}/${name}`);
  const result = await runText(inContainer, { tool: 'rm', args: ['-f', '--', ...paths] }).catch((error: Error) => ({ exitCode: 1, stderr: error.message, stdout: '' }));
  if (result.exitCode === 0) {
    logger.info(`     removed ${names.length} old AOF file(s) the new manifest does not list`);
    return [];
  }
  logger.warn(`the old AOF files ${paths.join(', ')} are left in place (rm: ${lastLines(result.stderr, 1)}); Redis ignores them, remove them by hand`);
  return paths;
}
