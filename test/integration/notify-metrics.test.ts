import { spawnSync } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../../src/runner/ports';
import { lifeline, REPO } from '../helpers/cli';
import { createSampleDatabase, dropDatabase, tempDir } from '../helpers/db';

interface Received {
  method: string;
  path: string;
  body: string;
}

/** A real HTTP receiver on loopback: records every request, answers with the status chosen per path. */
async function startReceiver(): Promise<{ url: string; requests: Received[]; server: Server; failWith?: number }> {
  const state = { requests: [] as Received[], failWith: undefined as number | undefined };
  const server = createServer((request, response) => {
    let body = '';
    request.setEncoding('utf8').on('data', (chunk: string) => (body += chunk));
    request.on('end', () => {
      state.requests.push({ method: request.method ?? '', path: request.url ?? '', body });
      response.writeHead(state.failWith ?? 200).end('ok');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  return Object.assign(state, { url: `http://127.0.0.1:${port}`, server });
}

const noEnv = { DATABASE_URL: undefined, REDIS_URL: undefined, LIFELINE_STORE: undefined, LIFELINE_ENV: undefined, LIFELINE_CONFIG: undefined };
// The secret parts of the URLs: a Slack webhook's path and a healthchecks.io UUID are the credential.
const WEBHOOK_SECRET = 'T000-B000-xoxb-webhook-secret-4711';
const PING_SECRET = '5e0a8f0e-ping-uuid-secret-0815';

describe('notifications: webhook and dead-man ping against a real receiver', () => {
  let db: Awaited<ReturnType<typeof createSampleDatabase>>;
  let receiver: Awaited<ReturnType<typeof startReceiver>>;
  const dir = tempDir('lifeline-notify-');
  let config: string;

  const writeConfig = (notify: string) => {
    config = join(dir.path, 'lifeline.yml');
    writeFileSync(
      config,
      `version: 1\nstore: ${join(dir.path, 'store')}\nenvironments:\n  production:\n    rpo: 1h\n    rto: 30m\n    postgres:\n      urlEnv: SHOP_DATABASE_URL\n    notify:\n${notify}`,
    );
  };
  const env = () => ({ ...noEnv, SHOP_DATABASE_URL: db.url, HOOK_URL: `${receiver.url}/hooks/${WEBHOOK_SECRET}`, PING_URL: `${receiver.url}/ping/${PING_SECRET}` });
  const run = (args: string[], extraEnv: Record<string, string | undefined> = {}) => lifeline([...args, '--config', config, '--env', 'production'], { env: { ...env(), ...extraEnv } });

  beforeAll(async () => {
    [db, receiver] = await Promise.all([createSampleDatabase(1, 'notify'), startReceiver()]);
  });
  afterAll(async () => {
    await new Promise((resolve) => receiver.server.close(resolve));
    await dropDatabase(db.name);
    dir.cleanup();
  });

  it('a succeeded backup pings start then success and posts the message when `on` asks for successes', async () => {
    writeConfig('      webhookEnv: HOOK_URL\n      pingEnv: PING_URL\n      on: [succeeded, failed, refused]\n');
    receiver.requests.length = 0;
    const result = await run(['backup', '--json']);
    expect(result.code, result.stderr).toBe(0);
    const backupId = JSON.parse(result.stdout).id ?? JSON.parse(result.stdout).backup?.id;
    const paths = receiver.requests.map((r) => `${r.method} ${r.path}`);
    expect(paths).toEqual([`GET /ping/${PING_SECRET}/start`, `POST /hooks/${WEBHOOK_SECRET}`, `POST /ping/${PING_SECRET}`]);
    const message = JSON.parse(receiver.requests[1]!.body);
    expect(message).toMatchObject({ command: 'backup', environment: 'production', outcome: 'succeeded', source: 'lifeline' });
    expect(message.durationSeconds).toBeGreaterThan(0);
    expect(message.entryId).toMatch(/^\d{8}T\d{6}/);
    if (backupId) expect(message.entryId).toBe(backupId);
    expect(message.text).toMatch(/^Lifeline backup succeeded for production in [\d.]+s \(\d{8}T/);
    for (const text of [result.stdout, result.stderr, ...receiver.requests.map((r) => r.body)]) {
      expect(text).not.toContain(WEBHOOK_SECRET);
      expect(text).not.toContain(PING_SECRET);
      expect(text).not.toContain(db.conn.password!);
    }
  });

  it('a failed backup posts the failure by default and pings /fail with the last log lines', async () => {
    writeConfig('      webhookEnv: HOOK_URL\n      pingEnv: PING_URL\n');
    receiver.requests.length = 0;
    const missing = db.url.replace(`/${db.name}`, '/no_such_database_here');
    const result = await run(['backup'], { SHOP_DATABASE_URL: missing });
    expect(result.code).toBe(1);
    const paths = receiver.requests.map((r) => `${r.method} ${r.path}`);
    expect(paths).toEqual([`GET /ping/${PING_SECRET}/start`, `POST /hooks/${WEBHOOK_SECRET}`, `POST /ping/${PING_SECRET}/fail`]);
    const message = JSON.parse(receiver.requests[1]!.body);
    expect(message).toMatchObject({ command: 'backup', outcome: 'failed' });
    expect(message.text).toContain('Lifeline backup FAILED for production');
    expect(message.reason).toContain('no_such_database_here');
    expect(receiver.requests[2]!.body).toContain('no_such_database_here');
    for (const r of receiver.requests) expect(r.body).not.toContain(db.conn.password!);
  });

  it('a receiver that answers 500 or is down leaves the exit code unchanged, with a warning naming only its host', async () => {
    writeConfig('      webhookEnv: HOOK_URL\n      on: [succeeded]\n');
    receiver.failWith = 500;
    try {
      const refused = await run(['backup']);
      expect(refused.code, refused.stderr).toBe(0);
      expect(refused.stderr).toContain('could not deliver the webhook message to 127.0.0.1');
      expect(refused.stderr).toContain('HTTP 500');
    } finally {
      receiver.failWith = undefined;
    }
    const closedPort = await freePort();
    const started = Date.now();
    const down = await run(['backup'], { HOOK_URL: `http://127.0.0.1:${closedPort}/hooks/${WEBHOOK_SECRET}` });
    expect(down.code, down.stderr).toBe(0);
    expect(down.stderr).toContain(`could not deliver the webhook message to 127.0.0.1:${closedPort}`);
    expect(down.stderr).not.toContain(WEBHOOK_SECRET);
    // Bounded: a few seconds of retries, not a hang.
    expect(Date.now() - started).toBeLessThan(60_000);
  });

  it('config check masks both URLs, and a URL that is not http(s) is exit 2 naming the key', async () => {
    writeConfig('      webhookEnv: HOOK_URL\n      pingEnv: PING_URL\n');
    const check = await run(['config', 'check', '--json']);
    expect(check.code, check.stderr).toBe(0);
    expect(check.stdout).not.toContain(WEBHOOK_SECRET);
    expect(check.stdout).not.toContain(PING_SECRET);
    const bad = await run(['backup'], { HOOK_URL: `ftp://127.0.0.1/${WEBHOOK_SECRET}` });
    expect(bad.code).toBe(2);
    expect(bad.stdout + bad.stderr).toContain('notify.webhookEnv');
    expect(bad.stdout + bad.stderr).not.toContain(WEBHOOK_SECRET);
  });

  it('lifeline metrics passes promtool check metrics and shows the backups, runs and targets', async () => {
    const result = await run(['metrics']);
    expect(result.code, result.stderr).toBe(0);
    const text = result.stdout;
    const promtool = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
    expect(promtool.status, `${promtool.stdout}${promtool.stderr}\n${text}`).toBe(0);
    expect(text).toMatch(new RegExp(`^lifeline_backup_last_timestamp_seconds\\{environment="production",database="${db.name}"\\} \\d+`, 'm'));
    expect(text).toMatch(new RegExp(`^lifeline_backup_verified_age_seconds\\{environment="production",database="${db.name}"\\} [\\d.]+$`, 'm'));
    expect(text).toMatch(/^lifeline_rpo_target_seconds\{environment="production"\} 3600$/m);
    expect(text).toMatch(/^lifeline_rto_target_seconds\{environment="production"\} 1800$/m);
    expect(text).toMatch(/^lifeline_catalog_size_bytes\{environment="production"\} [1-9]\d*$/m);
    const backups = Number(/^lifeline_backup_entries\{environment="production"\} (\d+)$/m.exec(text)![1]);
    expect(backups).toBeGreaterThanOrEqual(3);
  });

  it('metrics --out writes the file atomically for the textfile collector, readable by it and holding no secret', async () => {
    const out = join(dir.path, 'lifeline.prom');
    const result = await run(['metrics', '--out', out]);
    expect(result.code, result.stderr).toBe(0);
    expect(statSync(out).mode & 0o777).toBe(0o644);
    const text = readFileSync(out, 'utf8');
    expect(spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' }).status).toBe(0);
    expect(text).not.toContain(WEBHOOK_SECRET);
    expect(text).not.toContain(db.conn.password!);
  });

  it('the gate run is recorded and shows in the metrics', async () => {
    const gate = await run(['gate']);
    expect([0, 1, 3]).toContain(gate.code);
    const text = (await run(['metrics'])).stdout;
    expect(text).toMatch(new RegExp(`^lifeline_gate_last_passed\\{environment="production"\\} ${gate.code === 0 ? 1 : 0}$`, 'm'));
  });
});

describe('the alert rules in docs/notifications.md', () => {
  it('pass promtool check rules', () => {
    const page = readFileSync(join(REPO, 'docs/notifications.md'), 'utf8');
    const rules = /```yaml\n(groups:[\s\S]*?)```/.exec(page)?.[1];
    expect(rules, 'docs/notifications.md has a ```yaml block starting with groups:').toBeDefined();
    const dir = tempDir('lifeline-rules-');
    try {
      const file = join(dir.path, 'lifeline.rules.yml');
      writeFileSync(file, rules!);
      const result = spawnSync('promtool', ['check', 'rules', file], { encoding: 'utf8' });
      expect(result.status, result.stdout + result.stderr).toBe(0);
      expect(result.stdout).toMatch(/SUCCESS: [2-9] rules found/);
    } finally {
      dir.cleanup();
    }
  });
});
