import { join } from 'node:path';
import { usageError } from '../errors';
import { defaultOwner } from '../catalog/lock';
import { Catalog } from '../catalog/store';
import { IDENTITY_FIX, loadIdentity } from '../crypto/age';
import { parseCollectionFlag, type CollectionSpec } from '../tenant/collections';
import { tenantDatabase } from '../tenant/database';
import { planTenantDeletion } from '../tenant/deletion-plan';
import { EXPORT_MANIFEST, exportTenant, type TenantExportManifest } from '../tenant/export';
import type { ExportFormat } from '../tenant/rows';
import { tenantExportsKind } from '../tenant/tenant-id';
import { verifyTenantExport } from '../tenant/verify';
import { renderMarkdownTable } from '../report/table';
import { singleCommandAction } from './action-spec';
import { declaredInputs, environmentFor, type CommandContext, type CommandSpec, type InputSpec } from './spec';

const TENANT_INPUT = { name: 'tenant', type: 'string', required: true, description: 'The tenant id, exactly as stored (a value, never SQL).' } as const satisfies InputSpec;

function parseRowCap(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  if (!/^\d+$/.test(value.trim()) || Number(value) < 1) throw usageError('BAD_ROW_CAP', `--row-cap must be a positive whole number (got "${value}")`, 'pass e.g. --row-cap 500000');
  return Number(value);
}

const TENANT_EXPORT_INPUTS = [
  TENANT_INPUT,
  {
    name: 'collection',
    type: 'list',
    description: 'A collection as TABLE:COLUMN (orders:tenant_id) or TABLE:LOCAL->TABLE.COLUMN[:TENANT_COLUMN] (payments:order_id->orders.id); repeat for several. Replaces tenants.collections.',
  },
  { name: 'row-cap', type: 'string', description: 'Row cap of every collection for this run (overrides tenants.rowCap and per-collection caps).' },
  { name: 'allow-truncation', type: 'boolean', default: 'false', description: 'Export collections over their row cap up to the cap (by primary key) and mark them truncated, instead of refusing.' },
  { name: 'format', type: 'string', choices: ['ndjson', 'csv'], description: 'File format (default: tenants.format, else ndjson).' },
  { name: 'archive', type: 'boolean', default: 'false', description: 'Also pack the export into export.tar.gz with its own .sha256 file, for handoff.' },
] as const satisfies readonly InputSpec[];

export interface TenantExportInputs {
  tenant: string;
  /** From --collection; undefined: tenants.collections of the config. */
  collections: CollectionSpec[] | undefined;
  format: ExportFormat | undefined;
  rowCapOverride: number | undefined;
  allowTruncation: boolean;
  archive: boolean;
}

export function parseTenantExportInputs(ctx: CommandContext): TenantExportInputs {
  const inputs = declaredInputs(ctx, TENANT_EXPORT_INPUTS);
  const tenant = inputs.requiredString('tenant');
  const flags = inputs.list('collection');
  return {
    tenant,
    collections: flags.length ? flags.map(parseCollectionFlag) : undefined,
    format: inputs.string('format') as ExportFormat | undefined,
    rowCapOverride: parseRowCap(inputs.string('row-cap')),
    allowTruncation: inputs.boolean('allow-truncation'),
    archive: inputs.boolean('archive'),
  };
}

export const tenantExportCommand: CommandSpec = {
  name: 'tenant export',
  summary: "Export a tenant's collections with checksums and caps",
  inputs: [...TENANT_EXPORT_INPUTS],
  outputs: [
    { name: 'export-id', description: 'The id of the new export.' },
    { name: 'path', description: "The export's directory (holds export.json, SHA256SUMS and one file per collection)." },
    { name: 'manifest-sha256', description: 'sha256 of export.json.' },
    { name: 'archive-path', description: 'The archive, when archive is true.' },
    { name: 'rows', description: 'Rows exported, over all collections.' },
    { name: 'truncated', description: '"true" when a collection was truncated at its cap.' },
  ],
  implemented: true,
  async run(ctx) {
    const settings = environmentFor(ctx);
    const input = parseTenantExportInputs(ctx);
    const { tenant } = input;
    if (settings.encryption)
      ctx.logger.info(
        `collection files are encrypted to ${settings.encryption.recipients.length} age recipient(s) while they stream (<file>.age); the tenant's handoff needs age -d with one of their identities`,
      );
    const { runner, conn } = await tenantDatabase(settings);
    const result = await exportTenant({
      catalog: new Catalog(settings.store),
      env: settings.name,
      tenant,
      runner,
      conn,
      collections: input.collections ?? settings.tenants.collections,
      format: input.format ?? settings.tenants.format,
      rowCap: settings.tenants.rowCap,
      rowCapOverride: input.rowCapOverride,
      byteCap: settings.tenants.byteCap,
      allowTruncation: input.allowTruncation,
      archive: input.archive,
      keep: settings.tenants.keep,
      crossTenantRows: settings.tenants.crossTenantRows,
      logger: ctx.logger,
      owner: defaultOwner(ctx.env),
      encryptTo: settings.encryption?.recipients,
    });
    const m = result.entry.metadata;
    const archivePath = m.archive ? join(result.entry.dir, m.archive.file) : undefined;
    const table = m.collections.map(
      (c) =>
        `  ${c.name.padEnd(16)} ${String(c.rows).padStart(10)} rows ${String(c.bytes).padStart(12)} bytes  ${c.sha256}${c.truncated ? `  TRUNCATED (${c.trueCount} in the database, cap ${c.cap})` : ''}${c.crossTenantExcluded ? `  (${c.crossTenantExcluded} rows naming another tenant left out)` : ''}`,
    );
    return {
      json: {
        id: m.id,
        tenant: m.tenant,
        path: result.entry.dir,
        snapshotAt: m.snapshotAt,
        format: m.format,
        manifestSha256: result.manifestSha256,
        truncated: m.truncated,
        totals: m.totals,
        collections: m.collections.map((c) => ({
          name: c.name,
          file: c.file,
          rows: c.rows,
          bytes: c.bytes,
          sha256: c.sha256,
          cap: c.cap,
          truncated: c.truncated,
          trueCount: c.trueCount,
          contentDigest: c.contentDigest,
          ...(c.crossTenantExcluded ? { crossTenantExcluded: c.crossTenantExcluded } : {}),
        })),
        archive: m.archive ? { ...m.archive, path: archivePath } : null,
        pruned: result.pruned,
      },
      text: [
        `exported tenant ${m.tenant} as of ${m.snapshotAt}: ${m.totals.rows} rows, ${m.totals.bytes} bytes (${m.format})`,
        ...table,
        `  ${result.entry.dir}`,
        ...(archivePath ? [`  archive: ${archivePath} (sha256 ${m.archive!.sha256})`] : []),
        ...(result.pruned.length ? [`  pruned: ${result.pruned.join(', ')}`] : []),
      ].join('\n'),
      outputs: {
        'export-id': m.id,
        path: result.entry.dir,
        'manifest-sha256': result.manifestSha256,
        'archive-path': archivePath ?? '',
        rows: String(m.totals.rows),
        truncated: String(m.truncated),
      },
      summary: [
        `### Tenant export ${m.tenant}`,
        '',
        `Export \`${m.id}\`, snapshot ${m.snapshotAt}, ${m.format}.`,
        '',
        renderMarkdownTable(
          {
            headers: ['collection', 'rows', 'bytes', 'sha256', 'truncated'],
            rows: m.collections.map((c) => [c.name, String(c.rows), String(c.bytes), `\`${c.sha256.slice(0, 16)}…\``, c.truncated ? `yes (${c.trueCount} in the database)` : 'no']),
          },
          { escape: 'none' },
        ),
      ].join('\n'),
      annotations: m.truncated
        ? [
            {
              level: 'warning',
              message: `tenant ${m.tenant}: ${m.collections
                .filter((c) => c.truncated)
                .map((c) => c.name)
                .join(', ')} truncated at the row cap`,
            },
          ]
        : [],
    };
  },
};

const TENANT_VERIFY_INPUTS = [TENANT_INPUT, { name: 'export', type: 'string', default: 'latest', description: 'The export id, or "latest".' }] as const satisfies readonly InputSpec[];

export const tenantVerifyCommand: CommandSpec = {
  name: 'tenant verify',
  summary: 'Re-check a tenant export',
  inputs: [...TENANT_VERIFY_INPUTS],
  outputs: [{ name: 'ok', description: '"true" when the export verified.' }],
  implemented: true,
  async run(ctx) {
    const identity = await loadIdentity(ctx.env, ctx.logger);
    const settings = environmentFor(ctx);
    const inputs = declaredInputs(ctx, TENANT_VERIFY_INPUTS);
    const tenant = inputs.requiredString('tenant');
    const wanted = inputs.string('export') ?? 'latest';
    const catalog = new Catalog(settings.store);
    const kind = tenantExportsKind(tenant);
    const entry =
      wanted === 'latest' ? (await catalog.list<TenantExportManifest>(settings.name, kind, EXPORT_MANIFEST))[0] : await catalog.get<TenantExportManifest>(settings.name, kind, wanted, EXPORT_MANIFEST);
    if (!entry) {
      throw usageError(
        'EXPORT_NOT_FOUND',
        `tenant ${JSON.stringify(tenant)} has no export ${wanted === 'latest' ? 'yet' : wanted} in environment ${settings.name}`,
        `run lifeline tenant export --env ${settings.name} --tenant ${tenant}`,
      );
    }
    const verification = await verifyTenantExport(entry, { parseRecords: true, identity });
    const notChecked = `its files are encrypted and no identity was given, so only the ciphertext's checksums were checked: the rows were NOT read (${IDENTITY_FIX})`;
    const text = verification.ok
      ? verification.contentsChecked
        ? `export ${entry.id} of ${tenant} verified: ${verification.files.length} files, ${entry.metadata.totals.rows} rows${verification.encrypted ? ' (decrypted in the stream)' : ''}, snapshot ${entry.metadata.snapshotAt}`
        : `export ${entry.id} of ${tenant}: checksums verified for ${verification.files.length} files; ${notChecked}`
      : `export ${entry.id} of ${tenant} FAILED verification:\n${verification.problems.map((p) => `  ${p}`).join('\n')}`;
    if (verification.ok && !verification.contentsChecked) ctx.logger.warn(`export ${entry.id}: ${notChecked}`);
    return {
      json: { ...verification, path: entry.dir },
      text,
      outputs: { ok: String(verification.ok) },
      ...(verification.ok ? {} : { exitCode: 1 as const, failureMessage: `export ${entry.id} of ${tenant} does not verify (${verification.problems.length} problems)` }),
    };
  },
};

const DELETION_PLAN_INPUTS = [TENANT_INPUT] as const satisfies readonly InputSpec[];

export const tenantDeletionPlanCommand: CommandSpec = {
  name: 'tenant deletion-plan',
  summary: 'Print what an offboarding deletion would touch (refuses without a current verified export)',
  inputs: [...DELETION_PLAN_INPUTS],
  outputs: [],
  implemented: true,
  async run(ctx) {
    const settings = environmentFor(ctx);
    const tenant = declaredInputs(ctx, DELETION_PLAN_INPUTS).requiredString('tenant');
    const { runner, conn } = await tenantDatabase(settings);
    const plan = await planTenantDeletion({
      catalog: new Catalog(settings.store),
      env: settings.name,
      tenant,
      runner,
      conn,
      collections: settings.tenants.collections,
      lastWriteQuery: settings.tenants.lastWriteQuery,
      crossTenantRows: settings.tenants.crossTenantRows,
      identity: await loadIdentity(ctx.env, ctx.logger),
    });
    return {
      json: plan,
      text: [
        `deletion plan for tenant ${tenant} (for review; Lifeline deletes nothing): ${plan.totalRows} rows`,
        ...plan.collections.map(
          (c) =>
            `  ${c.name.padEnd(16)} ${String(c.rows).padStart(10)} rows  (${c.path})  sha256 ${c.contentDigest.slice(0, 16)}…${c.crossTenantExcluded ? `  (${c.crossTenantExcluded} rows naming another tenant left out)` : ''}`,
        ),
        ...plan.strandedRows.map((r) => `  NOT COVERED: ${r.collection} has ${r.rows} rows naming ${tenant} under another tenant's parent (e.g. ${r.examples.join(', ')}); this plan leaves them`),
        `covered by export ${plan.coveredBy.exportId} (snapshot ${plan.coveredBy.snapshotAt}, verified ${plan.coveredBy.verifiedAt}): every collection's rows, re-read at ${plan.plannedAt}, match the exported ones byte for byte; last write ${plan.lastWriteAt ?? 'unknown'} from ${plan.lastWriteSource}`,
      ].join('\n'),
    };
  },
};

export const tenantExportAction = singleCommandAction('tenant-export', "Export a tenant's data as checksummed, capped collections.", tenantExportCommand);
