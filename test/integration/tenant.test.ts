import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Catalog } from '../../src/catalog/store';
import { createMemoryLogger } from '../../src/logger';
import { pgEnv } from '../../src/runner/postgres-env';
import { exportTenant, type TenantExportManifest, type TenantExportOptions } from '../../src/tenant/export';
import { tenantExportsKind } from '../../src/tenant/tenant-id';
import { runCli } from '../../src/cli/main';
import { COMMANDS } from '../../src/commands/registry';
import { lifeline, type CliRun } from '../helpers/cli';
import { createSampleDatabase, dropDatabase, query, runner, sql, tableCounts, tempDir } from '../helpers/db';

const COLLECTIONS = `
      collections:
        - { table: tenants, column: id }
        - { table: locations, column: tenant_id }
        - { table: menu_items, column: tenant_id }
        - { table: orders, column: tenant_id }
        - { table: order_items, via: ["order_id -> orders.id"] }
        - { table: payments, via: ["order_id -> orders.id"] }
`;

/** The tenant's rows per collection, counted directly (the reference the exports must match). */
async function directCounts(database: string, tenant: string): Promise<Record<string, number>> {
  const t = tenant.replace(/'/g, "''");
  const [row] = await query<Record<string, number>>(
    `SELECT (SELECT count(*) FROM tenants WHERE id = '${t}') AS tenants,
            (SELECT count(*) FROM locations WHERE tenant_id = '${t}') AS locations,
            (SELECT count(*) FROM menu_items WHERE tenant_id = '${t}') AS menu_items,
            (SELECT count(*) FROM orders WHERE tenant_id = '${t}') AS orders,
            (SELECT count(*) FROM order_items i JOIN orders o ON o.id = i.order_id WHERE o.tenant_id = '${t}') AS order_items,
            (SELECT count(*) FROM payments p JOIN orders o ON o.id = p.order_id WHERE o.tenant_id = '${t}') AS payments`,
    database,
  );
  return Object.fromEntries(Object.entries(row!).map(([k, v]) => [k, Number(v)]));
}

async function inProcess(argv: string[]): Promise<CliRun> {
  let stdout = '';
  let stderr = '';
  const code = await runCli(COMMANDS, argv, { stdout: (t) => (stdout += t), stderr: (t) => (stderr += t), env: { PATH: process.env.PATH }, cwd: process.cwd(), interactive: false });
  return { code, stdout, stderr };
}

function readManifest(dir: string): TenantExportManifest {
  return JSON.parse(readFileSync(join(dir, 'export.json'), 'utf8')) as TenantExportManifest;
}

describe('tenant exports against the real PostgreSQL and sample dataset', () => {
  let db: Awaited<ReturnType<typeof createSampleDatabase>>;
  const dir = tempDir('lifeline-tenant-');
  let config: string;
  let store: string;
  // In-process (the same runCli the binary calls) to spare a Node start per call; the first test spawns the real CLI.
  const cli = (args: string[], extraStore?: string) => inProcess([...args, '--config', config, '--store', extraStore ?? store, '--database-url', db.url]);

  beforeAll(async () => {
    db = await createSampleDatabase(1, 'tenant');
    store = join(dir.path, 'store');
    config = join(dir.path, 'lifeline.yml');
    writeFileSync(config, `version: 1\nenvironments:\n  default:\n    tenants:\n      keep: 2\n${COLLECTIONS}`);
  });
  afterAll(async () => {
    await dropDatabase(db.name);
    dir.cleanup();
  });

  it('exports every collection of a tenant with exact row counts, valid NDJSON and SHA256SUMS', async () => {
    const run = await lifeline(['tenant', 'export', '--tenant', 'tenant-001', '--json', '--config', config, '--store', store, '--database-url', db.url]);
    expect(run.code, run.stderr).toBe(0);
    const out = JSON.parse(run.stdout) as { id: string; path: string; manifestSha256: string; collections: { name: string; rows: number; sha256: string }[] };
    const expected = await directCounts(db.name, 'tenant-001');
    expect(expected.orders).toBeGreaterThan(100);
    expect(Object.fromEntries(out.collections.map((c) => [c.name, c.rows]))).toEqual(expected);

    const manifest = readManifest(out.path);
    expect(manifest).toMatchObject({ tenant: 'tenant-001', format: 'ndjson', truncated: false, id: out.id });
    expect(Date.parse(manifest.snapshotAt)).toBeGreaterThan(Date.now() - 120_000);
    for (const c of manifest.collections) {
      expect(c).toMatchObject({ truncated: false, trueCount: c.rows, cap: 1_000_000 });
      const lines = readFileSync(join(out.path, c.file), 'utf8').split('\n');
      expect(lines.pop()).toBe('');
      expect(lines.length).toBe(c.rows);
      for (const line of lines) expect(() => JSON.parse(line)).not.toThrow();
    }
    // Notes hold tabs: they must come back byte for byte, not as COPY escapes.
    const orders = readFileSync(join(out.path, 'orders.ndjson'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { id: number; tenant_id: string; customer_note: string | null });
    expect(orders.every((o) => o.tenant_id === 'tenant-001')).toBe(true);
    const noted = orders.find((o) => o.customer_note)!;
    const [dbNote] = await query<{ note: string }>(`SELECT customer_note AS note FROM orders WHERE id = ${noted.id}`, db.name);
    expect(noted.customer_note).toBe(dbNote!.note);
    expect(noted.customer_note).toContain('\t');
    expect(orders.map((o) => o.id)).toEqual([...orders.map((o) => o.id)].sort((a, b) => a - b));

    const check = spawnSync('sha256sum', ['-c', 'SHA256SUMS'], { cwd: out.path, encoding: 'utf8' });
    expect(check.status, check.stdout + check.stderr).toBe(0);
    expect(check.stdout.trim().split('\n')).toHaveLength(6);
    const manifestHash = spawnSync('sha256sum', ['export.json'], { cwd: out.path, encoding: 'utf8' }).stdout.split(' ')[0];
    expect(out.manifestSha256).toBe(manifestHash);

    const verify = await cli(['tenant', 'verify', '--tenant', 'tenant-001', '--export', 'latest']);
    expect(verify.code, verify.stderr).toBe(0);
  });

  it('exports CSV with a header per collection, and counts that match another tenant', async () => {
    const run = await cli(['tenant', 'export', '--tenant', 'tenant-004', '--format', 'csv', '--json']);
    expect(run.code, run.stderr).toBe(0);
    const out = JSON.parse(run.stdout) as { path: string; collections: { name: string; rows: number }[] };
    expect(Object.fromEntries(out.collections.map((c) => [c.name, c.rows]))).toEqual(await directCounts(db.name, 'tenant-004'));
    const locations = readFileSync(join(out.path, 'locations.csv'), 'utf8').trim().split('\n');
    expect(locations[0]).toBe('id,tenant_id,name,city,timezone');
    expect(locations.slice(1).every((l) => l.split(',')[1] === 'tenant-004')).toBe(true);
    expect(spawnSync('sha256sum', ['-c', 'SHA256SUMS'], { cwd: out.path }).status).toBe(0);
  });

  it('refuses a collection over its row cap before writing anything, naming it and its count', async () => {
    const capStore = join(dir.path, 'cap-store');
    const counts = await directCounts(db.name, 'tenant-002');
    const run = await cli(['tenant', 'export', '--tenant', 'tenant-002', '--row-cap', '20', '--json'], capStore);
    expect(run.code).toBe(3);
    const error = JSON.parse(run.stdout) as { error: { code: string; message: string } };
    expect(error.error.code).toBe('ROW_CAP_EXCEEDED');
    // Whichever over-cap collection hits its cap first is named, with its true count.
    const [, name, count] = /(\w+) has (\d+) rows, over its cap of 20/.exec(error.error.message)!;
    expect(counts[name!]).toBeGreaterThan(20);
    expect(Number(count)).toBe(counts[name!]);
    const kindDir = join(capStore, 'default', 'tenants', 'tenant-002', 'exports');
    expect(existsSync(kindDir) ? readdirSync(kindDir) : []).toEqual([]);
  });

  it('with --allow-truncation exports the first rows by primary key and marks the collection truncated', async () => {
    const run = await cli(['tenant', 'export', '--tenant', 'tenant-002', '--collection', 'orders:tenant_id', '--collection', 'locations:tenant_id', '--row-cap', '20', '--allow-truncation', '--json']);
    expect(run.code, run.stderr).toBe(0);
    const out = JSON.parse(run.stdout) as { path: string };
    const manifest = readManifest(out.path);
    const counts = await directCounts(db.name, 'tenant-002');
    const orders = manifest.collections.find((c) => c.name === 'orders')!;
    expect(orders).toMatchObject({ rows: 20, cap: 20, truncated: true, trueCount: counts.orders });
    expect(manifest.collections.find((c) => c.name === 'locations')).toMatchObject({ rows: counts.locations, truncated: false });
    expect(manifest.truncated).toBe(true);
    const firstIds = await query<{ id: number }>(`SELECT id FROM orders WHERE tenant_id = 'tenant-002' ORDER BY id LIMIT 20`, db.name);
    const exportedIds = readFileSync(join(out.path, 'orders.ndjson'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => (JSON.parse(l) as { id: number }).id);
    expect(exportedIds).toEqual(firstIds.map((r) => Number(r.id)));
  });

  it('refuses an export over its byte cap and keeps nothing, staging included', async () => {
    const capStore = join(dir.path, 'byte-store');
    const capConfig = join(dir.path, 'bytecap.yml');
    writeFileSync(capConfig, `version: 1\nenvironments:\n  default:\n    tenants:\n      byteCap: 20KB\n${COLLECTIONS}`);
    const run = await inProcess(['tenant', 'export', '--tenant', 'tenant-001', '--config', capConfig, '--store', capStore, '--database-url', db.url]);
    expect(run.code, run.stderr).toBe(3);
    expect(run.stderr).toContain('byte cap of 20000 bytes');
    expect(readdirSync(join(capStore, 'default', 'tenants', 'tenant-001', 'exports'))).toEqual([]);
  });

  it('catches a flipped byte on verify', async () => {
    const run = await cli(['tenant', 'export', '--tenant', 'tenant-005', '--json']);
    expect(run.code, run.stderr).toBe(0);
    const { path, id } = JSON.parse(run.stdout) as { path: string; id: string };
    const file = join(path, 'payments.ndjson');
    const bytes = readFileSync(file);
    bytes[Math.floor(bytes.length / 2)] ^= 0x01;
    writeFileSync(file, bytes);
    const verify = await cli(['tenant', 'verify', '--tenant', 'tenant-005', '--export', id, '--json']);
    expect(verify.code).toBe(1);
    const result = JSON.parse(verify.stdout) as { ok: boolean; problems: string[] };
    expect(result.ok).toBe(false);
    expect(result.problems.some((p) => p.startsWith('payments.ndjson'))).toBe(true);
    expect((await cli(['tenant', 'verify', '--tenant', 'tenant-005', '--export', 'nope'])).code).toBe(2);
  });

  it('keeps at most tenants.keep exports, pruning the oldest only after the new one verifies', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      const run = await cli(['tenant', 'export', '--tenant', 'tenant-003', '--collection', 'locations:tenant_id', '--json']);
      expect(run.code, run.stderr).toBe(0);
      ids.push((JSON.parse(run.stdout) as { id: string }).id);
    }
    const kept = readdirSync(join(store, 'default', 'tenants', 'tenant-003', 'exports'))
      .filter((n) => !n.startsWith('.'))
      .sort();
    expect(kept).toEqual(ids.slice(1).sort());
  });

  it('packs an archive with its own checksum file', async () => {
    const run = await cli(['tenant', 'export', '--tenant', 'tenant-004', '--archive', '--json']);
    expect(run.code, run.stderr).toBe(0);
    const out = JSON.parse(run.stdout) as { path: string; archive: { path: string } };
    expect(spawnSync('sha256sum', ['-c', 'export.tar.gz.sha256'], { cwd: out.path }).status).toBe(0);
    expect(spawnSync('sha256sum', ['-c', 'SHA256SUMS'], { cwd: out.path }).status).toBe(0);
    const unpack = tempDir();
    try {
      expect(spawnSync('tar', ['-xzf', out.archive.path, '-C', unpack.path]).status).toBe(0);
      const [folder] = readdirSync(unpack.path);
      const inner = join(unpack.path, folder!);
      expect(readdirSync(inner).sort()).toEqual(['SHA256SUMS', 'export.json', 'locations.ndjson', 'menu_items.ndjson', 'order_items.ndjson', 'orders.ndjson', 'payments.ndjson', 'tenants.ndjson']);
      const check = spawnSync('sha256sum', ['-c', 'SHA256SUMS'], { cwd: inner, encoding: 'utf8' });
      expect(check.status, check.stdout).toBe(0);
    } finally {
      unpack.cleanup();
    }
  });

  it('treats tenant ids with quotes, semicolons and SQL as values', async () => {
    const hostile = `o'brien"; DROP TABLE orders; --\\`;
    const h = hostile.replace(/'/g, "''");
    await sql(
      `INSERT INTO tenants VALUES ('${h}', 'Hostile', now() - interval '1 day', now() - interval '1 day');
       INSERT INTO locations VALUES (9001, '${h}', 'X', 'Y', 'UTC');
       INSERT INTO orders VALUES (900001, '${h}', 9001, 'paid', now() - interval '1 day', 100, E'it''s\\\\ \\t "fine"'), (900002, '${h}', 9001, 'paid', now() - interval '1 day', 200, NULL);
       INSERT INTO payments VALUES (900001, 900001, 'card', 100, now() - interval '1 day')`,
      db.name,
    );
    const before = await tableCounts(db.name);
    const run = await cli(['tenant', 'export', '--tenant', hostile, '--json']);
    expect(run.code, run.stderr).toBe(0);
    const out = JSON.parse(run.stdout) as { path: string; collections: { name: string; rows: number }[] };
    expect(Object.fromEntries(out.collections.map((c) => [c.name, c.rows]))).toEqual({ tenants: 1, locations: 1, menu_items: 0, orders: 2, order_items: 0, payments: 1 });
    expect(out.path).toContain(join('tenants', 'x+o+27brien+22+3B+20DROP+20TABLE+20orders+3B+20--+5C', 'exports'));
    const notes = readFileSync(join(out.path, 'orders.ndjson'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => (JSON.parse(l) as { customer_note: string | null }).customer_note);
    expect(notes).toEqual(['it\'s\\ \t "fine"', null]);
    expect(readManifest(out.path).tenant).toBe(hostile);

    const unknown = await cli(['tenant', 'export', '--tenant', "'; DROP TABLE orders; --"]);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain('has no rows in any collection');
    expect(await tableCounts(db.name)).toEqual(before);
  });

  it('exports every collection from one snapshot, even when a write lands between them', async () => {
    const before = await directCounts(db.name, 'tenant-003');
    const logger = createMemoryLogger();
    // Called right before each COPY starts: commit a new order for the tenant just before orders' COPY.
    const info = logger.info;
    logger.info = (message: string) => {
      info(message);
      if (message.startsWith('orders:')) {
        const insert = spawnSync('psql', ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-c', `INSERT INTO orders VALUES (990001, 'tenant-003', 7, 'paid', now(), 1, NULL)`], {
          env: { ...process.env, ...pgEnv(db.conn) } as NodeJS.ProcessEnv,
          encoding: 'utf8',
        });
        expect(insert.status, insert.stderr).toBe(0);
      }
    };
    const result = await exportTenant({
      catalog: new Catalog(join(dir.path, 'snapshot-store')),
      env: 'default',
      tenant: 'tenant-003',
      runner,
      conn: db.conn,
      collections: [{ table: 'tenants', column: 'id' }, { table: 'locations' }, { table: 'orders' }],
      format: 'ndjson',
      rowCap: 1_000_000,
      byteCap: 1e9,
      allowTruncation: false,
      archive: false,
      keep: 1,
      logger,
    });
    expect((await directCounts(db.name, 'tenant-003')).orders).toBe(before.orders! + 1);
    const orders = result.entry.metadata.collections.find((c) => c.name === 'orders')!;
    expect(orders).toMatchObject({ rows: before.orders, trueCount: before.orders });
    expect(readFileSync(join(result.entry.dir, 'orders.ndjson'), 'utf8')).not.toContain('"id":990001');
    await sql('DELETE FROM orders WHERE id = 990001', db.name);
  });

  it('refuses ids that would escape the catalog before touching anything', async () => {
    const pathStore = join(dir.path, 'path-store');
    for (const bad of ['../tenant-001', 'a/b', '..', '/etc']) {
      const run = await cli(['tenant', 'export', '--tenant', bad], pathStore);
      expect(run.code, bad).toBe(2);
      expect(run.stderr).toContain('tenant id');
    }
    const options: TenantExportOptions = {
      catalog: new Catalog(pathStore),
      env: 'default',
      tenant: 'tenant\u0000-001',
      runner,
      conn: db.conn,
      collections: [{ table: 'orders', column: 'tenant_id' }],
      format: 'ndjson',
      rowCap: 10,
      byteCap: 1e9,
      allowTruncation: false,
      archive: false,
      keep: 1,
      logger: createMemoryLogger(),
    };
    await expect(exportTenant(options)).rejects.toMatchObject({ exitCode: 2, code: 'BAD_TENANT' });
    expect(existsSync(pathStore)).toBe(false);
    expect(() => tenantExportsKind('tenant\n001')).toThrow(/control character/);
  });

  it('refuses unknown tables and columns with exit 2', async () => {
    const table = await cli(['tenant', 'export', '--tenant', 'tenant-001', '--collection', 'invoices:tenant_id']);
    expect(table.code).toBe(2);
    expect(table.stderr).toContain('table "invoices" does not exist');
    const column = await cli(['tenant', 'export', '--tenant', 'tenant-001', '--collection', 'payments:order_id->orders.tenant']);
    expect(column.code).toBe(2);
    expect(column.stderr).toContain('join target column "tenant" is not a column of public.orders');
    const injected = await cli(['tenant', 'export', '--tenant', 'tenant-001', '--collection', 'orders:tenant_id = tenant_id OR true --']);
    expect(injected.code).toBe(2);
  });

  it('plans a deletion only when a verified export holds exactly the current rows', async () => {
    const planStore = join(dir.path, 'plan-store');
    const refused = await cli(['tenant', 'deletion-plan', '--tenant', 'tenant-005'], planStore);
    expect(refused.code, refused.stderr).toBe(3);
    expect(refused.stderr).toContain('no verified export');

    expect((await cli(['tenant', 'export', '--tenant', 'tenant-005'], planStore)).code).toBe(0);
    const plan = await cli(['tenant', 'deletion-plan', '--tenant', 'tenant-005', '--json'], planStore);
    expect(plan.code, plan.stderr).toBe(0);
    const result = JSON.parse(plan.stdout) as { collections: { name: string; rows: number }[]; coveredBy: { exportId: string } };
    expect(Object.fromEntries(result.collections.map((c) => [c.name, c.rows]))).toEqual(await directCounts(db.name, 'tenant-005'));
    expect(result.collections.map((c) => c.name)).toEqual(['payments', 'order_items', 'orders', 'menu_items', 'locations', 'tenants']);

    // A write after the export (even one that keeps every count) makes the export stale.
    await sql(`UPDATE tenants SET updated_at = now() + interval '1 second' WHERE id = 'tenant-005'`, db.name);
    const stale = await cli(['tenant', 'deletion-plan', '--tenant', 'tenant-005'], planStore);
    expect(stale.code).toBe(3);
    expect(stale.stderr).toContain('the rows of tenants differ from the exported ones');

    // A fresh export covers it again; a flipped byte in that export makes it refuse again.
    const again = await cli(['tenant', 'export', '--tenant', 'tenant-005', '--json'], planStore);
    expect(again.code, again.stderr).toBe(0);
    expect((await cli(['tenant', 'deletion-plan', '--tenant', 'tenant-005'], planStore)).code).toBe(0);
    const exportsDir = join(planStore, 'default', 'tenants', 'tenant-005', 'exports');
    for (const id of readdirSync(exportsDir)) {
      const file = join(exportsDir, id, 'tenants.ndjson');
      writeFileSync(file, readFileSync(file, 'utf8').replace('Restaurant', 'Restaurent'));
    }
    const corrupt = await cli(['tenant', 'deletion-plan', '--tenant', 'tenant-005'], planStore);
    expect(corrupt.code).toBe(3);
    expect(corrupt.stderr).toContain('does not verify');
  });
  it('uses tenants.lastWriteQuery, with the tenant bound as a value, instead of the timestamp columns', async () => {
    const queryStore = join(dir.path, 'query-store');
    const queryConfig = join(dir.path, 'lastwrite.yml');
    writeFileSync(queryConfig, `version: 1\nenvironments:\n  default:\n    tenants:\n      lastWriteQuery: "SELECT max(updated_at) FROM tenants WHERE id = :'tenant'"\n${COLLECTIONS}`);
    const run = (args: string[]) => inProcess([...args, '--config', queryConfig, '--store', queryStore, '--database-url', db.url]);
    // The configured query can see writes outside the collections: it must be older than the export.
    await sql(`UPDATE tenants SET updated_at = now() + interval '1 hour' WHERE id = 'tenant-002'`, db.name);
    expect((await run(['tenant', 'export', '--tenant', 'tenant-002'])).code).toBe(0);
    const refused = await run(['tenant', 'deletion-plan', '--tenant', 'tenant-002']);
    expect(refused.code).toBe(3);
    expect(refused.stderr).toContain('not after the last write');
    await sql(`UPDATE tenants SET updated_at = now() - interval '1 hour' WHERE id = 'tenant-002'`, db.name);
    expect((await run(['tenant', 'export', '--tenant', 'tenant-002'])).code).toBe(0);
    const plan = await run(['tenant', 'deletion-plan', '--tenant', 'tenant-002', '--json']);
    expect(plan.code, plan.stderr).toBe(0);
    expect((JSON.parse(plan.stdout) as { lastWriteSource: string }).lastWriteSource).toBe('tenants.lastWriteQuery');

    writeFileSync(queryConfig, `version: 1\nenvironments:\n  default:\n    tenants:\n      lastWriteQuery: "SELECT max(updated_at) FROM tenants"\n${COLLECTIONS}`);
    const unbound = await run(['tenant', 'deletion-plan', '--tenant', 'tenant-002']);
    expect(unbound.code).toBe(2);
    expect(unbound.stderr).toContain(":'tenant'");
  });
});
