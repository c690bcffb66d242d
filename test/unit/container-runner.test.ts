import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, describe, expect, it } from 'vitest';
import { ContainerRunner, ImageRunner, runText } from '../../src/runner/runner';
import { drillContainerName } from '../../src/runner/throwaway-container';
import { checkRdb } from '../../src/redis/snapshot';

/** A stand-in `docker` that prints its argv, the secret it was given by environment, and its stdin. */
const dir = mkdtempSync(join(tmpdir(), 'lifeline-fake-docker-'));
writeFileSync(join(dir, 'docker'), '#!/bin/sh\nprintf "argv:%s\\n" "$*"\nprintf "secret:%s\\n" "$PGPASSWORD"\n[ -t 0 ] || cat\n');
chmodSync(join(dir, 'docker'), 0o755);
/** One that answers like `docker exec` for a tool the image lacks. */
const missing = mkdtempSync(join(tmpdir(), 'lifeline-fake-docker-'));
writeFileSync(
  join(missing, 'docker'),
  '#!/bin/sh\ncat >/dev/null 2>&1; echo \'OCI runtime exec failed: exec failed: unable to start container process: exec: "sh": executable file not found in $PATH: unknown\' >&2\nexit 127\n',
);
chmodSync(join(missing, 'docker'), 0o755);
const env = (d: string) => ({ ...process.env, PATH: `${d}:${process.env.PATH}` });
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
  rmSync(missing, { recursive: true, force: true });
});

describe('tools in a service container', () => {
  it('docker exec on the container id: secrets by name only, -i only with stdin', async () => {
    const runner = new ContainerRunner({ container: 'abc123', where: 'compose service db', baseEnv: env(dir) });
    const plain = await runText(runner, { tool: 'psql', args: ['-Atc', 'SELECT 1'], env: { PGPASSWORD: 's3cret-pw' } });
    expect(plain.stdout).toContain('argv:exec -e PGPASSWORD abc123 psql -Atc SELECT 1');
    expect(plain.stdout).toContain('secret:s3cret-pw');
    expect(plain.stdout.split('\n')[0]).not.toContain('s3cret-pw');
    const fed = await runText(runner, { tool: 'pg_restore', args: ['--list'], stdin: Readable.from([Buffer.from('ARCHIVE-BYTES')]) });
    expect(fed.stdout).toContain('argv:exec -i abc123 pg_restore --list');
    expect(fed.stdout).toContain('ARCHIVE-BYTES');
  });

  it('a fresh container of an image: no network, removed after', async () => {
    const runner = new ImageRunner({ image: 'sha256:feed', where: 'the redis image', baseEnv: env(dir) });
    const r = await runText(runner, { tool: 'redis-check-rdb', args: ['/tmp/x'] });
    expect(r.stdout).toContain('argv:run --rm --network none --label lifeline.check=1 --entrypoint redis-check-rdb sha256:feed /tmp/x');
  });

  it('a tool the image lacks is a failed redis-check-rdb check naming the tool and the fix, not an exception', async () => {
    const file = join(dir, 'dump.rdb');
    writeFileSync(file, 'REDIS0011');
    const check = await checkRdb(new ContainerRunner({ container: 'abc123', where: 'compose service db', baseEnv: env(missing) }), file);
    expect(check).toMatchObject({ ok: false, toolMissing: true });
    expect(check.detail).toMatch(/redis-check-rdb was not found \(compose service db\); fix: use a Redis image that has redis-check-rdb/);
  });

  it('drill container names are what the leftover records accept', () => {
    for (const suffix of ['20261202T120000000Z-abcdef-pg', 'X'.repeat(90), 'restore-check-20261202T120000000Z-abcdef']) {
      expect(drillContainerName(suffix)).toMatch(/^lifeline-drill-[a-z0-9-]{6,64}$/);
    }
  });
});
