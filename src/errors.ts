import type { CodeOf, ErrorCode, ProviderCode } from './error-codes';

export type { ErrorCode } from './error-codes';

/**
 * Exit codes are a contract with operators' scripts:
 * 0 done, 1 the operation failed, 2 bad usage or configuration,
 * 3 refused by a safety check (nothing was changed).
 */
export const ExitCode = {
  ok: 0,
  failed: 1,
  usage: 2,
  refused: 3,
} as const;
export type ExitCodeValue = (typeof ExitCode)[keyof typeof ExitCode];

export type ErrorKind = 'failed' | 'usage' | 'refused';

export interface LifelineErrorOptions {
  /** A stable machine-readable code, e.g. `BACKUP_NOT_FOUND`, declared with its doc in error-codes.ts. */
  code: ErrorCode | ProviderCode;
  /** What the operator should do about it. */
  fix?: string;
  cause?: unknown;
  /** Extra structured detail for `--json` output. */
  details?: Record<string, unknown>;
}

export class LifelineError extends Error {
  readonly kind: ErrorKind;
  readonly code: ErrorCode | ProviderCode;
  readonly fix?: string;
  readonly details?: Record<string, unknown>;

  constructor(kind: ErrorKind, message: string, options: LifelineErrorOptions) {
    super(message, { cause: options.cause });
    this.name = 'LifelineError';
    this.kind = kind;
    this.code = options.code;
    this.fix = options.fix;
    this.details = options.details;
  }

  get exitCode(): ExitCodeValue {
    return exitCodeFor(this.kind);
  }

  /** The message with its fix, the way an operator should read it. */
  describe(): string {
    return this.fix ? `${this.message}\n  fix: ${this.fix}` : this.message;
  }
}

export function exitCodeFor(kind: ErrorKind): ExitCodeValue {
  switch (kind) {
    case 'usage':
      return ExitCode.usage;
    case 'refused':
      return ExitCode.refused;
    default:
      return ExitCode.failed;
  }
}

/** The operator's input or configuration is wrong (exit 2). */
export function usageError(code: CodeOf<'usage'>, message: string, fix?: string, details?: Record<string, unknown>): LifelineError {
  return new LifelineError('usage', message, { code, fix, details });
}

/** A safety check refused the operation before anything changed (exit 3). */
export function refusal(code: CodeOf<'refused'>, message: string, fix?: string, details?: Record<string, unknown>): LifelineError {
  return new LifelineError('refused', message, { code, fix, details });
}

/** The operation itself failed (exit 1). */
export function failure(code: CodeOf<'failed'>, message: string, options: { fix?: string; cause?: unknown; details?: Record<string, unknown> } = {}): LifelineError {
  return new LifelineError('failed', message, { code, ...options });
}

export function isLifelineError(error: unknown): error is LifelineError {
  return error instanceof LifelineError;
}

/** Wraps anything thrown into a LifelineError; unknown errors are our bugs or the environment's faults (exit 1). */
export function toLifelineError(error: unknown): LifelineError {
  if (isLifelineError(error)) return error;
  const message = error instanceof Error ? error.message : String(error);
  return failure('UNEXPECTED', message, { cause: error });
}
