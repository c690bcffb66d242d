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
}

/** A path as findings show it: relative to the working directory when inside it, so GitHub annotations land on the file. */
export function displayPath(ctx: CheckContext, path: string): string {
  const rel = relative(ctx.cwd, path);
  return rel && !rel.startsWith('..') && !isAbsolute(rel) ? rel : path;
}
