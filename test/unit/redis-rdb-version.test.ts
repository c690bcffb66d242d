import { describe, expect, it } from 'vitest';
import { parseRdbHeader, parseServerIdentity, rdbCompatibility, type RdbHeader, type ServerIdentity } from '../../src/redis/rdb-version';

const header = (text: string): RdbHeader => parseRdbHeader(Buffer.from(`${text}\xfa\x09redis-ver`, 'latin1'))!;
const redis = (version: string): ServerIdentity => ({ product: 'redis', version });
const valkey = (version: string): ServerIdentity => ({ product: 'valkey', version });
const verdict = (h: string, server: ServerIdentity, relaxed = false) => rdbCompatibility(header(h), server, { relaxed }).verdict;

describe('RDB headers', () => {
  it('reads REDIS + 4 digits and VALKEY + 3 digits, and nothing else', () => {
    expect(header('REDIS0011')).toEqual({ magic: 'REDIS', version: 11, text: 'REDIS0011' });
    expect(header('VALKEY080')).toEqual({ magic: 'VALKEY', version: 80, text: 'VALKEY080' });
    for (const bad of ['REDIS001', 'redis0011', 'REDIS00x1', 'VALKEY08', 'KEYDB0011', '']) expect(parseRdbHeader(Buffer.from(bad, 'latin1'))).toBeUndefined();
  });

  it('tells Redis from Valkey in INFO server', () => {
    expect(parseServerIdentity('# Server\r\nredis_version:7.0.15\r\nredis_git_sha1:0\r\n')).toEqual(redis('7.0.15'));
    expect(parseServerIdentity('# Server\r\nredis_version:7.2.4\r\nserver_name:valkey\r\nvalkey_version:8.0.2\r\n')).toEqual(valkey('8.0.2'));
    expect(parseServerIdentity('# Server\r\nredis_version:7.2.4\r\nserver_name:valkey\r\n')).toEqual(valkey('7.2.4'));
    expect(parseServerIdentity('ERR unknown command')).toBeUndefined();
  });
});

describe('which server loads which snapshot', () => {
  it('Redis loads up to its own RDB version: 7.0 <= 10, 7.2 <= 11, 7.4 <= 12, 6.2 <= 9', () => {
    expect(verdict('REDIS0010', redis('7.0.15'))).toBe('loads');
    expect(verdict('REDIS0011', redis('7.0.15'))).toBe('refuses');
    expect(verdict('REDIS0011', redis('7.2.4'))).toBe('loads');
    expect(verdict('REDIS0012', redis('7.2.4'))).toBe('refuses');
    expect(verdict('REDIS0012', redis('7.4.1'))).toBe('loads');
    expect(verdict('REDIS0010', redis('6.2.14'))).toBe('refuses');
    expect(verdict('REDIS0009', redis('6.2.14'))).toBe('loads');
    expect(rdbCompatibility(header('REDIS0011'), redis('7.0.15')).detail).toBe('Redis 7.0.15 loads RDB versions up to 10, and the snapshot is RDB version 11 (REDIS0011)');
  });

  it('Redis never loads a Valkey 9 snapshot', () => {
    expect(verdict('VALKEY080', redis('7.4.1'))).toBe('refuses');
    expect(verdict('VALKEY080', redis('8.0.0'))).toBe('refuses');
  });

  it('Valkey 7.2 and 8 load <= 11 and refuse Redis 7.4+ RDB 12 unless rdb-version-check is relaxed', () => {
    expect(verdict('REDIS0011', valkey('8.0.2'))).toBe('loads');
    expect(verdict('REDIS0012', valkey('8.0.2'))).toBe('refuses');
    expect(verdict('REDIS0012', valkey('7.2.5'))).toBe('refuses');
    expect(verdict('REDIS0012', valkey('8.1.1'), true)).toBe('unknown');
    expect(verdict('VALKEY080', valkey('8.1.1'))).toBe('refuses');
  });

  it('Valkey 9 loads REDIS <= 11 and VALKEY080; 9.0 refuses VALKEY081; the headers must match the range', () => {
    expect(verdict('REDIS0011', valkey('9.0.0'))).toBe('loads');
    expect(verdict('VALKEY080', valkey('9.0.0'))).toBe('loads');
    expect(verdict('VALKEY081', valkey('9.0.0'))).toBe('refuses');
    expect(verdict('VALKEY081', valkey('9.2.0'))).toBe('loads');
    expect(verdict('REDIS0080', valkey('9.0.0'))).toBe('refuses');
    expect(verdict('VALKEY011', valkey('9.0.0'))).toBe('refuses');
    expect(verdict('REDIS0012', valkey('9.0.0'))).toBe('refuses');
  });

  it('a server newer than Lifeline knows is not refused on a guess', () => {
    expect(verdict('REDIS0013', redis('8.2.0'))).toBe('unknown');
    expect(verdict('REDIS0012', redis('8.2.0'))).toBe('loads');
    expect(verdict('VALKEY082', valkey('10.0.0'))).toBe('unknown');
    expect(verdict('REDIS0010', redis('garbage'))).toBe('unknown');
  });
});
