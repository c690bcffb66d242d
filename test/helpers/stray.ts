import { spawn } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import { join } from 'node:path';
import { REPO, type CliRun } from './cli';

/**
 * A stray process on a health port: an HTTP server in the test process that answers every path
 * with 200 and keeps trying to bind 127.0.0.1:port (every 20ms) until it gets it, so it takes the
 * port the moment whatever held it (an old container stopped by a recreate) lets go.
 */
export interface StrayServer {
  /** Resolves once it listens. */
  bound: Promise<void>;
  /** How many requests it answered. */
  answered(): number;
  stop(): Promise<void>;
}

export function strayHealthServer(port: number, body = 'stray answer\n'): StrayServer {
  let answered = 0;
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  const server: Server = createServer((_req, res) => {
    answered++;
    res.end(body);
  });
  const bound = new Promise<void>((resolve) => {
    const attempt = () => {
      if (stopped) return;
      const onError = () => {
        server.off('listening', onListening);
        timer = setTimeout(attempt, 20);
      };
      const onListening = () => {
        server.off('error', onError);
        resolve();
      };
      server.once('error', onError);
      server.once('listening', onListening);
      server.listen(port, '127.0.0.1');
    };
    attempt();
  });
  return {
    bound,
    answered: () => answered,
    async stop() {
      stopped = true;
      clearTimeout(timer);
      if (!server.listening) return;
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

/** Runs the CLI from source like `lifeline(...)`, calling `onOutput` with everything it printed so far (stdout and stderr) as it prints. */
export function lifelineWatching(args: string[], env: Record<string, string | undefined>, onOutput: (soFar: string) => void): Promise<CliRun> {
  return new Promise((resolve, reject) => {
    const childEnv: NodeJS.ProcessEnv = { ...process.env, ...env };
    for (const [k, v] of Object.entries(env)) if (v === undefined) delete childEnv[k];
    const child = spawn(process.execPath, ['--import', 'tsx', join(REPO, 'src/cli/index.ts'), ...args], { cwd: REPO, env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let all = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => {
      stdout += c;
      all += c;
      onOutput(all);
    });
    child.stderr.setEncoding('utf8').on('data', (c: string) => {
      stderr += c;
      all += c;
      onOutput(all);
    });
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}
