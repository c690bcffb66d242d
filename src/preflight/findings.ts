import { isAbsolute, relative } from 'node:path';

export type FindingStatus = 'pass' | 'warn' | 'fail';

/** One row of the preflight report. Values from environment files never appear here, only key names. */
export interface Finding {
  /** A stable id such as `compose.privileged` or `env.secret-length`. */
  check: string;
  status: FindingStatus;
  /** The file the finding points at: relative to the working directory when inside it. */
  file?: string;
  line?: number;
  message: string;
  fix?: string;
}

export type FindingInput = Omit<Finding, 'status'>;

export const pass = (f: FindingInput): Finding => ({ ...f, status: 'pass' });
export const warn = (f: FindingInput): Finding => ({ ...f, status: 'warn' });
export const fail = (f: FindingInput): Finding => ({ ...f, status: 'fail' });

/** Production makes a gate blocking; elsewhere the same finding is a warning. */
export const gate = (production: boolean) => (production ? fail : warn);

/** A check that had nothing to look at says why, as a warning: with `--strict` an unchecked area fails. */
export function notChecked(check: string, reason: string, fix: string): Finding {
  return warn({ check, message: `not checked: ${reason}`, fix });
}

/** What every family of checks gets: where it runs and how paths are shown. */
export interface CheckContext {
  production: boolean;
  /** Relative paths in findings are relative to this directory. */
  cwd: string;
  /** Every file a check read or was pointed at, so the report shows what was and was not examined. */
  files?: FilesRead;
}

/** `read` was examined; the others were named but not examined, and say why. */
export type FileReadStatus = 'read' | 'missing' | 'unreadable' | 'not parsed' | 'no match';

export interface FileRead {
  /** As findings show paths: relative to the working directory when inside it. */
  path: string;
  /** What the file is to the deploy, e.g. `compose file`, `env_file of api, web`, `nginx include`. */
  role: string;
  status: FileReadStatus;
  /** Which checks looked at it (or which tool, for files only a tool reads). */
  by: string;
}

/** The list of files a preflight read, in the order first seen; one row per path and role. */
export class FilesRead {
  private readonly rows = new Map<string, FileRead>();
  constructor(private readonly ctx: { cwd: string }) {}

  add(path: string, role: string, by: string, status: FileReadStatus = 'read'): void {
    const shown = displayPath(this.ctx, path);
    const key = `${shown}\u0000${role}`;
    const existing = this.rows.get(key);
    if (existing) {
      if (!existing.by.split(', ').includes(by)) existing.by = `${existing.by}, ${by}`;
      if (existing.status !== 'read' && status === 'read') existing.status = status;
      return;
    }
    this.rows.set(key, { path: shown, role, status, by });
  }

  list(): FileRead[] {
    return [...this.rows.values()];
  }
}

/** A path as findings show it: relative to the working directory when inside it, so GitHub annotations land on the file. */
export function displayPath(ctx: Pick<CheckContext, 'cwd'>, path: string): string {
  const rel = relative(ctx.cwd, path);
  return rel && !rel.startsWith('..') && !isAbsolute(rel) ? rel : path;
}
