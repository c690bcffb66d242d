import type { Logger } from '../logger';

/**
 * Progress of long work (backup, restore, verify, sync, drill): a phase name, done of total with
 * percent and ETA when a total is known, bytes and rate otherwise.
 *
 * On a terminal it is one line on stderr, redrawn in place (`\r`, cleared to the end of the line);
 * the CLI logger clears it before any log line and redraws it after, so a log line is never glued
 * onto it. Off a terminal (CI logs, pipes) it is a plain log line every few seconds, never a `\r`.
 * `--quiet` silences it (warnings and errors still print). It never goes to stdout.
 */

export type ProgressUnit = 'bytes' | 'count';

export interface ProgressState {
  phase: string;
  done: number;
  total?: number;
  /** The total is an estimate (a backup's size before it is written): percent stops at 99 until the end. */
  estimated?: boolean;
  unit: ProgressUnit;
  /** What is counted, for `count` (`objects`, `files`). */
  noun?: string;
  /** Milliseconds since the phase started. */
  elapsedMs: number;
  /** Steps of unequal length (a drill's, a verify's): a rate says nothing, so no ETA. */
  steps?: boolean;
}

export interface ProgressNumbers {
  /** Bytes (or items) per second since the phase started. */
  rate: number;
  percent?: number;
  etaSeconds?: number;
}

/** Below this much elapsed time a rate is noise: no ETA yet. */
const MIN_ELAPSED_FOR_ETA_MS = 1000;

export function progressNumbers(state: ProgressState): ProgressNumbers {
  const seconds = state.elapsedMs / 1000;
  const rate = seconds > 0 ? state.done / seconds : 0;
  if (state.total === undefined || !(state.total > 0)) return { rate };
  let percent = Math.floor((state.done / state.total) * 100);
  if (percent > 100) percent = 100;
  // An estimate that was passed says nothing about what is left: no ETA, and never 100% before the end.
  if (state.estimated && state.done >= state.total) return { rate, percent: 99 };
  if (state.estimated && percent > 99) percent = 99;
  const remaining = state.total - state.done;
  if (remaining <= 0) return { rate, percent, etaSeconds: 0 };
  if (state.steps) return { rate, percent };
  if (rate <= 0 || state.elapsedMs < MIN_ELAPSED_FOR_ETA_MS) return { rate, percent };
  return { rate, percent, etaSeconds: Math.ceil(remaining / rate) };
}

/** `1.5 MB` (powers of 1000), or with `binary` `1.4 MiB` (powers of 1024, as disk space is shown). */
export function formatBytes(bytes: number, options: { binary?: boolean } = {}): string {
  const units = options.binary ? ['B', 'KiB', 'MiB', 'GiB', 'TiB'] : ['B', 'KB', 'MB', 'GB', 'TB'];
  const base = options.binary ? 1024 : 1000;
  let value = bytes;
  let unit = 0;
  while (value >= base && unit < units.length - 1) {
    value /= base;
    unit++;
  }
  return `${value.toFixed(unit === 0 ? 0 : 1)} ${units[unit]}`;
}

/** 45s, 3m05s, 2h07m. */
export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

export function renderProgress(state: ProgressState): string {
  const { rate, percent, etaSeconds } = progressNumbers(state);
  const eta = etaSeconds !== undefined && etaSeconds > 0 ? `, ETA ${formatDuration(etaSeconds)}` : '';
  const approx = state.estimated ? '~' : '';
  if (state.unit === 'bytes') {
    const of = state.total !== undefined && state.total > 0 ? ` of ${approx}${formatBytes(state.total)} (${percent}%)` : '';
    return `${state.phase}: ${formatBytes(state.done)}${of} at ${formatBytes(rate)}/s${eta}`;
  }
  const noun = state.noun ? ` ${state.noun}` : '';
  if (state.total !== undefined && state.total > 0) return `${state.phase}: ${state.done}/${approx}${state.total}${noun} (${percent}%)${eta}`;
  return `${state.phase}: ${state.done}${noun}`;
}

/**
 * The one status line at the bottom of a terminal. Everything else written to the same stream
 * goes through `around`, which clears the line first and redraws it after.
 */
export class TerminalLine {
  private shown: string | undefined;

  constructor(
    private readonly write: (text: string) => void,
    private readonly columns: () => number | undefined = () => process.stderr.columns,
    private readonly mask: (text: string) => string = (t) => t,
  ) {}

  get visible(): string | undefined {
    return this.shown;
  }

  show(text: string): void {
    // A line wider than the terminal wraps, and `\r` would then redraw only its last part.
    const width = this.columns();
    let line = this.mask(text).replace(/[\r\n\t\x1b]/g, ' ');
    if (width && width > 1 && line.length > width - 1) line = `${line.slice(0, Math.max(0, width - 2))}…`;
    this.shown = line;
    this.write(`\r${line}\x1b[K`);
  }

  clear(): void {
    if (this.shown === undefined) return;
    this.shown = undefined;
    this.write('\r\x1b[K');
  }

  /** Writes something else (a log line) without gluing it onto the status line. */
  around(fn: () => void): void {
    const shown = this.shown;
    this.clear();
    try {
      fn();
    } finally {
      if (shown !== undefined) {
        this.shown = shown;
        this.write(`\r${shown}\x1b[K`);
      }
    }
  }
}

/** Where progress goes for one command run; the CLI builds it from its flags, the actions use the default. */
export interface ProgressOutput {
  /** `--quiet`: no progress at all. */
  quiet: boolean;
  /** Set when stderr is a terminal: the live line. */
  terminal?: TerminalLine;
  /** Off a terminal: a plain line at most this often. */
  intervalMs: number;
  now?: () => number;
}

export const DEFAULT_PROGRESS_INTERVAL_MS = 5000;
/** Redraws of the terminal line at most this often. */
const REDRAW_MS = 100;

/** The interval off a terminal: `LIFELINE_PROGRESS_INTERVAL_MS` (tests, chatty CI), else 5 s. */
export function progressIntervalFrom(env: Record<string, string | undefined>): number {
  const raw = env.LIFELINE_PROGRESS_INTERVAL_MS;
  if (raw === undefined || raw === '') return DEFAULT_PROGRESS_INTERVAL_MS;
  const value = Number(raw);
  return Number.isFinite(value) && value >= 0 ? value : DEFAULT_PROGRESS_INTERVAL_MS;
}

export interface ProgressOptions {
  unit?: ProgressUnit;
  total?: number;
  estimated?: boolean;
  noun?: string;
  /** Counts steps of unequal length: percent without an ETA. */
  steps?: boolean;
}

/** One long operation's progress; `phase()` moves it on to the next step. */
export class Progress {
  private state: Omit<ProgressState, 'elapsedMs'>;
  private started: number;
  private lastLine: number;
  private lastDraw = -Infinity;
  private printedLine = false;
  private ended = false;
  private readonly now: () => number;

  constructor(
    private readonly output: ProgressOutput | undefined,
    private readonly logger: Logger,
    phase: string,
    options: ProgressOptions = {},
  ) {
    this.now = output?.now ?? Date.now;
    this.started = this.lastLine = this.now();
    this.state = { phase, done: 0, unit: options.unit ?? 'bytes', total: options.total, estimated: options.estimated, noun: options.noun, steps: options.steps };
  }

  private get quiet(): boolean {
    return this.output?.quiet ?? false;
  }

  /** Nothing is shown (--quiet): callers can skip work done only for the display. */
  get silent(): boolean {
    return this.quiet;
  }

  snapshot(): ProgressState {
    return { ...this.state, elapsedMs: this.now() - this.started };
  }

  /** Starts the next phase (its own counter, total and clock). */
  phase(name: string, options: ProgressOptions = {}): void {
    this.state = { phase: name, done: 0, unit: options.unit ?? this.state.unit, total: options.total, estimated: options.estimated, noun: options.noun ?? this.state.noun, steps: options.steps };
    this.started = this.now();
    this.lastLine = this.started;
    this.printedLine = false;
    this.ended = false;
    this.draw(true);
  }

  setTotal(total: number | undefined, estimated = false): void {
    this.state.total = total;
    this.state.estimated = estimated;
  }

  update(done: number, total?: number): void {
    if (this.ended) return;
    this.state.done = done;
    if (total !== undefined) this.state.total = total;
    this.draw(false);
  }

  /** Adds to what is done. */
  add(amount: number): void {
    this.update(this.state.done + amount);
  }

  private draw(force: boolean): void {
    if (this.quiet) return;
    const now = this.now();
    const terminal = this.output?.terminal;
    if (terminal) {
      if (!force && now - this.lastDraw < REDRAW_MS) return;
      this.lastDraw = now;
      terminal.show(renderProgress(this.snapshot()));
      return;
    }
    const interval = this.output?.intervalMs ?? DEFAULT_PROGRESS_INTERVAL_MS;
    if (force || now - this.lastLine < interval) return;
    this.lastLine = now;
    this.printedLine = true;
    this.logger.info(renderProgress(this.snapshot()));
  }

  /**
   * The phase is over: the terminal line goes away; off a terminal a last line says where it
   * ended, when a line was printed before (a short step prints nothing at all).
   */
  end(): void {
    if (this.ended) return;
    this.ended = true;
    if (this.quiet) return;
    if (this.output?.terminal) {
      this.output.terminal.clear();
      return;
    }
    if (this.printedLine)
      this.logger.info(
        `${renderProgress({ ...this.snapshot(), estimated: false, total: this.state.total === undefined ? undefined : this.state.estimated ? this.state.done : this.state.total })} (done)`,
      );
  }
}

/** The progress of one command: `ctx.progress` from the CLI, else plain lines through the logger (actions). */
export function startProgress(ctx: { logger: Logger; progress?: ProgressOutput }, phase: string, options: ProgressOptions = {}): Progress {
  return new Progress(ctx.progress, ctx.logger, phase, options);
}
