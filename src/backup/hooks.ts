import type { Logger } from '../logger';
import { describeExit, lastLines, LocalRunner, runText, type Runner } from '../runner/runner';
import type { HookConfig } from '../settings/schema';

export interface HookResult {
  hook: string;
  ok: boolean;
  detail: string;
}

/** Post-restore hooks (cache revalidation, readiness checks); each result is reported, none is skipped silently. */
export async function runPostRestoreHooks(hooks: HookConfig[], options: { runner?: Runner; logger: Logger; timeoutMs?: number }): Promise<HookResult[]> {
  const results: HookResult[] = [];
  for (const hook of hooks) {
    let result: HookResult;
    if ('http' in hook) {
      const name = `${hook.method ?? 'GET'} ${new URL(hook.http).origin}${new URL(hook.http).pathname}`;
      try {
        const headers = 'headers' in hook ? (hook as { headers?: Record<string, string> }).headers : undefined;
        const response = await fetch(hook.http, { method: hook.method ?? 'GET', headers, signal: AbortSignal.timeout(options.timeoutMs ?? 30_000) });
        const ok = hook.expectStatus ? response.status === hook.expectStatus : response.ok;
        result = { hook: name, ok, detail: `HTTP ${response.status}` };
      } catch (error) {
        result = { hook: name, ok: false, detail: (error as Error).message };
      }
    } else {
      const [tool, ...args] = hook.command;
      const name = hook.command.join(' ');
      try {
        const run = await runText(options.runner ?? new LocalRunner(), { tool: tool!, args });
        result = { hook: name, ok: run.exitCode === 0, detail: run.exitCode === 0 ? 'exit 0' : `${describeExit(run)}: ${lastLines(run.stderr, 2)}` };
      } catch (error) {
        result = { hook: name, ok: false, detail: (error as Error).message };
      }
    }
    options.logger.info(`${result.ok ? 'ok  ' : 'FAIL'} post-restore hook ${result.hook}: ${result.detail}`);
    results.push(result);
  }
  return results;
}
