/** How domain code reports progress; the CLI and the action glue each provide one. */
export interface Logger {
  info(message: string): void;
  warn(message: string): void;
  error(message: string): void;
  debug(message: string): void;
  /** Runs `fn` inside a named, collapsible phase (a `core.group` in Actions). */
  group<T>(name: string, fn: () => Promise<T>): Promise<T>;
  /** Registers a value that must never appear in logs. */
  secret(value: string): void;
}

/**
 * Masks credentials by their shape, whatever was registered: the password of any `scheme://user:pass@`
 * and any `password=` / `sslpassword=` parameter (a libpq URL or conninfo string).
 */
export function redactSecretsInText(text: string): string {
  return text.replace(/(\b[a-z][a-z0-9+.-]*:\/\/[^\s:/@"'<>]*:)[^\s/"'<>]+@/gi, '$1***@').replace(/((?:[?&;\s]|^)(?:ssl)?password=)(?!\*\*\*(?:[&#\s"'<>]|$))[^&#\s"'<>]+/gi, '$1***');
}

/** Replaces registered secrets in a string: the last line of defence before text leaves the process. */
export class SecretMasker {
  private readonly secrets = new Set<string>();

  add(value: string | undefined): void {
    if (value && value.length >= 3) {
      this.secrets.add(value);
      const encoded = encodeURIComponent(value);
      if (encoded !== value) this.secrets.add(encoded);
    }
  }

  mask(text: string): string {
    let out = redactSecretsInText(text);
    for (const secret of [...this.secrets].sort((a, b) => b.length - a.length)) {
      out = out.split(secret).join('***');
    }
    return out;
  }
}

export function createStderrLogger(
  options: {
    verbose?: boolean;
    masker?: SecretMasker;
    /** Where lines go (default: process.stderr). */
    write?: (text: string) => void;
    /** The terminal's progress line (src/report/progress.ts): cleared before each line and redrawn after, so nothing is glued onto it. */
    statusLine?: { around(fn: () => void): void };
  } = {},
): Logger {
  const masker = options.masker ?? new SecretMasker();
  const out = options.write ?? ((text: string) => void process.stderr.write(text));
  const write = (prefix: string, message: string) => {
    const line = `${prefix}${masker.mask(message)}\n`;
    if (options.statusLine) options.statusLine.around(() => out(line));
    else out(line);
  };
  return {
    info: (m) => write('', m),
    warn: (m) => write('warning: ', m),
    error: (m) => write('error: ', m),
    debug: (m) => {
      if (options.verbose) write('debug: ', m);
    },
    async group(name, fn) {
      write('==> ', name);
      return fn();
    },
    secret: (v) => masker.add(v),
  };
}

/** A logger that records lines, for tests and for building reports. */
export function createMemoryLogger(): Logger & { lines: string[] } {
  const lines: string[] = [];
  const masker = new SecretMasker();
  return {
    lines,
    info: (m) => lines.push(masker.mask(m)),
    warn: (m) => lines.push(`warning: ${masker.mask(m)}`),
    error: (m) => lines.push(`error: ${masker.mask(m)}`),
    debug: () => {},
    async group(name, fn) {
      lines.push(`==> ${name}`);
      return fn();
    },
    secret: (v) => masker.add(v),
  };
}
