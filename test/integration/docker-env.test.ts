import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDockerEnvironment, type DockerEnvironment } from '../helpers/docker';

describe('test Docker environment', () => {
  let docker: DockerEnvironment;
  beforeAll(async () => {
    docker = await startDockerEnvironment();
  });
  afterAll(async () => {
    await docker?.stop();
  });

  it('runs a busybox container on the host network and pushes to the loopback registry', () => {
    const run = docker.docker(['run', '--rm', '--network', 'host', docker.baseImage, 'echo', 'hello from busybox']);
    expect(run.stderr).toBe('');
    expect(run.stdout.trim()).toBe('hello from busybox');
    const tag = `${docker.registry}/lifeline-test/base:1`;
    expect(docker.docker(['tag', docker.baseImage, tag]).status).toBe(0);
    const push = docker.docker(['push', tag]);
    expect(push.status, push.stderr).toBe(0);
    const digest = docker.docker(['inspect', '--format', '{{index .RepoDigests 0}}', tag]).stdout.trim();
    expect(digest).toMatch(new RegExp(`^${docker.registry}/lifeline-test/base@sha256:[0-9a-f]{64}$`));
  });
});
