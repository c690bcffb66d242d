import { spawnSync } from 'node:child_process';
import { createWriteStream, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { describe, expect, it } from 'vitest';
import { parseCollectionFlag, tenantRowsQuery, type ResolvedCollection } from '../../src/tenant/collections';
import { RecordCounter } from '../../src/tenant/rows';
import { tarStream } from '../../src/catalog/tar';
import { tenantSegment } from '../../src/tenant/tenant-id';
import { tempDir } from '../helpers/db';

// Pure pieces of the tenant export (no database): naming, parsing, counting and the tar writer.
describe('tenant export building blocks', () => {
  it('maps tenant ids to catalog names one-to-one, refusing ids that could escape', () => {
    expect(tenantSegment('tenant-001')).toBe('tenant-001');
    expect(tenantSegment("o'brien; --")).toBe('x+o+27brien+3B+20--');
    expect(tenantSegment('x+27')).toBe('x+x+2B27');
    expect(tenantSegment('café')).toBe('x+caf+C3+A9');
    for (const bad of ['', ' ', '../a', 'a/b', '..', 'a\u0000b', 'a\nb', 'x'.repeat(201)]) {
      expect(() => tenantSegment(bad), JSON.stringify(bad)).toThrow(expect.objectContaining({ exitCode: 2 }));
    }
  });

  it('parses --collection flags', () => {
    expect(parseCollectionFlag('orders:tenant_id')).toEqual({ table: 'orders', column: 'tenant_id' });
    expect(parseCollectionFlag('payments:order_id->orders.id')).toEqual({ table: 'payments', via: ['order_id->orders.id'] });
    expect(parseCollectionFlag('refunds:payment_id->payments.id,order_id->orders.id:org')).toEqual({ table: 'refunds', via: ['payment_id->payments.id', 'order_id->orders.id'], column: 'org' });
    for (const bad of ['orders', 'orders:', ':x', 'orders:a:b', 'a:b:c:d']) expect(() => parseCollectionFlag(bad), bad).toThrow(expect.objectContaining({ exitCode: 2 }));
  });

  it('builds semi-joins with quoted identifiers and the tenant as a literal', () => {
    const collection: ResolvedCollection = {
      name: 'payments',
      table: { schema: 'public', name: 'payments' },
      hops: [{ localColumn: 'order_id', target: { schema: 'public', name: 'orders' }, targetColumn: 'id' }],
      tenantColumn: 'tenant_id',
      orderBy: ['id'],
      timestampColumns: [],
      ownTenantColumns: [],
    };
    expect(tenantRowsQuery(collection, "'t''1'", 5)).toBe(
      `SELECT t0.* FROM "public"."payments" AS t0 WHERE t0."order_id" IN (SELECT t1."id" FROM "public"."orders" AS t1 WHERE t1."tenant_id" = 't''1') ORDER BY t0."id" LIMIT 5`,
    );
    // A payment with a tenant column of its own must name the same tenant as its order.
    const own = { ...collection, ownTenantColumns: [{ depth: 0, table: 'public.payments', column: 'tenant_id' }] };
    expect(tenantRowsQuery(own, "'t1'")).toBe(
      `SELECT t0.* FROM "public"."payments" AS t0 WHERE t0."order_id" IN (SELECT t1."id" FROM "public"."orders" AS t1 WHERE t1."tenant_id" = 't1') AND (t0."tenant_id" IS NULL OR t0."tenant_id" = 't1') ORDER BY t0."id"`,
    );
  });

  it('counts CSV records with newlines and quotes inside fields, and NDJSON lines', () => {
    const csv = new RecordCounter('csv');
    for (const part of ['id,note\n1,"a\nb"\n2,"say ""hi', '""\nx"\n3,plain\n']) csv.add(Buffer.from(part));
    expect(csv.records).toBe(4);
    const ndjson = new RecordCounter('ndjson');
    ndjson.add(Buffer.from('{"a":"x\\ny"}\n{"b":1}\n'));
    expect(ndjson.records).toBe(2);
  });

  it('writes tar archives that GNU tar extracts byte for byte', async () => {
    const dir = tempDir();
    try {
      const big = join(dir.path, 'big.bin');
      writeFileSync(big, Buffer.alloc(700_001, 7));
      const archive = join(dir.path, 'out.tar');
      await pipeline(
        tarStream([
          { name: 'x/big.bin', path: big, size: 700_001 },
          { name: 'x/note.txt', text: 'héllo\n' },
        ]),
        createWriteStream(archive),
      );
      const out = join(dir.path, 'out');
      mkdirSync(out);
      const result = spawnSync('tar', ['-xf', archive, '-C', out], { encoding: 'utf8' });
      expect(result.status, result.stderr).toBe(0);
      expect(readFileSync(join(out, 'x/big.bin')).equals(readFileSync(big))).toBe(true);
      expect(readFileSync(join(out, 'x/note.txt'), 'utf8')).toBe('héllo\n');
    } finally {
      dir.cleanup();
    }
  });
});
