import { createServer, type Server } from 'node:http';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { fulcioHandler, initializeCA, initializeCTLog, initializeTLog, initializeTSA, tsaHandler, type HandlerFn } from '@sigstore/mock';
import { bundleFromJSON } from '@sigstore/bundle';
import { TrustedRoot } from '@sigstore/protobuf-specs';
import { toSignedEntity, toTrustMaterial, Verifier } from '@sigstore/verify';
import { createHash, generateKeyPairSync } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { Catalog } from '../../src/catalog/store';
import { LifelineError } from '../../src/errors';
import { createMemoryLogger } from '../../src/logger';
import { createReleaseManifest, signDssePayload } from '../../src/manifest/create';
import { DRILL_REPORT_PAYLOAD_TYPE } from '../../src/drill/report';
import { verifyReleaseManifest, verifySignedFile } from '../../src/manifest/verify';
import { fakeImages, testSigningKey } from '../helpers/releases';
import { parse } from 'yaml';
import { lifeline, REPO } from '../helpers/cli';

const WORKFLOW = 'https://github.com/acme/orders/.github/workflows/deploy.yml@refs/heads/main';
const GITHUB_ISSUER = 'https://token.actions.githubusercontent.com';

/**
 * A throwaway Fulcio (with its CT log) and timestamp authority from @sigstore/mock, served over
 * real HTTP on 127.0.0.1, and the trusted root that names them: the real @sigstore/sign and
 * @sigstore/verify code runs against it, offline.
 */
interface MockSigstore {
  url: string;
  trustedRootPath: string;
  /** The same instance without its timestamp authority: a Rekor entry is then required. */
  rekorOnlyRootPath: string;
  stop(): Promise<void>;
}

const toBuffer = (bytes: ArrayBufferView | ArrayBuffer) => (ArrayBuffer.isView(bytes) ? Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength) : Buffer.from(bytes));
const keyPair = () => generateKeyPairSync('ec', { namedCurve: 'P-256' });

async function startMockSigstore(dir: string): Promise<MockSigstore> {
  // Fixed clocks: the mock TSA writes milliseconds without trailing zeros (".5Z"), which
  // @sigstore/core rightly rejects, so its clock is pinned to a time with three non-zero digits.
  const issued = new Date(Math.floor(Date.now() / 1000) * 1000);
  const ctLog = await initializeCTLog(keyPair(), issued);
  const ca = await initializeCA(keyPair(), ctLog, issued);
  const tsa = await initializeTSA(keyPair(), new Date(issued.getTime() + 1123));
  const routes: Record<string, HandlerFn> = { [fulcioHandler(ca).path]: fulcioHandler(ca).fn, [tsaHandler(tsa).path]: tsaHandler(tsa).fn };
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', async () => {
      const handler = req.method === 'POST' ? routes[req.url ?? ''] : undefined;
      if (!handler) {
        res.writeHead(404).end();
        return;
      }
      const { statusCode, response, contentType } = await handler(Buffer.concat(chunks).toString('utf8'));
      res.writeHead(statusCode, { 'Content-Type': contentType ?? 'text/plain' });
      res.end(typeof response === 'string' ? response : toBuffer(response));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const tlog = await initializeTLog(url, keyPair());
  const validFor = { start: '2000-01-01T00:00:00Z' };
  const root = {
    mediaType: 'application/vnd.dev.sigstore.trustedroot+json;version=0.1',
    tlogs: [
      {
        baseUrl: url,
        hashAlgorithm: 'SHA2_256',
        publicKey: { rawBytes: tlog.publicKey.toString('base64'), keyDetails: 'PKIX_ECDSA_P256_SHA_256', validFor },
        logId: { keyId: createHash('sha256').update(tlog.publicKey).digest('base64') },
      },
    ],
    certificateAuthorities: [
      { subject: { organization: 'sigstore', commonName: 'sigstore' }, uri: url, certChain: { certificates: [{ rawBytes: toBuffer(ca.rootCertificate).toString('base64') }] }, validFor },
    ],
    ctlogs: [
      {
        baseUrl: url,
        hashAlgorithm: 'SHA2_256',
        publicKey: { rawBytes: ctLog.publicKey.toString('base64'), keyDetails: 'PKIX_ECDSA_P256_SHA_256', validFor },
        logId: { keyId: toBuffer(ctLog.logID).toString('base64') },
      },
    ],
    timestampAuthorities: [
      {
        subject: { organization: 'sigstore', commonName: 'sigstore-tsa' },
        uri: url,
        certChain: { certificates: [{ rawBytes: toBuffer(tsa.intCertificate).toString('base64') }, { rawBytes: toBuffer(tsa.rootCertificate).toString('base64') }] },
        validFor,
      },
    ],
  };
  const trustedRootPath = join(dir, 'trusted_root.json');
  writeFileSync(trustedRootPath, JSON.stringify(root, null, 2));
  const rekorOnlyRootPath = join(dir, 'trusted_root-rekor-only.json');
  writeFileSync(rekorOnlyRootPath, JSON.stringify({ ...root, timestampAuthorities: [] }, null, 2));
  return { url, trustedRootPath, rekorOnlyRootPath, stop: () => new Promise<void>((resolve) => server.close(() => resolve())) };
}

/** An (unsigned) OIDC token: the mock Fulcio reads `sub` and `iss` from it, as Fulcio does after checking it. */
function oidcToken(claims: Record<string, string>): string {
  const part = (value: object) => Buffer.from(JSON.stringify(value)).toString('base64url');
  return `${part({ alg: 'none', typ: 'JWT' })}.${part({ aud: 'sigstore', ...claims })}.`;
}

describe('keyless release manifests (Fulcio certificate + timestamp authority)', () => {
  let dir: string;
  let sigstore: MockSigstore;
  let catalog: Catalog;

  const signAs = (release: string, identity: string, issuer = GITHUB_ISSUER, claims: Record<string, string> = {}) =>
    createReleaseManifest({
      catalog,
      env: 'production',
      release,
      images: fakeImages(release),
      signer: { keyless: true, fulcioUrl: sigstore.url, tsaUrl: sigstore.url, identityToken: async () => oidcToken({ sub: identity, iss: issuer, ...claims }) },
      logger: createMemoryLogger(),
    });
  const verify = (release: string, certificateIdentity = WORKFLOW, certificateOidcIssuer = GITHUB_ISSUER) =>
    verifyReleaseManifest({ catalog, env: 'production', release, policy: { certificateIdentity, certificateOidcIssuer, trustedRoot: sigstore.trustedRootPath } });
  const failureOf = async (promise: Promise<unknown>) => {
    const error = await promise.then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(LifelineError);
    return error as LifelineError;
  };

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'lifeline-keyless-'));
    sigstore = await startMockSigstore(dir);
    catalog = new Catalog(join(dir, 'store'));
    await signAs('v1', WORKFLOW);
    await signAs('v2-evil', `${WORKFLOW}-evil`);
    await signAs('v3-other-issuer', WORKFLOW, 'https://accounts.example.com');
    await signAs('v4-dotted', WORKFLOW.replace('deploy.yml', 'deployXyml'));
    await signAs('v5-shop', WORKFLOW, GITHUB_ISSUER, { repository: 'acme/shop', ref: 'refs/heads/main' });
    await signAs('v6-other-repo', WORKFLOW, GITHUB_ISSUER, { repository: 'mallory/shop', ref: 'refs/heads/main' });
  });
  afterAll(async () => {
    await sigstore?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test('the bundle is a standard v0.3 DSSE bundle with a Fulcio certificate and an RFC 3161 timestamp', () => {
    const json = JSON.parse(readFileSync(join(catalog.entryDir('production', 'releases', 'v1'), 'manifest.sigstore.json'), 'utf8'));
    expect(json.mediaType).toBe('application/vnd.dev.sigstore.bundle.v0.3+json');
    expect(json.verificationMaterial.certificate.rawBytes).toBeTruthy();
    expect(json.verificationMaterial.timestampVerificationData.rfc3161Timestamps).toHaveLength(1);
    expect(json.dsseEnvelope.payloadType).toBe('application/vnd.in-toto+json');
  });

  test('the exact workflow identity and issuer verify', async () => {
    const verified = await verify('v1');
    expect(verified.signer).toEqual({ identity: WORKFLOW, issuer: GITHUB_ISSUER });
    expect(verified.manifest.images).toEqual(fakeImages('v1'));
  });

  test('a certificate for ...@refs/heads/main-evil is rejected, though an unanchored string policy would accept it', async () => {
    const bundle = bundleFromJSON(JSON.parse(readFileSync(join(catalog.entryDir('production', 'releases', 'v2-evil'), 'manifest.sigstore.json'), 'utf8')));
    const trust = toTrustMaterial(TrustedRoot.fromJSON(JSON.parse(readFileSync(sigstore.trustedRootPath, 'utf8'))));
    // The trap this guards against: @sigstore/verify's own string policy is a regex search.
    expect(() => new Verifier(trust, { tlogThreshold: 0 }).verify(toSignedEntity(bundle), { subjectAlternativeName: WORKFLOW, extensions: { issuer: GITHUB_ISSUER } })).not.toThrow();

    const error = await failureOf(verify('v2-evil'));
    expect(error.exitCode).toBe(1);
    expect(error.code, error.message).toBe('MANIFEST_WRONG_IDENTITY');
    expect(error.message).toContain(`not exactly ${WORKFLOW}`);
  });

  test('a set of trusted identities: a manifest signed by an older workflow commit still verifies after an upgrade, an unlisted one does not', async () => {
    const upgraded = WORKFLOW.replace(/@.*$/, '@2222222222222222222222222222222222222222');
    const both = await verifyReleaseManifest({
      catalog,
      env: 'production',
      release: 'v1',
      policy: { certificateIdentity: [upgraded, WORKFLOW], certificateOidcIssuer: GITHUB_ISSUER, trustedRoot: sigstore.trustedRootPath },
    });
    expect(both.signer.identity).toBe(WORKFLOW);
    const onlyNew = await failureOf(
      verifyReleaseManifest({ catalog, env: 'production', release: 'v1', policy: { certificateIdentity: [upgraded], certificateOidcIssuer: GITHUB_ISSUER, trustedRoot: sigstore.trustedRootPath } }),
    );
    expect(onlyNew.code).toBe('MANIFEST_WRONG_IDENTITY');
    // The set is exact per member: the -evil certificate matches none of them.
    const evil = await failureOf(
      verifyReleaseManifest({
        catalog,
        env: 'production',
        release: 'v2-evil',
        policy: { certificateIdentity: `${upgraded}\n${WORKFLOW}`, certificateOidcIssuer: GITHUB_ISSUER, trustedRoot: sigstore.trustedRootPath },
      }),
    );
    expect(evil.code).toBe('MANIFEST_WRONG_IDENTITY');
    expect(evil.message).toContain('none of the 2 trusted identities');
  });

  test('a policy that is a prefix of the real identity does not match either', async () => {
    const error = await failureOf(verify('v1', WORKFLOW.replace(/main$/, 'ma')));
    expect(error.code, error.message).toBe('MANIFEST_WRONG_IDENTITY');
  });

  test('regex characters in the policy are literal: the "." of deploy.yml does not match deployXyml', async () => {
    const error = await failureOf(verify('v4-dotted'));
    expect(error.code, error.message).toBe('MANIFEST_WRONG_IDENTITY');
  });

  test('the source repository and ref extensions must match exactly when the policy names them', async () => {
    const source = (release: string, sourceRepository: string, sourceRef?: string) =>
      verifyReleaseManifest({
        catalog,
        env: 'production',
        release,
        policy: { certificateIdentity: WORKFLOW, certificateOidcIssuer: GITHUB_ISSUER, trustedRoot: sigstore.trustedRootPath, sourceRepository, sourceRef },
      });
    await expect(source('v5-shop', 'https://github.com/acme/shop', 'refs/heads/main')).resolves.toBeTruthy();
    // Same reusable-workflow identity, called from another repository.
    const otherRepo = await failureOf(source('v6-other-repo', 'https://github.com/acme/shop'));
    expect(otherRepo.code, otherRepo.message).toBe('MANIFEST_WRONG_IDENTITY');
    expect(otherRepo.message).toContain('source repository is not exactly https://github.com/acme/shop');
    const prefix = await failureOf(source('v5-shop', 'https://github.com/acme/sho'));
    expect(prefix.code, prefix.message).toBe('MANIFEST_WRONG_IDENTITY');
    const otherRef = await failureOf(source('v5-shop', 'https://github.com/acme/shop', 'refs/heads/dev'));
    expect(otherRef.message).toContain('source repository ref is not exactly refs/heads/dev');
    const noExtension = await failureOf(source('v1', 'https://github.com/acme/shop'));
    expect(noExtension.code, noExtension.message).toBe('MANIFEST_WRONG_IDENTITY');
  });

  // @sigstore/mock's Rekor stores the proposed dsse entry as its body, unlike Rekor, so a
  // Rekor-witnessed bundle cannot be verified offline here.
  test('a bundle whose only timestamp comes from a TSA the trusted root does not list is refused', async () => {
    const error = await failureOf(
      verifyReleaseManifest({ catalog, env: 'production', release: 'v1', policy: { certificateIdentity: WORKFLOW, certificateOidcIssuer: GITHUB_ISSUER, trustedRoot: sigstore.rekorOnlyRootPath } }),
    );
    expect(error.exitCode).toBe(1);
    expect(error.message).toMatch(/tlog entries|timestamp/);
  });

  test('the right identity from another OIDC issuer is rejected', async () => {
    const error = await failureOf(verify('v3-other-issuer'));
    expect(error.exitCode).toBe(1);
    expect(error.code, error.message).toBe('MANIFEST_WRONG_IDENTITY');
    expect(error.message).toContain(`OIDC issuer is not ${GITHUB_ISSUER}`);
  });

  test('a keyless bundle does not verify under a public-key policy, and the other way round', async () => {
    const keyPolicy = await failureOf(verifyReleaseManifest({ catalog, env: 'production', release: 'v1', policy: { publicKey: testSigningKey().publicKeyPath } }));
    expect(keyPolicy.code).toBe('MANIFEST_SIGNER_KIND');
  });

  test('a trusted root from another instance rejects the certificate chain', async () => {
    const other = await startMockSigstore(mkdtempSync(join(dir, 'other-')));
    try {
      const error = await failureOf(
        verifyReleaseManifest({ catalog, env: 'production', release: 'v1', policy: { certificateIdentity: WORKFLOW, certificateOidcIssuer: GITHUB_ISSUER, trustedRoot: other.trustedRootPath } }),
      );
      expect(error.exitCode).toBe(1);
      expect(error.code).toMatch(/^MANIFEST_/);
    } finally {
      await other.stop();
    }
  });

  test('the CLI verifies with --certificate-identity and --trusted-root, and exits 1 for main-evil', async () => {
    const args = [
      'manifest',
      'verify',
      '--store',
      join(dir, 'store'),
      '--env',
      'production',
      '--certificate-oidc-issuer',
      GITHUB_ISSUER,
      '--certificate-identity',
      WORKFLOW,
      '--trusted-root',
      sigstore.trustedRootPath,
    ];
    const ok = await lifeline([...args, '--release', 'v1', '--json']);
    expect(ok.stderr).not.toContain('error');
    expect(ok.code).toBe(0);
    expect(JSON.parse(ok.stdout).signer.identity).toBe(WORKFLOW);
    const evil = await lifeline([...args, '--release', 'v2-evil']);
    expect(evil.code).toBe(1);
    expect(evil.stderr).toContain('certificate identity');
    const source = ['--certificate-source-repository', 'https://github.com/acme/shop', '--certificate-source-ref', 'refs/heads/main'];
    expect((await lifeline([...args, ...source, '--release', 'v5-shop'])).code).toBe(0);
    const otherRepo = await lifeline([...args, ...source, '--release', 'v6-other-repo']);
    expect(otherRepo.code).toBe(1);
    expect(otherRepo.stderr).toContain('source repository is not exactly');
  });

  // The gate's signature check of a drill report (verifySignedFile, as src/drill/gate.ts calls it)
  // under examples/lifeline.yml's production policy, for a report signed keyless the way a run of
  // examples/workflows/drill.yml signs it: Fulcio's SAN is https://github.com/ + job_workflow_ref
  // (the reusable drill.yml at the pinned SHA), the source repository and ref the caller's.
  test("a drill report signed keyless by the example drill caller's run verifies under the example policy; one signed by another workflow does not", async () => {
    const example = parse(readFileSync(join(REPO, 'examples/lifeline.yml'), 'utf8')) as { environments: { production: { manifest: Record<string, string | string[]> } } };
    const manifest = example.environments.production.manifest;
    const policy = {
      certificateIdentity: manifest.certificateIdentity as string[],
      certificateOidcIssuer: manifest.certificateOidcIssuer as string,
      sourceRepository: manifest.certificateSourceRepository as string,
      sourceRef: manifest.certificateSourceRef as string,
      trustedRoot: sigstore.trustedRootPath,
    };
    const caller = parse(readFileSync(join(REPO, 'examples/workflows/drill.yml'), 'utf8')) as { jobs: Record<string, { uses: string }> };
    const drillIdentity = `https://github.com/${caller.jobs['drill-production']!.uses}`;
    const signReport = async (name: string, identity: string) => {
      const entry = mkdtempSync(join(dir, `${name}-`));
      const payload = Buffer.from(JSON.stringify({ id: name, environment: 'production', passed: true }));
      writeFileSync(join(entry, 'report.json'), payload);
      const { kind, bundleJson } = await signDssePayload(
        {
          signer: {
            keyless: true,
            fulcioUrl: sigstore.url,
            tsaUrl: sigstore.url,
            identityToken: async () => oidcToken({ sub: identity, iss: GITHUB_ISSUER, repository: 'acme/shop', ref: 'refs/heads/main' }),
          },
          logger: createMemoryLogger(),
        },
        payload,
        DRILL_REPORT_PAYLOAD_TYPE,
        'drill report',
      );
      expect(kind).toBe('keyless');
      writeFileSync(join(entry, 'report.sigstore.json'), bundleJson);
      return verifySignedFile({
        filePath: join(entry, 'report.json'),
        bundlePath: join(entry, 'report.sigstore.json'),
        payloadType: DRILL_REPORT_PAYLOAD_TYPE,
        policy,
        what: `drill report ${name}`,
        codePrefix: 'DRILL_REPORT',
      });
    };
    const verified = await signReport('drill-ok', drillIdentity);
    expect(verified.signer.identity).toBe(drillIdentity);
    // A workflow of the application repository that the policy does not list (e.g. a branch's copy).
    const other = await failureOf(signReport('drill-other', 'https://github.com/acme/shop/.github/workflows/drill.yml@refs/heads/feature'));
    expect(other.code, other.message).toBe('DRILL_REPORT_WRONG_IDENTITY');
  });

  test('keyless signing outside GitHub Actions is refused with the permission to add', async () => {
    const error = await failureOf(createReleaseManifest({ catalog, env: 'production', release: 'v9', images: fakeImages('v9'), signer: 'keyless', githubOidc: {}, logger: createMemoryLogger() }));
    expect(error.exitCode).toBe(2);
    expect(error.fix).toContain('id-token: write');
    expect(await catalog.get('production', 'releases', 'v9', 'release.json')).toBeUndefined();
  });
});
