import { parse } from 'yaml';
import { displayPath, gate, pass, warn, type CheckContext, type Finding, type FindingInput } from './findings';
import type { ComposeModel, ComposeSources, ServiceModel } from './compose-source';
import { ONLY_REFERENCES } from './compose-secrets';

export interface ComposeGateOptions {
  /** Service names of the api, web and worker roles. */
  appServices: string[];
  /** Services allowed to run privileged or mount the Docker socket. */
  allowPrivileged: string[];
  /** Services allowed to use the host's network stack. */
  allowHostNetwork: string[];
  /** Configured service names for PostgreSQL and Redis, if any. */
  postgresService?: string;
  redisService?: string;
}

const SECRET_NAME = /PASSWORD|PASSWD|SECRET|TOKEN|KEY/i;
const DEFAULT_PGDATA = '/var/lib/postgresql/data';

/** Parses `compose config` output; when Compose could not run, the source files merged naively stand in. */
export function composeModel(merged: string | undefined, sources: ComposeSources): ComposeModel {
  if (merged) {
    const parsed = parse(merged) as { services?: Record<string, ServiceModel> } | null;
    return { services: parsed?.services ?? {} };
  }
  return sources.mergedModel();
}

/** The production security and durability gates on the merged Compose model. */
export function checkComposeGates(model: ComposeModel, sources: ComposeSources, ctx: CheckContext, options: ComposeGateOptions): Finding[] {
  const blocking = gate(ctx.production);
  const at = (service: string, ...path: (string | number)[]): Pick<FindingInput, 'file' | 'line'> => {
    const where = sources.locate(['services', service, ...path]);
    return { file: where.file ? displayPath(ctx, where.file) : undefined, line: where.line };
  };
  const atItem = (service: string, key: string, matches: (item: unknown) => boolean): Pick<FindingInput, 'file' | 'line'> => {
    const where = sources.locateItem(['services', service, key], matches);
    return { file: where.file ? displayPath(ctx, where.file) : undefined, line: where.line };
  };
  const findings: Finding[] = [];
  const services = Object.entries(model.services);
  const appServices = services.filter(([name]) => options.appServices.includes(name));
  const collect = (check: string, passMessage: string, found: Finding[]) => {
    findings.push(...(found.length ? found : [pass({ check, message: passMessage })]));
  };

  collect(
    'compose.privileged',
    'no service runs privileged',
    services
      .filter(([name, s]) => s.privileged === true && !options.allowPrivileged.includes(name))
      .map(([name]) =>
        blocking({
          check: 'compose.privileged',
          ...at(name, 'privileged'),
          message: `service ${name} runs privileged: full access to the host`,
          fix: `remove privileged: true (or add ${name} to preflight.allowPrivileged if it truly needs it)`,
        }),
      ),
  );

  const postgres = services.filter(([name, s]) => dataServiceRole(name, s.image, options) === 'postgres');
  const redis = services.filter(([name, s]) => dataServiceRole(name, s.image, options) === 'redis');
  const dataServices = new Set([...postgres, ...redis].map(([name]) => name));
  collect(
    'compose.host-network',
    'no app, database or Redis service uses the host network',
    services
      .filter(([name, s]) => (appServices.some(([app]) => app === name) || dataServices.has(name)) && s.network_mode === 'host' && !options.allowHostNetwork.includes(name))
      .map(([name]) =>
        dataServices.has(name)
          ? blocking({
              check: 'compose.host-network',
              ...at(name, 'network_mode'),
              message: `${postgres.some(([p]) => p === name) ? 'database' : 'Redis'} service ${name} uses network_mode: host: it listens on the host's own interfaces, where no port binding limits who reaches it`,
              fix: `remove network_mode: host and publish "127.0.0.1:PORT:PORT" (or add ${name} to preflight.allowHostNetwork if it is bound to 127.0.0.1 by its own configuration)`,
            })
          : blocking({
              check: 'compose.host-network',
              ...at(name, 'network_mode'),
              message: `app service ${name} uses network_mode: host`,
              fix: `publish the ports it needs instead (or add ${name} to preflight.allowHostNetwork)`,
            }),
      ),
  );

  collect(
    'compose.docker-socket',
    'no app service mounts the Docker socket',
    appServices.flatMap(([name, s]) =>
      (s.volumes ?? []).flatMap((volume) => {
        const { source } = parseVolume(volume);
        if (!source || !/docker\.sock$/.test(source) || options.allowPrivileged.includes(name)) return [];
        return [
          blocking({
            check: 'compose.docker-socket',
            ...atItem(name, 'volumes', (item) => parseVolume(item as Volume).source === source),
            message: `app service ${name} mounts the Docker socket (${source}): root on the host`,
            fix: `remove the mount (or add ${name} to preflight.allowPrivileged)`,
          }),
        ];
      }),
    ),
  );

  collect(
    'compose.data-ports',
    postgres.length + redis.length ? 'PostgreSQL and Redis ports are not published on all interfaces' : 'no PostgreSQL or Redis service publishes ports',
    [...postgres, ...redis].flatMap(([name, s]) =>
      (s.ports ?? []).flatMap((port) => {
        const published = parsePort(port);
        if (!published || !publicAddress(published.hostIp)) return [];
        return [
          blocking({
            check: 'compose.data-ports',
            ...atItem(name, 'ports', (item) => {
              const p = parsePort(item as Port);
              return p?.published === published.published && publicAddress(p.hostIp);
            }),
            message: `service ${name} publishes port ${published.published} on ${published.hostIp || '0.0.0.0'}: the database is reachable from every network the host is on`,
            fix: `bind it to loopback ("127.0.0.1:${published.published}:${published.target}") or drop the published port`,
          }),
        ];
      }),
    ),
  );

  if (postgres.length === 0) {
    findings.push(
      warn({
        check: 'compose.postgres-volume',
        message: 'no PostgreSQL service found in the Compose files',
        fix: 'set postgres.service in lifeline.yml to the service name if it uses a custom image',
      }),
    );
  }
  for (const [name, s] of postgres) {
    const dataDir = pgDataDir(s);
    const mounts = (s.volumes ?? []).map(parseVolume);
    const mount = mounts.find((m) => m.target && (dataDir === m.target || dataDir.startsWith(`${m.target.replace(/\/$/, '')}/`)));
    if (!mount) {
      findings.push(
        blocking({
          check: 'compose.postgres-volume',
          ...at(name, ...(s.volumes ? ['volumes'] : [])),
          message: `service ${name} keeps ${dataDir} in the container (no volume): recreating it loses the database`,
          fix: `mount a named volume: volumes: ["pgdata:${DEFAULT_PGDATA}"] and declare pgdata under the top-level volumes:`,
        }),
      );
    } else if (mount.kind === 'anonymous') {
      findings.push(
        blocking({
          check: 'compose.postgres-volume',
          ...atItem(name, 'volumes', (item) => parseVolume(item as Volume).target === mount.target),
          message: `service ${name} keeps ${dataDir} on an anonymous volume: \`down -v\` or a recreate can orphan it`,
          fix: `name the volume: "pgdata:${mount.target}" and declare pgdata under the top-level volumes:`,
        }),
      );
    } else {
      findings.push(
        pass({
          check: 'compose.postgres-volume',
          ...atItem(name, 'volumes', (item) => parseVolume(item as Volume).target === mount.target),
          message: `service ${name} keeps its data on ${mount.kind === 'bind' ? `the host directory ${mount.source}` : `the named volume ${mount.source}`}`,
        }),
      );
    }
  }

  collect(
    'compose.image-pinned',
    appServices.length ? `app images are pinned by digest (${appServices.map(([n]) => n).join(', ')})` : 'no app services found to check',
    appServices.flatMap(([name, s]) => {
      if (!s.image)
        return [
          warn({
            check: 'compose.image-pinned',
            ...at(name),
            message: `service ${name} has no image (built on the host): what runs is not what was tested`,
            fix: 'build and push the image in CI, then reference it by digest (image: registry/app@sha256:...)',
          }),
        ];
      if (/@sha256:[0-9a-f]{64}$/.test(s.image)) return [];
      const tag = imageTag(s.image);
      const what = tag === undefined ? 'has no tag (means latest)' : tag === 'latest' ? 'uses the latest tag' : `uses the tag ${tag}, which can be moved`;
      return [
        blocking({
          check: 'compose.image-pinned',
          ...at(name, 'image'),
          message: `service ${name} image ${s.image} ${what}`,
          fix: 'pin the image by digest: image: registry/app@sha256:<digest> (docker inspect --format "{{index .RepoDigests 0}}" shows it)',
        }),
      ];
    }),
  );

  for (const role of options.appServices) {
    const service = model.services[role];
    if (!service) {
      findings.push(
        warn({ check: 'compose.healthcheck', message: `no service named ${role} in the Compose files`, fix: `set compose.services.${role}.name in lifeline.yml if the service has another name` }),
      );
    } else if (!service.healthcheck?.test || service.healthcheck.disable === true || healthcheckDisabled(service.healthcheck.test)) {
      findings.push(
        blocking({
          check: 'compose.healthcheck',
          ...at(role, ...(service.healthcheck ? ['healthcheck'] : [])),
          message: `service ${role} has no healthcheck: a deploy cannot tell a broken release from a healthy one`,
          fix: `add healthcheck: { test: ["CMD", "wget", "-q", "-O-", "http://127.0.0.1:PORT/health"], interval: 5s, retries: 5 }`,
        }),
      );
    } else {
      findings.push(pass({ check: 'compose.healthcheck', ...at(role, 'healthcheck'), message: `service ${role} has a healthcheck` }));
    }
  }

  collect(
    'compose.restart',
    'every service has a restart policy',
    services
      .filter(([, s]) => (s.restart === undefined || s.restart === 'no') && (!s.deploy?.restart_policy || s.deploy.restart_policy.condition === 'none'))
      .map(([name, s]) =>
        blocking({
          check: 'compose.restart',
          ...at(name, ...(s.restart ? ['restart'] : [])),
          message: `service ${name} has no restart policy: it stays down after a crash or a host reboot`,
          fix: 'add restart: unless-stopped',
        }),
      ),
  );

  const inline: Finding[] = [];
  const reported = new Set<string>();
  for (const entry of sources.environmentEntries()) {
    if (!SECRET_NAME.test(entry.name) || entry.value === undefined || entry.value === '' || ONLY_REFERENCES.test(entry.value.trim())) continue;
    // An anchor merged into several services is one line to fix.
    if (reported.has(`${entry.file}:${entry.line}`)) continue;
    reported.add(`${entry.file}:${entry.line}`);
    inline.push(
      blocking({
        check: 'compose.inline-secret',
        file: displayPath(ctx, entry.file),
        line: entry.line,
        message: `service ${entry.service} sets ${entry.name} to a literal value in the Compose file`,
        fix: `reference it instead: ${entry.name}: \${${entry.name}} (from the environment or an env_file kept out of git)`,
      }),
    );
  }
  collect('compose.inline-secret', 'no secret-looking environment value is written inline', inline);
  return findings;
}

/** `test: ["NONE"]` (or `NONE`) switches off a healthcheck the image defines. */
function healthcheckDisabled(test: unknown): boolean {
  return test === 'NONE' || (Array.isArray(test) && test[0] === 'NONE');
}

/**
 * PostgreSQL images by the last path segment of the repository (registry, namespace, tag and digest
 * dropped): postgres, postgresql, postgis, timescaledb(-ha), pgvector, pg15/pg-16, and any name
 * containing those (supabase/postgres, cimg/postgres). PostgREST is an API server, not the database.
 */
const POSTGRES_IMAGE = /postgres(?!t)|postgis|timescale|pgvector|^pg-?\d+$/;
const REDIS_IMAGE = /redis|valkey|keydb|dragonfly/;
/**
 * Companions named after the database that hold no data of it: metrics exporters, admin UIs,
 * poolers, backup sidecars, Sentinel. Their host networking is not a database's, and a volume
 * check on them would be nonsense.
 */
const NOT_THE_DATABASE = /exporter|admin|bouncer|pgpool|pool|backup|commander|insight|sentinel|operator|proxy|ui$|-cli$/;

/**
 * Whether a Compose service is the environment's PostgreSQL or Redis: the service lifeline.yml
 * names (postgres.service / redis.service) always is; otherwise its image decides (see the rules above).
 */
export function dataServiceRole(name: string, image: string | undefined, configured: { postgresService?: string; redisService?: string }): 'postgres' | 'redis' | undefined {
  if (configured.postgresService && name === configured.postgresService) return 'postgres';
  if (configured.redisService && name === configured.redisService) return 'redis';
  if (!image) return undefined;
  const segment = imageRepositoryName(image);
  if (NOT_THE_DATABASE.test(segment)) return undefined;
  if (POSTGRES_IMAGE.test(segment)) return 'postgres';
  if (REDIS_IMAGE.test(segment)) return 'redis';
  return undefined;
}

/** `registry:5000/ns/timescaledb-ha:pg15@sha256:...` -> `timescaledb-ha` (lower case). */
export function imageRepositoryName(image: string): string {
  const repository = image.split('@')[0]!.replace(/:[^/]*$/, '');
  return repository.split('/').pop()!.toLowerCase();
}

function imageTag(image: string): string | undefined {
  const withoutDigest = image.split('@')[0]!;
  const last = withoutDigest.split('/').pop()!;
  const colon = last.indexOf(':');
  return colon < 0 ? undefined : last.slice(colon + 1);
}

function pgDataDir(service: ServiceModel): string {
  const env = service.environment;
  const fromEnv = Array.isArray(env) ? env.find((e) => e.startsWith('PGDATA='))?.slice(7) : (env?.PGDATA as string | undefined);
  return fromEnv || DEFAULT_PGDATA;
}

interface Mount {
  kind: 'named' | 'anonymous' | 'bind' | 'other';
  source?: string;
  target?: string;
}

type Volume = NonNullable<ServiceModel['volumes']>[number];
type Port = NonNullable<ServiceModel['ports']>[number];

function parseVolume(volume: Volume | null | undefined): Mount {
  if (volume === null || volume === undefined) return { kind: 'other' };
  if (typeof volume === 'string') {
    const parts = volume.split(':');
    if (parts.length === 1) return { kind: 'anonymous', target: parts[0] };
    const [source, target] = parts;
    return { kind: /^[./~]/.test(source!) ? 'bind' : 'named', source, target };
  }
  if (volume.type === 'bind') return { kind: 'bind', source: volume.source, target: volume.target };
  if (volume.type === 'volume' || volume.type === undefined) return { kind: volume.source ? 'named' : 'anonymous', source: volume.source, target: volume.target };
  return { kind: 'other', source: volume.source, target: volume.target };
}

function parsePort(port: Port | null | undefined): { hostIp: string; published: string; target: string } | undefined {
  if (port === null || port === undefined) return undefined;
  if (typeof port === 'object') {
    if (port.published === undefined || port.published === '') return undefined;
    return { hostIp: port.host_ip ?? '', published: String(port.published), target: String(port.target ?? '') };
  }
  const text = String(port).replace(/\/(tcp|udp)$/, '');
  // IPv6 host addresses come in brackets: [::]:5432:5432
  const match = /^(?:(\[[^\]]*\]|[^:]*):)?([^:]+):([^:]+)$/.exec(text);
  if (!match) return undefined; // a container-only port is not published to a fixed host port
  return { hostIp: (match[1] ?? '').replace(/^\[|\]$/g, ''), published: match[2]!, target: match[3]! };
}

function publicAddress(hostIp: string): boolean {
  return hostIp === '' || hostIp === '0.0.0.0' || hostIp === '::';
}
