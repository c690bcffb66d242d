import { usageError } from '../errors';
import { assertSafeSegment } from '../catalog/store';

const PLAIN_SEGMENT = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;
const MAX_TENANT_ID_LENGTH = 200;

/**
 * Refuses tenant ids that could escape the catalog or cannot travel safely: empty, too long,
 * containing `/`, `..` or control characters (NUL included). Anything else, quotes and
 * semicolons too, is a legitimate value: it reaches the database only as a quoted literal.
 */
export function assertUsableTenantId(tenant: string): void {
  const fix = 'pass the tenant id exactly as stored in the database, e.g. --tenant tenant-001';
  if (tenant.trim() === '') throw usageError('BAD_TENANT', 'the tenant id is empty', fix);
  if (tenant.length > MAX_TENANT_ID_LENGTH) throw usageError('BAD_TENANT', `the tenant id is ${tenant.length} characters long; at most ${MAX_TENANT_ID_LENGTH} are accepted`, fix);
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(tenant)) throw usageError('BAD_TENANT', `the tenant id ${JSON.stringify(tenant)} contains a control character (NUL, newline, tab, ...)`, fix);
  if (tenant.includes('/') || tenant.includes('..')) {
    throw usageError('BAD_TENANT', `the tenant id ${JSON.stringify(tenant)} contains '/' or '..', which could escape the catalog's directory`, fix);
  }
}

/**
 * The catalog directory name of a tenant. Plain ids (`tenant-001`) are used as they are; any
 * other id is written as `x+` followed by its UTF-8 bytes with everything outside
 * `[A-Za-z0-9_-]` escaped as `+HH`. Plain ids never contain `+`, so the mapping is one-to-one.
 */
export function tenantSegment(tenant: string): string {
  assertUsableTenantId(tenant);
  let segment: string;
  if (PLAIN_SEGMENT.test(tenant)) {
    segment = tenant;
  } else {
    const escaped = [...Buffer.from(tenant, 'utf8')].map((byte) => {
      const char = String.fromCharCode(byte);
      return /[A-Za-z0-9_-]/.test(char) ? char : `+${byte.toString(16).toUpperCase().padStart(2, '0')}`;
    });
    segment = `x+${escaped.join('')}`;
  }
  assertSafeSegment(segment, 'tenant id (as a catalog name)');
  return segment;
}

export function tenantExportsKind(tenant: string): `tenants/${string}/exports` {
  return `tenants/${tenantSegment(tenant)}/exports`;
}
