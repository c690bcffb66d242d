import { describe, expect, it } from 'vitest';
import { defaultCompression, formatCompression, parseCompression, pgDumpCompressArg } from '../../src/settings/compression';

function usage(fn: () => unknown) {
  try {
    fn();
  } catch (error) {
    return error as { kind: string; code: string; message: string; fix?: string };
  }
  throw new Error('expected a usage error');
}

describe('--compress METHOD[:LEVEL]', () => {
  it('reads a method with or without a level, in any case, and pg_dump -Z N spellings', () => {
    expect(parseCompression('gzip:6')).toEqual({ method: 'gzip', level: 6 });
    expect(parseCompression(' GZIP:9 ')).toEqual({ method: 'gzip', level: 9 });
    expect(parseCompression('gzip')).toEqual({ method: 'gzip', level: 1 });
    expect(parseCompression('zstd:19')).toEqual({ method: 'zstd', level: 19 });
    expect(parseCompression('lz4')).toEqual({ method: 'lz4', level: 1 });
    expect(parseCompression('none')).toEqual({ method: 'none', level: null });
    expect(parseCompression('6')).toEqual({ method: 'gzip', level: 6 });
    expect(parseCompression('0')).toEqual({ method: 'none', level: null });
  });

  it('rejects unknown methods, out-of-range levels and junk with exit 2 and a fix naming valid values', () => {
    for (const bad of ['brotli', 'gzip:0', 'gzip:10', 'zstd:23', 'zstd:-1', 'lz4:13', 'none:1', 'gzip:', 'gzip:1:2', '10', '', 'gzip;6', 'gzip:six']) {
      const error = usage(() => parseCompression(bad));
      expect(error, bad).toMatchObject({ kind: 'usage', code: 'BAD_COMPRESSION' });
      expect(error.fix, bad).toMatch(/gzip:1/);
    }
    expect(usage(() => parseCompression('gzip:10')).message).toContain('gzip levels are 1-9');
    expect(usage(() => parseCompression('brotli', 'environments.prod.postgres.compress')).message).toMatch(/^environments\.prod\.postgres\.compress "brotli": unknown compression method/);
  });

  it('picks gzip 1 for pg_dump 15 and older, zstd 1 for 16 and newer', () => {
    expect(defaultCompression(13)).toEqual({ method: 'gzip', level: 1 });
    expect(defaultCompression(15)).toEqual({ method: 'gzip', level: 1 });
    expect(defaultCompression(16)).toEqual({ method: 'zstd', level: 1 });
    expect(defaultCompression(18)).toEqual({ method: 'zstd', level: 1 });
  });

  it("speaks each pg_dump's dialect and refuses what the client cannot write", () => {
    expect(pgDumpCompressArg({ method: 'gzip', level: 1 }, 15)).toBe('--compress=1');
    expect(pgDumpCompressArg({ method: 'none', level: null }, 15)).toBe('--compress=0');
    expect(pgDumpCompressArg({ method: 'gzip', level: 6 }, 16)).toBe('--compress=gzip:6');
    expect(pgDumpCompressArg({ method: 'zstd', level: 3 }, 16)).toBe('--compress=zstd:3');
    expect(pgDumpCompressArg({ method: 'lz4', level: 1 }, 17)).toBe('--compress=lz4:1');
    expect(pgDumpCompressArg({ method: 'none', level: null }, 16)).toBe('--compress=none');
    for (const method of ['zstd', 'lz4'] as const) {
      const error = usage(() => pgDumpCompressArg({ method, level: 1 }, 15));
      expect(error).toMatchObject({ kind: 'usage', code: 'COMPRESSION_UNSUPPORTED' });
      expect(error.message).toContain('needs pg_dump 16 or newer; this pg_dump is version 15');
      expect(error.fix).toContain('gzip');
    }
    expect(formatCompression({ method: 'gzip', level: 1 })).toBe('gzip:1');
    expect(formatCompression({ method: 'none', level: null })).toBe('none');
  });
});
