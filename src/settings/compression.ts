import { usageError } from '../errors';

/** How pg_dump compresses a custom-format archive. `level` is null for `none`. */
export interface Compression {
  method: CompressionMethod;
  level: number | null;
}

export const COMPRESSION_METHODS = ['gzip', 'zstd', 'lz4', 'none'] as const;
export type CompressionMethod = (typeof COMPRESSION_METHODS)[number];

/** Levels each method accepts (pg_dump 16's own ranges; gzip's also hold for 15). */
const LEVELS: Record<Exclude<CompressionMethod, 'none'>, { min: number; max: number }> = {
  gzip: { min: 1, max: 9 },
  zstd: { min: 1, max: 22 },
  lz4: { min: 1, max: 12 },
};

/** pg_dump 16 added zstd and lz4 to the custom format; 15 and older have gzip levels only. */
const FIRST_MAJOR: Record<CompressionMethod, number> = { gzip: 0, none: 0, zstd: 16, lz4: 16 };

/**
 * The default for a pg_dump major. On a small host the dump is bound by pg_dump compressing on
 * one core: gzip 1 takes about a third of gzip 6's time for an archive ~1.15-1.25x larger.
 * zstd 1 for 16+: with the zstd CLI on the sample data (pg_dump 16 is not installed here, so
 * not measured through pg_dump) zstd -1 was ~2x faster than gzip -1 at about gzip -6's size;
 * zstd -3 was slower and no smaller, and lz4 -1 no faster than zstd -1 but 1.6x larger.
 */
export function defaultCompression(pgDumpMajor: number): Compression {
  return pgDumpMajor >= 16 ? { method: 'zstd', level: 1 } : { method: 'gzip', level: 1 };
}

const FORMAT_FIX = 'write METHOD or METHOD:LEVEL, e.g. gzip:1, gzip:6, zstd:3, lz4, none (zstd and lz4 need pg_dump 16 or newer)';

/**
 * Parses `METHOD[:LEVEL]` (the `--compress` flag, `postgres.compress`). A bare method takes its
 * default level (gzip 1, zstd 1, lz4 1). A bare number is pg_dump's own `-Z N` spelling: gzip N, 0 = none.
 */
export function parseCompression(text: string, where = '--compress'): Compression {
  const spec = text.trim().toLowerCase();
  if (/^\d+$/.test(spec)) {
    const level = Number(spec);
    if (level > 9) throw usageError('BAD_COMPRESSION', `${where} ${text}: a bare number is a gzip level, 0-9`, FORMAT_FIX);
    return level === 0 ? { method: 'none', level: null } : { method: 'gzip', level };
  }
  const match = /^([a-z0-9]+)(?::(-?\d+))?$/.exec(spec);
  const method = match?.[1] as CompressionMethod | undefined;
  if (!match || !method || !(COMPRESSION_METHODS as readonly string[]).includes(method)) {
    throw usageError('BAD_COMPRESSION', `${where} ${JSON.stringify(text)}: unknown compression method (known: ${COMPRESSION_METHODS.join(', ')})`, FORMAT_FIX);
  }
  if (method === 'none') {
    if (match[2] !== undefined) throw usageError('BAD_COMPRESSION', `${where} ${text}: none takes no level`, FORMAT_FIX);
    return { method, level: null };
  }
  const range = LEVELS[method];
  const level = match[2] === undefined ? 1 : Number(match[2]);
  if (level < range.min || level > range.max) {
    throw usageError('BAD_COMPRESSION', `${where} ${text}: ${method} levels are ${range.min}-${range.max}`, `pick a ${method} level from ${range.min} to ${range.max}, or ${FORMAT_FIX}`);
  }
  return { method, level };
}

/** `gzip:1`, `zstd:3`, `none`: how messages and backup.json name it. */
export function formatCompression(c: Compression): string {
  return c.level === null ? c.method : `${c.method}:${c.level}`;
}

/**
 * The pg_dump argument for a compression, refusing (exit 2, before anything runs) one that this
 * pg_dump cannot write.
 */
export function pgDumpCompressArg(c: Compression, pgDumpMajor: number): string {
  if (pgDumpMajor < FIRST_MAJOR[c.method]) {
    throw usageError(
      'COMPRESSION_UNSUPPORTED',
      `${formatCompression(c)} compression needs pg_dump ${FIRST_MAJOR[c.method]} or newer; this pg_dump is version ${pgDumpMajor}`,
      `use gzip (e.g. --compress gzip:1, or postgres.compress: gzip:1 in lifeline.yml), or install the PostgreSQL ${FIRST_MAJOR[c.method]}+ client tools (postgres.binDir)`,
    );
  }
  // pg_dump 15 and older know only `--compress=N` (gzip, 0 = none); 16 also reads METHOD:LEVEL.
  if (pgDumpMajor < 16) return `--compress=${c.level ?? 0}`;
  return c.level === null ? '--compress=none' : `--compress=${c.method}:${c.level}`;
}

/** The legacy `compressLevel` setting (a gzip level, 0 = none) as a compression. */
export function fromGzipLevel(level: number): Compression {
  return level === 0 ? { method: 'none', level: null } : { method: 'gzip', level };
}
