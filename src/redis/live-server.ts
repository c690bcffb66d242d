import { failure } from '../errors';
import type { Logger } from '../logger';
import { lastLines, runText, type Runner } from '../runner/runner';
import { parseServerIdentity, type ServerIdentity } from './rdb-version';
import { parseKeyspace, redisCli, type RedisTarget } from './snapshot';

/** Where and how the live server keeps its data (`CONFIG GET`). */
export interface RedisPersistence {
  dir: string;
  dbfilename: string;
  appendonly: boolean;
  appenddirname?: string;
  appendfilename: string;
}

/** The server's product and version, and for Valkey whether it relaxes its RDB version check. */
export interface LiveServer {
  identity: ServerIdentity;
  relaxed: boolean;
}

const PERSISTENCE_PARAMETERS = ['dir', 'dbfilename', 'appendonly', 'appenddirname', 'appendfilename'] as const;

export function parseConfigGet(output: string): Record<string, string> {
  const lines = output.replace(/\r/g, '').split('\n');
  if (lines.at(-1) === '') lines.pop();
  const values: Record<string, string> = {};
  for (let i = 0; i + 1 < lines.length; i += 2) values[lines[i]!] = lines[i + 1]!;
  return values;
}

const REDIS_ERROR = /^(ERR|NOAUTH|WRONGPASS|NOPERM|LOADING|MISCONF)\b/m;

/** The running server's persistence settings, checked to be plain names a restore can replace. */
export async function readPersistence(runner: Runner, target: RedisTarget): Promise<RedisPersistence> {
  // Redis 7 answers several parameters at once; older servers take one per call.
  let result = await runText(runner, redisCli(target, ['CONFIG', 'GET', ...PERSISTENCE_PARAMETERS]));
  let values: Record<string, string> = {};
  if (result.exitCode === 0 && !REDIS_ERROR.test(result.stdout)) values = parseConfigGet(result.stdout);
  else {
    for (const name of PERSISTENCE_PARAMETERS) {
      result = await runText(runner, redisCli(target, ['CONFIG', 'GET', name]));
      if (result.exitCode !== 0 || REDIS_ERROR.test(result.stdout)) break;
      Object.assign(values, parseConfigGet(result.stdout));
    }
  }
  if (!values.dir || !values.dbfilename || !values.appendonly) {
    throw failure('REDIS_CONFIG_UNREADABLE', `cannot read the live server's persistence settings with CONFIG GET (${runner.where}): ${lastLines(result.stderr || result.stdout, 2)}`, {
      fix: 'the Redis user in the URL must be allowed CONFIG GET (and CONFIG must not be renamed); check the URL and password (REDIS_URL / --redis-url)',
    });
  }
  for (const name of ['dbfilename', 'appenddirname', 'appendfilename'] as const) {
    const value = values[name];
    if (value !== undefined && !/^[A-Za-z0-9][A-Za-z0-9._+-]{0,80}$/.test(value)) {
      throw failure('REDIS_CONFIG_UNSUPPORTED', `the live server's ${name} ${JSON.stringify(value)} is not a plain file name`, {
        fix: `set ${name} to a plain name (letters, digits, '.', '_', '-') in the Redis configuration`,
      });
    }
  }
  if (!values.dir.startsWith('/')) throw failure('REDIS_CONFIG_UNSUPPORTED', `the live server's dir ${JSON.stringify(values.dir)} is not an absolute path`);
  return {
    dir: values.dir,
    dbfilename: values.dbfilename,
    appendonly: values.appendonly === 'yes',
    appenddirname: values.appenddirname,
    appendfilename: values.appendfilename ?? 'appendonly.aof',
  };
}

/** The live server's product, version and keys from one `INFO`, and for Valkey its rdb-version-check. */
export async function readServerInfo(runner: Runner, target: RedisTarget): Promise<{ server: LiveServer | undefined; keys: Record<string, number> }> {
  const info = await runText(runner, redisCli(target, ['INFO']));
  if (info.exitCode !== 0 || /^(ERR|NOAUTH|WRONGPASS|NOPERM)/m.test(info.stdout)) {
    throw failure('REDIS_CONNECT', `cannot read INFO from redis://${target.host}:${target.port} (${runner.where}): ${lastLines(info.stderr || info.stdout, 2)}`, {
      fix: 'check the Redis URL (REDIS_URL / --redis-url) and its password',
    });
  }
  const keys = parseKeyspace(info.stdout);
  const identity = parseServerIdentity(info.stdout);
  if (!identity) return { server: undefined, keys };
  let relaxed = false;
  if (identity.product === 'valkey') {
    const check = await runText(runner, redisCli(target, ['CONFIG', 'GET', 'rdb-version-check'])).catch(() => undefined);
    relaxed = check?.exitCode === 0 && parseConfigGet(check.stdout)['rdb-version-check'] === 'relaxed';
  }
  return { server: { identity, relaxed }, keys };
}

/** What the engine says of the server's container (`docker inspect`), or undefined when it cannot tell. */
export interface ServerContainerState {
  running: boolean;
  status: string;
  exitCode: number;
}

/**
 * Waits until the server answers PING with PONG. `containerState` is asked every few attempts (and
 * after a failed one): a server that cannot load its data exits, which is said at once rather than
 * at the timeout.
 */
export async function waitForPong(runner: Runner, target: RedisTarget, options: { timeoutMs: number; logger: Logger; containerState: () => Promise<ServerContainerState | undefined> }): Promise<void> {
  const deadline = Date.now() + options.timeoutMs;
  const fix = "read the server's log: a server that cannot load its data files exits, and one that loads a large dataset answers LOADING until it is done";
  let loadingSeen = false;
  for (let attempt = 1; ; attempt++) {
    const ping = await runText(runner, redisCli(target, ['PING'])).catch(() => undefined);
    const answer = ping?.stdout.trim() ?? '';
    if (answer === 'PONG') return;
    if (answer.startsWith('LOADING') && !loadingSeen) {
      loadingSeen = true;
      options.logger.info('     LOADING the dataset');
    }
    if (attempt % 4 === 0 || !ping || ping.exitCode !== 0) {
      const state = await options.containerState().catch(() => undefined);
      if (state && (!state.running || state.status === 'restarting'))
        throw failure('REDIS_START_FAILED', `the container ${state.status === 'restarting' ? 'is restarting (it crashed' : `exited (${state.status}`}, exit code ${state.exitCode})`, { fix });
    }
    if (Date.now() > deadline) throw failure('REDIS_START_FAILED', `no PONG within ${Math.round(options.timeoutMs / 1000)} s (last answer: ${answer || 'none'})`, { fix });
    await new Promise((r) => setTimeout(r, 250));
  }
}
