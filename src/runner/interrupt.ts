/**
 * Ctrl-C and `kill` (SIGINT, SIGTERM) for the operator CLI. Without a handler Node dies at once,
 * like `kill -9`: the backup's staging directory and the environment's lock stayed behind, and the
 * next backup was refused until `lifeline lock break`. Now the first signal stops the tools that
 * run (pg_dump, pg_restore, psql, ...), refuses to start new ones and ends a wait for the lock, so
 * the operation fails through its own error path: nothing unfinished lists, the staging directory
 * is removed and the lock released. The process then exits 130 (SIGINT) or 143 (SIGTERM). A second
 * signal, or 60 s without finishing, exits at once.
 */
import type { ChildProcess } from 'node:child_process';
import { failure } from '../errors';

const running = new Set<ChildProcess>();
let interrupted: NodeJS.Signals | undefined;
const SIGNAL_NUMBERS: Partial<Record<NodeJS.Signals, number>> = { SIGINT: 2, SIGTERM: 15 };

/** The signal that interrupted this process, if one did. */
export function interruptedBy(): NodeJS.Signals | undefined {
  return interrupted;
}

/** The exit status for an interrupted process (128 + the signal's number), as shells report it. */
export function interruptedExitCode(signal: NodeJS.Signals): number {
  return 128 + (SIGNAL_NUMBERS[signal] ?? 15);
}

/** Throws (exit 1, INTERRUPTED) when a signal asked this process to stop: nothing new starts. */
export function refuseIfInterrupted(what: string): void {
  if (interrupted) {
    throw failure('INTERRUPTED', `interrupted by ${interrupted}: ${what} was not started`, { fix: 'nothing unfinished was kept; run the command again' });
  }
}

/** Tools started by the runners: stopped when a signal arrives. */
export function trackChild(child: ChildProcess): void {
  running.add(child);
  child.once('close', () => running.delete(child));
  child.once('error', () => running.delete(child));
}

/** Installs the handlers (the CLI does, once). `onSignal` reports the first signal to the operator. */
export function installInterruptHandlers(onSignal: (signal: NodeJS.Signals) => void): void {
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.on(signal, () => {
      if (interrupted) process.exit(interruptedExitCode(interrupted));
      interrupted = signal;
      onSignal(signal);
      for (const child of running) child.kill('SIGTERM');
      setTimeout(() => process.exit(interruptedExitCode(signal)), 60_000).unref();
    });
  }
}
