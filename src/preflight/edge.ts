import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Runner } from '../runner/runner';
import { findExecutable, runText } from '../runner/runner';
import { displayPath, fail, gate, notChecked, pass, warn, type CheckContext, type Finding, type FindingInput } from './findings';
import { find, parseNginxConfig, serverBlocks, type Directive } from './nginx-config';

export interface EdgeOptions {
  nginxConfig?: string;
  caddyConfig?: string;
  /** The process PATH, to look for caddy. */
  path?: string;
}

export async function checkEdge(runner: Runner, ctx: CheckContext, options: EdgeOptions): Promise<Finding[]> {
  if (options.nginxConfig) return checkNginx(runner, ctx, options.nginxConfig);
  if (options.caddyConfig) return checkCaddy(runner, ctx, options.caddyConfig, options.path);
  return [notChecked('edge.config', 'no nginx or Caddy configuration given', 'pass --nginx-config FILE or --caddy-config FILE (or preflight.nginxConfig / preflight.caddyConfig)')];
}

async function checkNginx(runner: Runner, ctx: CheckContext, configFile: string): Promise<Finding[]> {
  const file = displayPath(ctx, configFile);
  let directives: Directive[];
  try {
    directives = parseNginxConfig(configFile, new Set(), (path, status) => ctx.files?.add(path, path === configFile ? 'nginx configuration' : 'nginx include', 'edge.*, nginx -t', status));
  } catch (error) {
    ctx.files?.add(configFile, 'nginx configuration', 'edge.*', (error as NodeJS.ErrnoException).code === 'ENOENT' ? 'missing' : 'unreadable');
    return [fail({ check: 'edge.nginx-syntax', file, message: `the nginx configuration ${file} cannot be read`, fix: 'fix --nginx-config or preflight.nginxConfig' })];
  }
  const findings = await nginxTest(runner, ctx, configFile, directives);
  findings.push(...nginxGates(ctx, directives, file));
  return findings;
}

/** The real `nginx -t`, with a throwaway prefix and pid file so it needs neither root paths nor a running nginx. */
async function nginxTest(runner: Runner, ctx: CheckContext, configFile: string, directives: Directive[]): Promise<Finding[]> {
  const file = displayPath(ctx, configFile);
  const prefix = mkdtempSync(join(tmpdir(), 'lifeline-nginx-'));
  try {
    // -g may not repeat a directive the file already sets.
    const globals = [find(directives, 'pid').length ? '' : `pid ${join(prefix, 'nginx.pid')};`, find(directives, 'error_log').length ? '' : 'error_log stderr;'].join(' ').trim();
    let result;
    try {
      result = await runText(runner, { tool: 'nginx', args: ['-t', '-q', '-p', `${prefix}/`, '-c', configFile, ...(globals ? ['-g', globals] : [])], cwd: ctx.cwd });
    } catch {
      return [
        fail({
          check: 'edge.nginx-syntax',
          file,
          message: 'nginx is not installed, so the configuration cannot be tested',
          fix: 'install nginx on the runner (apt-get install nginx) or test inside the edge container: docker compose run --rm edge nginx -t',
        }),
      ];
    }
    if (result.exitCode === 0) return [pass({ check: 'edge.nginx-syntax', file, message: 'nginx -t: syntax is ok' })];
    const emerg = result.stderr.split('\n').find((l) => /\[(emerg|alert|crit)\]/.test(l)) ?? result.stderr.split('\n')[0] ?? '';
    const where = / in (\/\S+):(\d+)\s*$/.exec(emerg);
    return [
      fail({
        check: 'edge.nginx-syntax',
        file: where ? displayPath(ctx, where[1]!) : file,
        line: where ? Number(where[2]) : undefined,
        message: `nginx -t: ${emerg.replace(/^nginx: \[\w+\] /, '').replace(/ in \/\S+:\d+\s*$/, '')}`,
        fix: 'fix the directive at the reported line; nginx -t -c FILE shows the same error',
      }),
    ];
  } finally {
    rmSync(prefix, { recursive: true, force: true });
  }
}

function listens(server: Directive): { directive?: Directive; ssl: boolean; port: string }[] {
  const listenDirectives = find(server.children, 'listen');
  if (listenDirectives.length === 0) return [{ ssl: false, port: '80' }];
  return listenDirectives.map((d) => ({ directive: d, ssl: d.args.includes('ssl') || d.args.includes('quic'), port: /(\d+)$/.exec(d.args[0] ?? '')?.[1] ?? '80' }));
}

function redirectsToHttps(directives: Directive[] | undefined): boolean {
  for (const d of directives ?? []) {
    if (d.name === 'return' && /^30[1278]$/.test(d.args[0] ?? '') && /^https:\/\//.test(d.args[1] ?? '')) return true;
    if (d.name === 'rewrite' && /^https:\/\//.test(d.args[1] ?? '') && ['permanent', 'redirect'].includes(d.args[2] ?? '')) return true;
    if (d.name === 'location' && (d.args.join(' ') === '/' || d.args.join(' ') === '= /') && redirectsToHttps(d.children)) return true;
  }
  return false;
}

function hasHsts(directives: Directive[] | undefined): boolean {
  return (directives ?? []).some(
    (d) => (d.name === 'add_header' && /^strict-transport-security$/i.test(d.args[0] ?? '')) || (d.name === 'more_set_headers' && /strict-transport-security/i.test(d.args.join(' '))),
  );
}

/** TLS configured, plain HTTP redirected to HTTPS, HSTS sent: each finding points at the block or directive to change. */
export function nginxGates(ctx: CheckContext, directives: Directive[], file: string): Finding[] {
  const blocking = gate(ctx.production);
  const http = find(directives, 'http')[0];
  const servers = serverBlocks(http?.children ?? directives.filter((d) => d.name !== 'stream'));
  const at = (d: Directive | undefined): Pick<FindingInput, 'file' | 'line'> => (d ? { file: displayPath(ctx, d.file), line: d.line } : { file });
  if (servers.length === 0) return [blocking({ check: 'edge.tls', file, message: 'the nginx configuration has no server block', fix: 'add a server { listen 443 ssl; ... } block' })];

  const findings: Finding[] = [];
  const tlsServers = servers.filter((s) => listens(s).some((l) => l.ssl));
  const plainServers = servers.filter((s) => listens(s).some((l) => !l.ssl));
  if (tlsServers.length === 0) {
    findings.push(
      blocking({
        check: 'edge.tls',
        ...at(find(servers[0]!.children, 'listen')[0] ?? servers[0]),
        message: 'no server listens with TLS (listen 443 ssl)',
        fix: 'add listen 443 ssl; with ssl_certificate and ssl_certificate_key',
      }),
    );
  }
  for (const server of tlsServers) {
    const certificate = find(server.children, 'ssl_certificate')[0] ?? find(http?.children, 'ssl_certificate')[0];
    const key = find(server.children, 'ssl_certificate_key')[0] ?? find(http?.children, 'ssl_certificate_key')[0];
    const listen = listens(server).find((l) => l.ssl)!.directive;
    if (!certificate || !key) {
      findings.push(
        blocking({
          check: 'edge.tls',
          ...at(listen),
          message: `a TLS server (listen ${listen?.args.join(' ')}) has no ${!certificate ? 'ssl_certificate' : 'ssl_certificate_key'}`,
          fix: 'add ssl_certificate and ssl_certificate_key to the server block',
        }),
      );
    } else {
      findings.push(pass({ check: 'edge.tls', ...at(listen), message: `TLS on port ${listens(server).find((l) => l.ssl)!.port} with a certificate and key` }));
    }
    findings.push(...protocolGate(ctx, server, http, listen));
    if (!hasHsts(server.children) && !hasHsts(http?.children)) {
      findings.push(
        blocking({
          check: 'edge.hsts',
          ...at(server),
          message: 'the TLS server sends no Strict-Transport-Security header',
          fix: 'add: add_header Strict-Transport-Security "max-age=31536000; includeSubDomains" always;',
        }),
      );
    } else {
      findings.push(pass({ check: 'edge.hsts', ...at(server), message: 'Strict-Transport-Security is sent' }));
    }
  }
  const unredirected = plainServers.filter((s) => !redirectsToHttps(s.children));
  for (const server of unredirected) {
    const listen = listens(server).find((l) => !l.ssl)!;
    findings.push(
      blocking({
        check: 'edge.https-redirect',
        ...at(listen.directive ?? server),
        message: `plain HTTP on port ${listen.port} serves content instead of redirecting to HTTPS`,
        fix: 'in that server block: return 301 https://$host$request_uri;',
      }),
    );
  }
  if (plainServers.length === 0)
    findings.push(
      warn({
        check: 'edge.https-redirect',
        file,
        message: 'nothing listens for plain HTTP: http:// links fail instead of redirecting',
        fix: 'add server { listen 80; return 301 https://$host$request_uri; }',
      }),
    );
  else if (unredirected.length === 0)
    findings.push(pass({ check: 'edge.https-redirect', ...at(listens(plainServers[0]!)[0]!.directive ?? plainServers[0]), message: 'plain HTTP redirects to HTTPS' }));
  return findings;
}

/** Protocols RFC 8996 deprecates (and SSL, long broken): a server must not accept them. */
const OLD_PROTOCOLS = /^(SSLv2|SSLv3|TLSv1|TLSv1\.1)$/i;

/**
 * `edge.tls-protocols`: the protocols a TLS server accepts, from its own `ssl_protocols` or the
 * http block's. Unset, nginx before 1.23.4 accepts TLSv1 and TLSv1.1, so that warns.
 */
function protocolGate(ctx: CheckContext, server: Directive, http: Directive | undefined, listen: Directive | undefined): Finding[] {
  const blocking = gate(ctx.production);
  const directive = find(server.children, 'ssl_protocols').pop() ?? find(http?.children, 'ssl_protocols').pop();
  if (!directive) {
    const at = listen ? { file: displayPath(ctx, listen.file), line: listen.line } : { file: displayPath(ctx, server.file), line: server.line };
    return [
      warn({
        check: 'edge.tls-protocols',
        ...at,
        message: 'ssl_protocols is not set: nginx before 1.23.4 then accepts TLSv1 and TLSv1.1',
        fix: 'add to the http or server block: ssl_protocols TLSv1.2 TLSv1.3;',
      }),
    ];
  }
  const at = { file: displayPath(ctx, directive.file), line: directive.line };
  const old = directive.args.filter((p) => OLD_PROTOCOLS.test(p));
  if (old.length) {
    return [blocking({ check: 'edge.tls-protocols', ...at, message: `ssl_protocols accepts ${old.join(' ')}: deprecated, with known attacks (RFC 8996)`, fix: 'ssl_protocols TLSv1.2 TLSv1.3;' })];
  }
  return [pass({ check: 'edge.tls-protocols', ...at, message: `TLS protocols: ${directive.args.join(' ')}` })];
}

async function checkCaddy(runner: Runner, ctx: CheckContext, configFile: string, pathEnv?: string): Promise<Finding[]> {
  const file = displayPath(ctx, configFile);
  let text: string;
  try {
    text = readFileSync(configFile, 'utf8');
    ctx.files?.add(configFile, 'Caddy configuration', 'edge.*');
  } catch (error) {
    ctx.files?.add(configFile, 'Caddy configuration', 'edge.*', (error as NodeJS.ErrnoException).code === 'ENOENT' ? 'missing' : 'unreadable');
    return [fail({ check: 'edge.caddy-syntax', file, message: `the Caddy configuration ${file} cannot be read`, fix: 'fix --caddy-config or preflight.caddyConfig' })];
  }
  const findings: Finding[] = [];
  if (!findExecutable('caddy', [], pathEnv)) {
    findings.push(
      warn({
        check: 'edge.caddy-syntax',
        file,
        message: 'caddy is not installed here, so `caddy validate` was skipped',
        fix: 'install caddy on the runner, or validate inside the edge container: docker compose run --rm edge caddy validate --config /etc/caddy/Caddyfile',
      }),
    );
  } else {
    const adapter = configFile.endsWith('.json') ? [] : ['--adapter', 'caddyfile'];
    const result = await runText(runner, { tool: 'caddy', args: ['validate', '--config', configFile, ...adapter], cwd: ctx.cwd });
    const line = /:(\d+)\b/.exec(result.stderr)?.[1];
    findings.push(
      result.exitCode === 0
        ? pass({ check: 'edge.caddy-syntax', file, message: 'caddy validate: valid' })
        : fail({
            check: 'edge.caddy-syntax',
            file,
            line: line ? Number(line) : undefined,
            message: `caddy validate: ${result.stderr.trim().split('\n').pop()}`,
            fix: 'fix the Caddyfile at the reported place',
          }),
    );
  }
  const blocking = gate(ctx.production);
  const lineOf = (pattern: RegExp) => {
    const index = text.split('\n').findIndex((l) => pattern.test(l));
    return index < 0 ? undefined : index + 1;
  };
  // Caddy serves HTTPS and redirects HTTP by default; only turning that off breaks it.
  const autoHttpsOff = lineOf(/^\s*auto_https\s+(off|disable_redirects)\b/);
  if (autoHttpsOff)
    findings.push(
      blocking({
        check: 'edge.https-redirect',
        file,
        line: autoHttpsOff,
        message: 'auto_https is turned off or its redirects are disabled',
        fix: 'remove the auto_https line so Caddy manages certificates and redirects HTTP to HTTPS',
      }),
    );
  else findings.push(pass({ check: 'edge.https-redirect', file, message: 'Caddy redirects HTTP to HTTPS (automatic HTTPS)' }));
  // Caddy accepts TLS 1.2+ unless a `protocols` subdirective lowers the minimum.
  const oldProtocols = lineOf(/^\s*protocols\s+(ssl3\.0|tls1\.0|tls1\.1)\b/i);
  if (oldProtocols)
    findings.push(
      blocking({
        check: 'edge.tls-protocols',
        file,
        line: oldProtocols,
        message: 'the tls protocols minimum is below TLS 1.2: deprecated, with known attacks (RFC 8996)',
        fix: 'remove the protocols line (Caddy defaults to tls1.2) or write: protocols tls1.2 tls1.3',
      }),
    );
  else findings.push(pass({ check: 'edge.tls-protocols', file, message: 'Caddy accepts TLS 1.2 and later' }));
  if (lineOf(/strict-transport-security/i) === undefined)
    findings.push(blocking({ check: 'edge.hsts', file, message: 'no Strict-Transport-Security header is set', fix: 'add: header Strict-Transport-Security "max-age=31536000; includeSubDomains"' }));
  else findings.push(pass({ check: 'edge.hsts', file, line: lineOf(/strict-transport-security/i), message: 'Strict-Transport-Security is sent' }));
  return findings;
}
