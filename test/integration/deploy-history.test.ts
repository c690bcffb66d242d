import { spawn, type ChildProcess } from 'node:child_process';
import { createPublicKey, verify } from 'node:crypto';
import { appendFileSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Catalog } from '../../src/catalog/store';
import { appendHistory, loadHistory, type HistoryEvent } from '../../src/deploy/history';
import { stopPid } from '../../src/runner/ports';
import { lifeline } from '../helpers/cli';
import { tempDir } from '../helpers/db';
import { signTestRelease, testSigningKey } from '../helpers/releases';

const ENV = 'production';

const event = (to: string, result: HistoryEvent['result'], running: string | null, from: string | null = null): HistoryEvent => ({
  action: 'deploy',
  from,
  to,
  result,
  running,
  runningDeployment: running ? `dep-${running}` : null,
  deployment: `dep-${to}`,
  at: '2026-11-30T10:00:00.000Z',
  by: 'test',
  durationsMs: { total: 1000 },
});

// No engine: every case here reads or writes the catalog only, or stops before Compose is called.
describe('deploy history, revocations and lock break without an engine', () => {
  let dir: ReturnType<typeof tempDir>;
  let config: string;
  let catalog: Catalog;
  const children: ChildProcess[] = [];

  beforeAll(async () => {
    dir = tempDir('lifeline-deploy-history-');
    catalog = new Catalog(join(dir.path, 'store'));
    for (const v of ['v5', 'v6', 'v7']) await signTestRelease(catalog, ENV, v);
    config = join(dir.path, 'lifeline.yml');
    writeFileSync(join(dir.path, 'docker-compose.yml'), 'services:\n  api: { image: "x" }\n  web: { image: "x" }\n  worker: { image: "x" }\n');
    writeFileSync(
      config,
      `version: 1\nenvironments:\n  ${ENV}:\n    store: store\n    compose:\n      files: [docker-compose.yml]\n      command: docker-compose\n    manifest:\n      publicKey: ${testSigningKey().publicKeyPath}\n`,
    );
  });
  afterAll(async () => {
    for (const child of children) if (child.pid) await stopPid(child.pid, 'SIGKILL', 5000);
    dir.cleanup();
  });

  const run = (args: string[], env: Record<string, string | undefined> = {}) =>
    lifeline([...args, '--config', config, '--env', ENV], {
      env: { DATABASE_URL: undefined, LIFELINE_STORE: undefined, LIFELINE_SIGNING_KEY: undefined, DOCKER_HOST: 'unix:///nonexistent.sock', ...env },
    });
  const historyFile = () => join(catalog.envDir(ENV), 'history.ndjson');
  const resetHistory = (events: HistoryEvent[]) => writeFileSync(historyFile(), events.map((e) => `${JSON.stringify(e)}\n`).join(''));

  it('starts an append on a fresh line after a torn last line, and every reader names the torn line', async () => {
    resetHistory([event('v5', 'succeeded', 'v5')]);
    // A crash mid-append: half a record, no newline.
    appendFileSync(historyFile(), '{"action":"deploy","from":"v5","to":"v6","res');
    await appendHistory(catalog, ENV, event('v6', 'succeeded', 'v6', 'v5'));
    const lines = readFileSync(historyFile(), 'utf8').split('\n');
    expect(lines[1]).toBe('{"action":"deploy","from":"v5","to":"v6","res');
    expect(JSON.parse(lines[2]!)).toMatchObject({ to: 'v6', result: 'succeeded' });
    const history = await loadHistory(catalog, ENV);
    expect(history.events.map((e) => e.to)).toEqual(['v5', 'v6']);
    expect(history.corrupt.map((c) => c.line)).toEqual([2]);

    const shown = await run(['history']);
    expect(shown.code, shown.stderr).toBe(0);
    expect(shown.stderr).toContain('1 line that is not a history event');
    expect(shown.stderr).toContain('line 2: {"action":"deploy","from":"v5","to":"v6","res');
    expect(shown.stdout.split('\n').filter(Boolean)).toHaveLength(2);
  });

  it('does not let a corrupt line in the middle silently change what "previous" means', async () => {
    // v5 ran, then v6, then a line nobody can read (it could have been a release in between), then v7.
    resetHistory([event('v5', 'succeeded', 'v5'), event('v6', 'succeeded', 'v6', 'v5')]);
    appendFileSync(historyFile(), 'garbage written by hand\n');
    appendFileSync(historyFile(), `${JSON.stringify(event('v7', 'succeeded', 'v7', 'v6'))}\n`);
    const refused = await run(['rollback', '--to', 'previous']);
    expect(refused.code).toBe(3);
    expect(refused.stderr).toContain('no earlier release to roll back to');
    expect(refused.stderr).toContain('only the events after line 3 count');
    expect(refused.stderr).toContain('line 3: garbage written by hand');
    expect(refused.stderr).toContain('lifeline rollback --env production --to <version>');
    // A JSON line that is not an event is corrupt too.
    resetHistory([event('v5', 'succeeded', 'v5'), event('v6', 'succeeded', 'v6', 'v5')]);
    appendFileSync(historyFile(), '{"action":"deploy","to":"v9"}\n');
    const shown = await run(['history', '--json']);
    expect(shown.code).toBe(0);
    expect(JSON.parse(shown.stdout)).toHaveLength(2);
    expect(shown.stderr).toContain('line 3: {"action":"deploy","to":"v9"}');
  });

  it('records a rejected release name quoted, and a newline in it cannot forge a history line', async () => {
    resetHistory([event('v5', 'succeeded', 'v5')]);
    const forged = 'v9\n2026-12-01T00:00:00.000Z  deploy   v5         -> v9         succeeded by release-bot 1.0s';
    const rejected = await run(['deploy', '--release', forged]);
    expect(rejected.code).not.toBe(0);
    const text = await run(['history']);
    expect(text.code, text.stderr).toBe(0);
    const lines = text.stdout.split('\n').filter(Boolean);
    expect(lines).toHaveLength(2);
    expect(lines.some((l) => l.startsWith('2026-12-01T00:00:00.000Z'))).toBe(false);
    expect(lines[1]).toContain('"v9\\n2026-12-01');
    expect(lines[1]).toContain('failed');
    const recorded = (await loadHistory(catalog, ENV)).events.at(-1)!;
    expect(recorded.to).toBe(JSON.stringify(forged));
    // A control character in a reason (an ANSI escape) is printed escaped too.
    await appendHistory(catalog, ENV, { ...event('v6', 'failed', 'v5', 'v5'), reason: 'boom\u001b[2J' });
    const again = await run(['history']);
    expect(again.stdout).toContain('boom\\u001b[2J');
    expect(again.stdout).not.toContain('\u001b');
  });

  it('revokes a release (signed), refuses to deploy it, shows it, and rollback --to previous skips it', async () => {
    const key = testSigningKey();
    const revoke = await run(['release', 'revoke', 'v6', '--reason', 'worker crashes 3s after start', '--signing-key', key.privateKeyPath, '--json']);
    expect(revoke.code, revoke.stderr).toBe(0);
    expect(JSON.parse(revoke.stdout)).toMatchObject({ release: 'v6', reason: 'worker crashes 3s after start', signed: true });
    // The signature covers the statement: check the DSSE envelope with the public key, without Lifeline.
    const record = JSON.parse(readFileSync(join(catalog.envDir(ENV), 'revocations.ndjson'), 'utf8').trim());
    const envelope = record.bundle.dsseEnvelope;
    const payload = Buffer.from(envelope.payload, 'base64');
    expect(JSON.parse(payload.toString())).toMatchObject({ release: 'v6', reason: 'worker crashes 3s after start', environment: ENV });
    const type = envelope.payloadType as string;
    const pae = Buffer.concat([Buffer.from(`DSSEv1 ${type.length} ${type} ${payload.length} `), payload]);
    expect(verify('sha256', pae, createPublicKey(key.publicKeyPem), Buffer.from(envelope.signatures[0].sig, 'base64'))).toBe(true);
    expect(verify('sha256', Buffer.concat([pae, Buffer.from('x')]), createPublicKey(key.publicKeyPem), Buffer.from(envelope.signatures[0].sig, 'base64'))).toBe(false);

    const deploy = await run(['deploy', '--release', 'v6']);
    expect(deploy.code).toBe(3);
    expect(deploy.stderr).toContain('refusing to deploy v6: it was revoked');
    expect(deploy.stderr).toContain('worker crashes 3s after start');
    expect(await catalog.list(ENV, 'deployments', 'deployment.json')).toEqual([]);
    const rollback = await run(['rollback', '--to', 'v6']);
    expect(rollback.code).toBe(3);
    expect(rollback.stderr).toContain('refusing to roll back to v6');

    const releases = await run(['releases']);
    expect(releases.code, releases.stderr).toBe(0);
    expect(releases.stdout).toMatch(/^v6 .*REVOKED .*worker crashes 3s after start.*\(signed\)/m);
    expect(releases.stdout).toMatch(/^v5 /m);
    expect(releases.stdout).not.toMatch(/^v5 .*REVOKED/m);

    // v5 then v6 (revoked) then v7: previous skips v6 and says so, and with only v6 before v7 it refuses.
    resetHistory([event('v6', 'succeeded', 'v6'), event('v7', 'succeeded', 'v7', 'v6')]);
    const onlyRevoked = await run(['rollback', '--to', 'previous']);
    expect(onlyRevoked.code).toBe(3);
    expect(onlyRevoked.stderr).toContain('skipped revoked: v6');
    const history = await run(['history']);
    expect(history.stdout).toMatch(/-> v6 .*\[revoked\]/);
    expect(history.stdout).toContain('revoked: v6');

    // Unsigned without a key, and a second revocation of the same release changes nothing.
    const unsigned = await run(['release', 'revoke', 'v7', '--reason', 'bad migration']);
    expect(unsigned.code, unsigned.stderr).toBe(0);
    expect(unsigned.stderr).toContain('recorded unsigned');
    const twice = await run(['release', 'revoke', 'v7', '--reason', 'other']);
    expect(twice.code).toBe(0);
    expect(
      readFileSync(join(catalog.envDir(ENV), 'revocations.ndjson'), 'utf8')
        .trim()
        .split('\n'),
    ).toHaveLength(2);
    // An unknown release cannot be revoked, a name with a newline neither.
    expect((await run(['release', 'revoke', 'v8', '--reason', 'x'])).code).toBe(2);
    expect((await run(['release', 'revoke', 'v8\nv5', '--reason', 'x'])).code).toBe(2);

    // A torn revocations file stops deploys: it can no longer say which releases are revoked.
    appendFileSync(join(catalog.envDir(ENV), 'revocations.ndjson'), '{"release":"v5","rea');
    const torn = await run(['deploy', '--release', 'v5']);
    expect(torn.code).toBe(3);
    expect(torn.stderr).toContain('cannot tell which releases are revoked');
    expect(torn.stderr).toContain('line 3');
  });

  it('refuses to break a lock whose holder is alive here, needs --force for another host, and breaks a dead one', async () => {
    const lockFile = join(catalog.envDir(ENV), '.lock');
    const holder = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)'], { stdio: 'ignore' });
    children.push(holder);
    const lock = (pid: number, host: string) =>
      writeFileSync(lockFile, JSON.stringify({ owner: 'alice (deploy run 41)', pid, host, command: 'lifeline deploy', acquiredAt: '2026-11-21T10:00:00.000Z' }));

    lock(holder.pid!, hostname());
    const alive = await run(['lock', 'break']);
    expect(alive.code).toBe(3);
    expect(alive.stderr).toContain(`alice (deploy run 41) (pid ${holder.pid} on ${hostname()}`);
    expect(alive.stderr).toContain('still running on this host');
    expect(existsSync(lockFile)).toBe(true);
    // --force does not override a live local holder either: the process is right there.
    expect((await run(['lock', 'break', '--force'])).code).toBe(3);
    expect(existsSync(lockFile)).toBe(true);

    lock(holder.pid!, 'ci-runner-7');
    const remote = await run(['lock', 'break']);
    expect(remote.code).toBe(3);
    expect(remote.stderr).toContain('alice (deploy run 41) (pid');
    expect(remote.stderr).toContain('on ci-runner-7');
    expect(remote.stderr).toContain('--force');
    expect(existsSync(lockFile)).toBe(true);
    const forced = await run(['lock', 'break', '--force']);
    expect(forced.code, forced.stderr).toBe(0);
    expect(existsSync(lockFile)).toBe(false);

    await stopPid(holder.pid!, 'SIGKILL', 5000);
    lock(holder.pid!, hostname());
    const dead = await run(['lock', 'break']);
    expect(dead.code, dead.stderr).toBe(0);
    expect(existsSync(lockFile)).toBe(false);
  });
});
