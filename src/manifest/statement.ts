import { z } from 'zod';
import { failure } from '../errors';
import type { CodeOf } from '../error-codes';
import { imageName, parseImageReference } from './image-ref';
import { IN_TOTO_STATEMENT_TYPE, LIFELINE_PREDICATE_TYPE, SERVICE_ROLES, type InTotoStatement, type InTotoSubject, type ReleaseManifest } from './types';

/** The in-toto Statement: one subject per service image, so standard tooling can check an image against it. */
export function buildStatement(manifest: ReleaseManifest): InTotoStatement {
  return {
    _type: IN_TOTO_STATEMENT_TYPE,
    subject: SERVICE_ROLES.map((role) => subjectOf(manifest.images[role])),
    predicateType: LIFELINE_PREDICATE_TYPE,
    predicate: manifest,
  };
}

function subjectOf(pinned: string): InTotoSubject {
  const ref = parseImageReference(pinned);
  return { name: imageName(ref), digest: { sha256: ref.digest!.slice('sha256:'.length) } };
}

/** The exact bytes that are signed and stored as manifest.json. */
export function serializeStatement(statement: InTotoStatement): Buffer {
  return Buffer.from(`${JSON.stringify(statement, null, 2)}\n`);
}

const nonEmpty = z.string().min(1);
const predicateSchema = z
  .object({
    release: z.object({
      version: nonEmpty,
      gitSha: nonEmpty.optional(),
      environment: nonEmpty,
      createdAt: z.iso.datetime(),
      workflowRun: z.object({ repository: nonEmpty, runId: nonEmpty, workflow: nonEmpty, ref: nonEmpty, sha: nonEmpty }).optional(),
    }),
    images: z.object({ api: nonEmpty, web: nonEmpty, worker: nonEmpty }),
    migrationHead: nonEmpty.nullable(),
    backup: z.object({ id: nonEmpty, sha256: z.string().regex(/^[0-9a-f]{64}$/) }).nullable(),
  })
  .loose();

const PINNED = /^[^@\s]+@sha256:[0-9a-f]{64}$/;

/**
 * Reads a release manifest out of a verified payload. Anything that is not exactly Lifeline's
 * statement (another statement type, another predicate type, an image by tag, subjects that do
 * not match the images) fails: deploy must never act on a manifest it only half understands.
 */
export function parseVerifiedStatement(payload: Buffer): ReleaseManifest {
  const invalid = (code: CodeOf<'failed'>, why: string) =>
    failure(code, `the signed manifest is not usable: ${why}`, { fix: 'create a new manifest with `lifeline manifest create`; do not edit signed manifests' });
  let statement: Record<string, unknown>;
  try {
    statement = JSON.parse(payload.toString('utf8')) as Record<string, unknown>;
  } catch {
    throw invalid('MANIFEST_NOT_JSON', 'the payload is not JSON');
  }
  if (statement._type !== IN_TOTO_STATEMENT_TYPE) throw invalid('MANIFEST_WRONG_TYPE', `_type is ${JSON.stringify(statement._type)}, expected ${IN_TOTO_STATEMENT_TYPE}`);
  if (statement.predicateType !== LIFELINE_PREDICATE_TYPE)
    throw invalid('MANIFEST_WRONG_PREDICATE', `predicateType is ${JSON.stringify(statement.predicateType)}, expected ${LIFELINE_PREDICATE_TYPE}`);
  const parsed = predicateSchema.safeParse(statement.predicate);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw invalid('MANIFEST_INVALID_PREDICATE', `predicate.${issue.path.join('.')}: ${issue.message}`);
  }
  const manifest = parsed.data as ReleaseManifest;
  for (const role of SERVICE_ROLES) {
    if (!PINNED.test(manifest.images[role])) {
      throw failure('MANIFEST_IMAGE_NOT_PINNED', `the signed manifest names the ${role} image by tag (${manifest.images[role]}), not by digest`, {
        fix: 'a release must pin every image by digest: create a new manifest with `lifeline manifest create`, which resolves tags to digests',
      });
    }
  }
  const subjects = Array.isArray(statement.subject) ? (statement.subject as InTotoSubject[]) : [];
  const expected = SERVICE_ROLES.map((role) => subjectOf(manifest.images[role]));
  const same = expected.every((e) => subjects.some((s) => s?.name === e.name && s?.digest?.sha256 === e.digest.sha256)) && subjects.length === expected.length;
  if (!same) throw invalid('MANIFEST_SUBJECT_MISMATCH', "the statement's subjects do not match the predicate's images");
  return manifest;
}
