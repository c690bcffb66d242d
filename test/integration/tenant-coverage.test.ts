import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../../src/cli/main';
import { COMMANDS } from '../../src/commands/registry';
import type { TenantExportManifest } from '../../src/tenant/export';
import type { CliRun } from '../helpers/cli';
import { createSampleDatabase, dropDatabase, query, sql, tempDir } from '../helpers/db';

// Payments get a tenant column of their own (as many schemas denormalise it), and refunds hang
// off payments: both are reached through `via` joins, so both can carry another tenant's rows.
const COLLECTIONS = `
      collections:
        - { table: tenants, column: id }
        - { table: orders, column: tenant_id }
        - { table: payments, via: ["order_id -> orders.id"] }
        - { table: refunds, via: ["payment_id -> payments.id", "order_id -> orders.id"] }
`;

interface ErrorOut {
  error: { code: string; message: string; fix: string };
}

async function inProcess(argv: string[]): Promise<CliRun> {
  let stdout = '';
  let stderr = '';
  const code = await runCli(COMMANDS, argv, { stdout: (t) => (stdout += t), stderr: (t) => (stderr += t), env: { PATH: process.env.PATH }, cwd: process.cwd(), interactive: false });
  return { code, stdout, stderr };
}

describe('tenant coverage: via joins never carry another tenant, plans compare content', () => {
  let db: Awaited<ReturnType<typeof createSampleDatabase>>;
  const dir = tempDir('lifeline-tenant-cov-');
  const config = (name: string, extra = '') => {
    const path = join(dir.path, `${name}.yml`);
    writeFileSync(path, `version: 1\nenvironments:\n  default:\n    tenants:\n      keep: 5\n${extra}${COLLECTIONS}`);
    return path;
  };
  let strict: string;
  let lenient: string;
  const cli = (args: string[], store: string, cfg = strict) => inProcess([...args, '--config', cfg, '--store', join(dir.path, store), '--database-url', db.url, '--json']);
  const exportsIn = (store: string, tenant: string) => {
    const kindDir = join(dir.path, store, 'default', 'tenants', tenant, 'exports');
    return existsSync(kindDir) ? readdirSync(kindDir) : [];
  };
  const firstPaymentOf = async (tenant: string) =>
    Number((await query<{ id: string }>(`SELECT min(p.id) AS id FROM payments p JOIN orders o ON o.id = p.order_id WHERE o.tenant_id = '${tenant}'`, db.name))[0]!.id);

  beforeAll(async () => {
    db = await createSampleDatabase(1, 'tenantcov');
    await sql(
      `ALTER TABLE payments ADD COLUMN tenant_id text;
       UPDATE payments p SET tenant_id = o.tenant_id FROM orders o WHERE o.id = p.order_id;
       CREATE TABLE refunds (id bigint PRIMARY KEY, payment_id bigint NOT NULL, amount_cents integer NOT NULL);
       INSERT INTO refunds SELECT p.id, p.id, 100 FROM payments p WHERE p.id % 7 = 0;`,
      db.name,
    );
    strict = config('strict');
    lenient = config('lenient', '      crossTenantRows: exclude\n');
  });
  afterAll(async () => {
    await dropDatabase(db.name);
    dir.cleanup();
  });

  describe('a child row naming another tenant than its parent', () => {
    let foreign: number;
    let foreignRefund: number;
    beforeAll(async () => {
      // A payment under a tenant-001 order that says it belongs to tenant-002, with a refund under it.
      foreign = await firstPaymentOf('tenant-001');
      await sql(`UPDATE payments SET tenant_id = 'tenant-002' WHERE id = ${foreign}; INSERT INTO refunds VALUES (${foreign}, ${foreign}, 5) ON CONFLICT (id) DO NOTHING`, db.name);
      foreignRefund = foreign;
    });
    afterAll(async () => {
      await sql(`UPDATE payments SET tenant_id = 'tenant-001' WHERE id = ${foreign}`, db.name);
    });

    it('fails the export by default (exit 3), naming the collections, the rows and the other tenant, and keeps nothing', async () => {
      const run = await cli(['tenant', 'export', '--tenant', 'tenant-001'], 'cross-store');
      expect(run.code, run.stderr).toBe(3);
      const { error } = JSON.parse(run.stdout) as ErrorOut;
      expect(error.code).toBe('CROSS_TENANT_ROWS');
      expect(error.message).toContain(`payments: 1 row joined through payments -> orders.tenant_id name another tenant`);
      expect(error.message).toContain(`"id" : ${foreign}, "tenant_id" : "tenant-002"`);
      // The refund's own table has no tenant column: its payment, one hop up, names the other tenant.
      expect(error.message).toContain(`refunds: 1 row joined through refunds -> payments -> orders.tenant_id`);
      expect(error.message).toContain(`"id" : ${foreignRefund}`);
      expect(error.fix).toContain('tenants.crossTenantRows: exclude');
      expect(exportsIn('cross-store', 'tenant-001')).toEqual([]);
    });

    it("fails the other tenant's export too: the row names tenant-002, but no tenant-002 export would hold it", async () => {
      const run = await cli(['tenant', 'export', '--tenant', 'tenant-002'], 'cross-store');
      expect(run.code, run.stderr).toBe(3);
      const { error } = JSON.parse(run.stdout) as ErrorOut;
      expect(error.code).toBe('CROSS_TENANT_ROWS');
      expect(error.message).toContain(`payments: 1 row name this tenant in their own tenant column but join through payments -> orders.tenant_id to another tenant`);
      expect(error.message).toContain(`"id" : ${foreign}, "tenant_id" : "tenant-002"`);
      expect(exportsIn('cross-store', 'tenant-002')).toEqual([]);
    });

    it('refuses the deletion plan too, so the row is never planned for deletion with tenant-001', async () => {
      const run = await cli(['tenant', 'deletion-plan', '--tenant', 'tenant-001'], 'cross-store');
      expect(run.code).toBe(3);
      expect((JSON.parse(run.stdout) as ErrorOut).error.code).toBe('CROSS_TENANT_ROWS');
    });

    it('with crossTenantRows: exclude, leaves the rows out of the export and the plan and counts them', async () => {
      const [{ n: payments }] = (await query<{ n: string }>(`SELECT count(*) AS n FROM payments p JOIN orders o ON o.id = p.order_id WHERE o.tenant_id = 'tenant-001'`, db.name)) as [{ n: string }];
      const run = await cli(['tenant', 'export', '--tenant', 'tenant-001'], 'lenient-store', lenient);
      expect(run.code, run.stderr).toBe(0);
      const out = JSON.parse(run.stdout) as { path: string };
      const manifest = JSON.parse(readFileSync(join(out.path, 'export.json'), 'utf8')) as TenantExportManifest;
      expect(manifest.crossTenantRows).toBe('exclude');
      expect(manifest.collections.find((c) => c.name === 'payments')).toMatchObject({ rows: Number(payments) - 1, crossTenantExcluded: 1 });
      expect(manifest.collections.find((c) => c.name === 'refunds')).toMatchObject({ crossTenantExcluded: 1 });
      const exportedPayments = readFileSync(join(out.path, 'payments.ndjson'), 'utf8')
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as { id: number; tenant_id: string });
      expect(exportedPayments.some((p) => p.id === foreign)).toBe(false);
      expect(exportedPayments.every((p) => p.tenant_id === 'tenant-001')).toBe(true);
      expect(readFileSync(join(out.path, 'refunds.ndjson'), 'utf8')).not.toContain(`"id":${foreignRefund},`);
      expect((JSON.parse(run.stdout) as { collections: { name: string; crossTenantExcluded?: number }[] }).collections.find((c) => c.name === 'payments')!.crossTenantExcluded).toBe(1);

      const plan = await cli(['tenant', 'deletion-plan', '--tenant', 'tenant-001'], 'lenient-store', lenient);
      expect(plan.code, plan.stdout + plan.stderr).toBe(0);
      const planned = JSON.parse(plan.stdout) as { collections: { name: string; rows: number; crossTenantExcluded?: number }[]; strandedRows: unknown[] };
      expect(planned.collections.find((c) => c.name === 'payments')).toMatchObject({ rows: Number(payments) - 1, crossTenantExcluded: 1 });
      expect(planned.strandedRows).toEqual([]);

      // Seen from tenant-002, the same row is stranded: the plan names what it leaves behind.
      expect((await cli(['tenant', 'export', '--tenant', 'tenant-002'], 'lenient-store', lenient)).code).toBe(0);
      const other = await cli(['tenant', 'deletion-plan', '--tenant', 'tenant-002'], 'lenient-store', lenient);
      expect(other.code, other.stdout).toBe(0);
      expect((JSON.parse(other.stdout) as { strandedRows: unknown[] }).strandedRows).toEqual([{ collection: 'payments', rows: 1, examples: [`{"id" : ${foreign}, "tenant_id" : "tenant-002"}`] }]);
    });

    it('does not take a primary key or the join column itself for a tenant column (no false alarm)', async () => {
      // locations.tenant_id is the join column and tenants.id a primary key: nothing to compare.
      const run = await cli(['tenant', 'export', '--tenant', 'tenant-003', '--collection', 'locations:tenant_id->tenants.id:id', '--collection', 'orders:tenant_id'], 'pk-store');
      expect(run.code, run.stdout + run.stderr).toBe(0);
    });

    it('a NULL own tenant column names no other tenant: the row is exported with its parent', async () => {
      const id = await firstPaymentOf('tenant-004');
      await sql(`UPDATE payments SET tenant_id = NULL WHERE id = ${id}`, db.name);
      try {
        const run = await cli(['tenant', 'export', '--tenant', 'tenant-004'], 'null-store');
        expect(run.code, run.stdout).toBe(0);
        expect(readFileSync(join((JSON.parse(run.stdout) as { path: string }).path, 'payments.ndjson'), 'utf8')).toContain(`"id":${id},`);
      } finally {
        await sql(`UPDATE payments SET tenant_id = 'tenant-004' WHERE id = ${id}`, db.name);
      }
    });
  });

  describe('deletion-plan says "covered" only when the rows are the exported rows', () => {
    const plan = (store: string, cfg = strict) => cli(['tenant', 'deletion-plan', '--tenant', 'tenant-003'], store, cfg);
    const refusedBecause = async (store: string) => {
      const run = await plan(store);
      expect(run.code, run.stdout).toBe(3);
      const { error } = JSON.parse(run.stdout) as ErrorOut;
      expect(error.code).toBe('NO_CURRENT_EXPORT');
      expect(error.fix).toMatch(/^export again: lifeline tenant export --env default --tenant tenant-003/);
      return error.message;
    };

    it('covers with a fresh export, recording and matching a digest per collection', async () => {
      expect((await cli(['tenant', 'export', '--tenant', 'tenant-003'], 'plan-store')).code).toBe(0);
      const run = await plan('plan-store');
      expect(run.code, run.stdout).toBe(0);
      const result = JSON.parse(run.stdout) as { coveredBy: { exportId: string; contentMatched: boolean; rowEncoding: string }; collections: { name: string; contentDigest: string }[] };
      expect(result.coveredBy).toMatchObject({ contentMatched: true, rowEncoding: 'lifeline-tenant-rows/1' });
      const manifest = JSON.parse(readFileSync(join(dir.path, 'plan-store', 'default', 'tenants', 'tenant-003', 'exports', result.coveredBy.exportId, 'export.json'), 'utf8')) as TenantExportManifest;
      for (const c of result.collections) expect(c.contentDigest).toBe(manifest.collections.find((e) => e.name === c.name)!.contentDigest);
    });

    it('refuses after an UPDATE that keeps every count and every timestamp, and covers again once it is undone', async () => {
      const [order] = await query<{ id: string; note: string | null }>(`SELECT id, customer_note AS note FROM orders WHERE tenant_id = 'tenant-003' ORDER BY id LIMIT 1`, db.name);
      await sql(`UPDATE orders SET total_cents = total_cents + 1 WHERE id = ${order!.id}`, db.name);
      expect(await refusedBecause('plan-store')).toMatch(/the rows of orders differ from the exported ones/);
      await sql(`UPDATE orders SET total_cents = total_cents - 1 WHERE id = ${order!.id}`, db.name);
      expect((await plan('plan-store')).code).toBe(0);
    });

    it('refuses after a row is inserted and another deleted (same count, same newest timestamp)', async () => {
      const [victim] = await query<{ id: string }>(
        `SELECT min(p.id) AS id FROM payments p JOIN orders o ON o.id = p.order_id WHERE o.tenant_id = 'tenant-003' AND NOT EXISTS (SELECT 1 FROM refunds r WHERE r.payment_id = p.id)`,
        db.name,
      );
      const row = `(SELECT order_id, method, amount_cents, paid_at, tenant_id FROM payments WHERE id = ${victim!.id})`;
      await sql(`INSERT INTO payments (id, order_id, method, amount_cents, paid_at, tenant_id) SELECT 990001, * FROM ${row} AS r; DELETE FROM payments WHERE id = ${victim!.id}`, db.name);
      try {
        expect(await refusedBecause('plan-store')).toMatch(/the rows of payments differ from the exported ones/);
      } finally {
        await sql(
          `INSERT INTO payments (id, order_id, method, amount_cents, paid_at, tenant_id) SELECT ${victim!.id}, order_id, method, amount_cents, paid_at, tenant_id FROM payments WHERE id = 990001; DELETE FROM payments WHERE id = 990001`,
          db.name,
        );
      }
      expect((await plan('plan-store')).code).toBe(0);
    });

    it('refuses an export whose recorded digest was edited, and one made before digests existed', async () => {
      const store = 'edited-store';
      const out = JSON.parse((await cli(['tenant', 'export', '--tenant', 'tenant-003'], store)).stdout) as { path: string };
      const manifestPath = join(out.path, 'export.json');
      const original = readFileSync(manifestPath, 'utf8');
      const manifest = JSON.parse(original) as TenantExportManifest;
      manifest.collections[1]!.contentDigest = 'f'.repeat(64);
      writeFileSync(manifestPath, JSON.stringify(manifest));
      expect(await refusedBecause(store)).toContain('orders has no content digest matching its file');
      delete manifest.rowEncoding;
      for (const c of manifest.collections) delete (c as Partial<typeof c>).contentDigest;
      writeFileSync(manifestPath, JSON.stringify(manifest));
      expect(await refusedBecause(store)).toContain('before exports recorded content digests');
      writeFileSync(manifestPath, original);
      expect((await plan(store)).code).toBe(0);
    });

    it('is not fooled by timestamps in the future: a scheduled row does not make every export stale', async () => {
      const [order] = await query<{ id: string; placed: string }>(`SELECT id, placed_at::text AS placed FROM orders WHERE tenant_id = 'tenant-003' ORDER BY id DESC LIMIT 1`, db.name);
      await sql(`UPDATE orders SET placed_at = now() + interval '3 days' WHERE id = ${order!.id}`, db.name);
      try {
        const store = 'future-store';
        expect((await cli(['tenant', 'export', '--tenant', 'tenant-003'], store)).code).toBe(0);
        const run = await plan(store);
        expect(run.code, run.stdout).toBe(0);
        expect((JSON.parse(run.stdout) as { lastWriteSource: string }).lastWriteSource).toContain('reported only');
      } finally {
        await sql(`UPDATE orders SET placed_at = '${order!.placed}' WHERE id = ${order!.id}`, db.name);
      }
    });

    it('compares CSV exports in their own encoding, and a collection exported along another path does not count', async () => {
      const store = 'csv-store';
      expect((await cli(['tenant', 'export', '--tenant', 'tenant-003', '--format', 'csv'], store)).code).toBe(0);
      expect((await plan(store)).code).toBe(0);
      await sql(`UPDATE payments SET method = method || ' ' WHERE id = (SELECT min(p.id) FROM payments p JOIN orders o ON o.id = p.order_id WHERE o.tenant_id = 'tenant-003')`, db.name);
      try {
        expect(await refusedBecause(store)).toMatch(/the rows of payments differ/);
      } finally {
        await sql(`UPDATE payments SET method = rtrim(method) WHERE id = (SELECT min(p.id) FROM payments p JOIN orders o ON o.id = p.order_id WHERE o.tenant_id = 'tenant-003')`, db.name);
      }
      // Payments exported through their own tenant column are not the rows the configured join would delete.
      const other = 'path-store';
      const run = await cli(
        [
          'tenant',
          'export',
          '--tenant',
          'tenant-003',
          '--collection',
          'tenants:id',
          '--collection',
          'orders:tenant_id',
          '--collection',
          'payments:tenant_id',
          '--collection',
          'refunds:payment_id->payments.id,order_id->orders.id',
        ],
        other,
      );
      expect(run.code, run.stdout).toBe(0);
      expect(await refusedBecause(other)).toContain('exported payments as payments.tenant_id, configured now as payments -> orders.tenant_id');
    });
  });
});
