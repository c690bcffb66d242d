import { usageError } from '../errors';
import type { ComposeSettings } from '../settings/resolve';
import { findExecutable, runText, type Runner } from './runner';

export type ComposeCommandSetting = ComposeSettings['command'];

/** `['docker', 'compose']` (v2 plugin) or `['docker-compose']` (v1). */
export type ComposeCommand = readonly string[];

export const COMPOSE_V2: ComposeCommand = ['docker', 'compose'];
export const COMPOSE_V1: ComposeCommand = ['docker-compose'];

/**
 * Picks the Compose CLI: the configured one, or with `auto` the v2 plugin if `docker compose
 * version` answers, else v1. Both talk to whatever engine DOCKER_HOST names (ssh:// included).
 */
export async function detectComposeCommand(runner: Runner, setting: ComposeCommandSetting, pathEnv = ''): Promise<ComposeCommand> {
  if (setting === 'docker compose') return COMPOSE_V2;
  if (setting === 'docker-compose') return COMPOSE_V1;
  const v2 = await runText(runner, { tool: 'docker', args: ['compose', 'version'] }).catch(() => undefined);
  if (v2?.exitCode === 0) return COMPOSE_V2;
  // v1 is a Python program that takes seconds to start: finding it on PATH is enough.
  if (findExecutable('docker-compose', [], pathEnv)) return COMPOSE_V1;
  throw usageError(
    'COMPOSE_MISSING',
    'neither `docker compose` (Compose v2) nor `docker-compose` (v1) works on this machine',
    'install the Docker Compose plugin (or docker-compose), set compose.command in lifeline.yml, or remove postgres.service / redis.service to run the client tools locally',
  );
}

/** The project name as Compose records it in its labels (both versions lowercase it and drop other characters). */
export function normalizeProjectName(name: string): string {
  return name.toLowerCase().replace(/[^-_a-z0-9]/g, '');
}
