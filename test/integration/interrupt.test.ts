// Ctrl-C or `kill` during a backup (found by an outside attack: the staging directory and the lock
// stayed, and the next backup was refused until `lifeline lock break`). Now the tools are stopped,
// nothing unfinished stays, the lock is released, the exit status is 130 / 143, and the next
// backup runs. Against the real CLI, pg_dump, pg_restore and PostgreSQL.
import { execFileSync, spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cliArgv, lifeline, REPO } from '../helpers/cli';
import { createSampleDatabase, dropDatabase, tempDir } from '../helpers/db';

const PG_BIN = '/usr/lib/postgresql/15/bin';

const noEnv = { DATABASE_URL: undefined, REDIS_URL: undefined, LIFELINE_STORE: undefined, LIFELINE_ENV: undefined, LIFELINE_CONFIG: undefined };

function entriesIn(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

function childrenOf(pid: number): number[] {
  try {
    return execFileSync('pgrep', ['-P', String(pid)], { encoding: 'utf8' })
      .split('\n')
      .filter(Boolean)
      .map(Number);
  } catch {
    return [];
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('a backup interrupted by SIGINT or SIGTERM cleans up after itself', () => {
  let db: Awaited<ReturnType<typeof createSampleDatabase>>;
  beforeAll(async () => {
    db = await createSampleDatabase(20, 'interrupt');
  }, 180_000);
  afterAll(async () => {
    await dropDatabase(db.name);
  });

  for (const [signal, status] of [
    ['SIGINT', 130],
    ['SIGTERM', 143],
  ] as const) {
    it(`${signal} mid-dump: exit ${status}, the tools stopped, no staging directory, no lock, and the next backup runs`, async () => {
      const store = tempDir('lifeline-interrupt-');
      try {
        const backups = join(store.path, 'default', 'backups');
        const env = Object.fromEntries(Object.entries({ ...process.env, ...noEnv, DATABASE_URL: db.url }).filter(([, v]) => v !== undefined)) as NodeJS.ProcessEnv;
        // The in-stream pg_restore waits 30 s before it reads (a bash builtin read on an idle FIFO:
        // no child process to orphan), so the dump is held mid-stream, deterministically.
        const bin = join(store.path, 'bin');
        mkdirSync(bin);
        for (const tool of ['psql', 'pg_dump', 'pg_dumpall']) execFileSync('ln', ['-s', join(PG_BIN, tool), join(bin, tool)]);
        execFileSync('mkfifo', [join(bin, 'idle')]);
        writeFileSync(join(bin, 'pg_restore'), `#!/bin/bash\nif [ "$*" = "--file=/dev/null" ]; then read -t 30 line <> '${join(bin, 'idle')}'; fi\nexec ${PG_BIN}/pg_restore "$@"\n`);
        chmodSync(join(bin, 'pg_restore'), 0o755);
        const config = join(store.path, 'lifeline.yml');
        writeFileSync(config, `version: 1\nenvironments:\n  default:\n    postgres:\n      binDir: ${bin}\n`);
        const child = spawn(process.execPath, [...cliArgv(), 'backup', '--store', store.path, '--config', config], { cwd: REPO, env });
        let stderr = '';
        child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
        const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
        try {
          // Interrupted once the dump has started writing into the staging directory.
          for (let i = 0; i < 600 && !/: dumping /.test(stderr); i++) await new Promise((r) => setTimeout(r, 50));
          expect(stderr, stderr).toMatch(/: dumping /);
          await new Promise((r) => setTimeout(r, 1000));
          expect(entriesIn(backups).some((n) => n.startsWith('.staging-'))).toBe(true);
          const tools = childrenOf(child.pid!);
          expect(tools.length).toBeGreaterThan(0);
          child.kill(signal);
          expect(await exited, stderr).toBe(status);
          expect(stderr).toContain(`${signal}: stopping`);
          for (const pid of tools) expect(alive(pid), `tool pid ${pid} still runs`).toBe(false);
        } finally {
          child.kill('SIGKILL');
        }
        expect(entriesIn(backups)).toEqual([]);
        expect(existsSync(join(store.path, 'default', '.lock'))).toBe(false);
        const next = await lifeline(['backup', '--store', store.path, '--json'], { env: { ...noEnv, DATABASE_URL: db.url } });
        expect(entriesIn(backups).filter((n) => n.startsWith('.'))).toEqual([]);
        expect(next.code, next.stderr).toBe(0);
        expect(entriesIn(backups).filter((n) => !n.startsWith('.'))).toHaveLength(1);
      } finally {
        store.cleanup();
      }
    });
  }
});
