import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ERROR_CODES } from '../../src/error-codes';
import { refusal, usageError } from '../../src/errors';
import { errorsDoc } from '../../scripts/gen-errors';

const ROOT = resolve(__dirname, '../..');

function sources(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? sources(path) : name.endsWith('.ts') ? [path] : [];
  });
}

describe('error codes (src/error-codes.ts)', () => {
  it('docs/errors.md is generated from the table (npm run gen:errors)', () => {
    expect(readFileSync(join(ROOT, 'docs/errors.md'), 'utf8')).toBe(errorsDoc());
  });

  it('each code has a one-line doc and at least one kind', () => {
    for (const [code, { kinds, doc }] of Object.entries(ERROR_CODES)) {
      expect(code).toMatch(/^[A-Z][A-Z0-9_]+$/);
      expect(kinds.length, code).toBeGreaterThan(0);
      expect(doc, code).toMatch(/^\S.*[.)]$/);
      expect(doc, code).not.toContain('\n');
    }
  });

  it('no declared code is dead: each is written in src/ or test support, or comes from a family built there (FS_<errno>, MANIFEST_/DRILL_REPORT_<sigstore code>)', () => {
    const text = [...sources(join(ROOT, 'src')), join(ROOT, 'test/helpers/sample-dataset.ts')]
      .filter((f) => !f.endsWith('error-codes.ts'))
      .map((f) => readFileSync(f, 'utf8'))
      .join('\n');
    const fsErrnos = readFileSync(join(ROOT, 'src/catalog/fs-errors.ts'), 'utf8');
    const dead = Object.keys(ERROR_CODES).filter((code) => {
      if (text.includes(`'${code}'`)) return false;
      if (code.startsWith('FS_') && fsErrnos.includes(`  ${code.slice(3)}: {`)) return false;
      const signed = /^(?:MANIFEST|DRILL_REPORT)_(.+)$/.exec(code)?.[1];
      if (signed && (text.includes(`'MANIFEST_${signed}'`) || /_ERROR$/.test(signed))) return false;
      return true;
    });
    expect(dead).toEqual([]);
  });

  it('the constructors keep the kind a code is declared with (exit 2 and 3)', () => {
    expect(usageError('BACKUP_NOT_FOUND', 'x').exitCode).toBe(2);
    expect(refusal('LOCK_HELD', 'x').exitCode).toBe(3);
    // @ts-expect-error LOCK_HELD is declared as a refusal only: the type forbids a usage error with it
    usageError('LOCK_HELD', 'x');
    // @ts-expect-error an undeclared code does not compile
    refusal('NOT_A_DECLARED_CODE', 'x');
  });
});
