import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { findExecutable } from './runner';

/** Directories holding PostgreSQL server binaries (initdb, pg_ctl, postgres), newest major first. */
export function postgresServerBinDirs(configured?: string): string[] {
  const dirs: string[] = [];
  if (configured) dirs.push(configured);
  try {
    const majors = readdirSync('/usr/lib/postgresql')
      .filter((d) => /^\d+$/.test(d))
      .sort((a, b) => Number(b) - Number(a));
    for (const major of majors) dirs.push(join('/usr/lib/postgresql', major, 'bin'));
  } catch {
    // not a Debian layout
  }
  return dirs;
}

export function findServerBinDir(configured?: string): string | undefined {
  for (const dir of postgresServerBinDirs(configured)) {
    if (findExecutable('initdb', [dir], '')) return dir;
  }
  const initdb = findExecutable('initdb');
  return initdb ? initdb.replace(/\/initdb$/, '') : undefined;
}
