import { resolve as resolvePath } from 'node:path';
import { Catalog } from '../catalog/store';
import { walArchiveLag } from '../drill/drill';
import { environmentFacts, metricFamilies, type EnvironmentFacts } from '../metrics/collect';
import { renderExposition } from '../metrics/exposition';
import { writeMetricsFile } from '../metrics/write';
import { environmentConnection } from '../postgres/connection';
import { localPostgresRunner } from '../runner/factory';
import { loadConfig } from '../settings/load';
import { resolveEnvironment } from '../settings/resolve';
import { RUNS_LOG } from './observe';
import { declaredInputs, environmentFor, type CommandSpec, type InputSpec } from './spec';

const METRICS_INPUTS = [
  {
    name: 'out',
    type: 'string',
    description: "Write them to this file atomically (for node_exporter's textfile collector, e.g. /var/lib/prometheus/node-exporter/lifeline.prom) instead of printing them.",
  },
] as const satisfies readonly InputSpec[];

export const metricsCommand: CommandSpec = {
  name: 'metrics',
  summary: 'Print Prometheus metrics for every environment from the catalog (backup and drill ages, RTO/RPO against targets, gate, sync, catalog size)',
  inputs: [...METRICS_INPUTS],
  outputs: [],
  implemented: true,
  async run(ctx) {
    const first = environmentFor(ctx);
    const globals = ctx.inputs.globals();
    // Without --env: every environment of lifeline.yml, each from its own catalog.
    const names = globals.env || !first.configPath ? [first.name] : Object.keys(loadConfig(first.configPath, { explicit: true }).config.environments);
    const now = new Date();
    const environments: EnvironmentFacts[] = [];
    for (const name of names) {
      const settings = name === first.name ? first : resolveEnvironment({ ...globals, env: name }, { env: ctx.env, cwd: ctx.cwd });
      for (const secret of settings.secrets) ctx.logger.secret(secret);
      const facts: EnvironmentFacts = await environmentFacts(new Catalog(settings.store), settings, RUNS_LOG);
      if (settings.postgres.physical && settings.postgres.url) {
        const lag = await walArchiveLag(localPostgresRunner(settings.postgres.binDir), environmentConnection(settings), now);
        facts.walArchiveLagSeconds = lag.seconds;
        if (lag.seconds === null) ctx.logger.warn(`${name}: ${lag.note}`);
      }
      environments.push(facts);
    }
    const families = metricFamilies(environments, now);
    const text = renderExposition(families);
    const out = declaredInputs(ctx, METRICS_INPUTS).string('out');
    if (out) {
      const path = resolvePath(ctx.cwd, out);
      await writeMetricsFile(path, text);
      return { json: { written: path, environments: names }, text: `metrics for ${names.join(', ')} written to ${path}` };
    }
    return { json: families, text };
  },
};
