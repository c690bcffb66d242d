import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { DockerEnvironment } from './docker';

/**
 * A stand-in for the api that really depends on its database: /health (on 127.0.0.1:$PORT) only
 * answers once a TCP connection to the host and port of $DATABASE_URL opens. It logs the URL it
 * was given, password included, as careless applications do, so the drill's masking is tested.
 * APP_MODE=never never answers /health; APP_MODE=crash exits at once.
 */
const SERVE = `#!/bin/sh
set -u
echo "starting with DATABASE_URL=$DATABASE_URL"
rest=\${DATABASE_URL#*://}
rest=\${rest##*@}
hostport=\${rest%%/*}
host=\${hostport%:*}
port=\${hostport##*:}
case "$APP_MODE" in
  crash)
    echo "cannot load the application settings"
    exit 3
    ;;
  never)
    echo "health stays down on purpose"
    ;;
  *)
    until /bin/busybox nc -w 2 "$host" "$port" -e /bin/true; do
      echo "database $host:$port not reachable yet"
      sleep 0.2
    done
    echo ok > /www/health
    echo "database $host:$port reachable"
    ;;
esac
exec httpd -f -p "127.0.0.1:$PORT" -h /www
`;

const DOCKERFILE = `ARG BASE
FROM \${BASE}
ARG MODE
COPY serve.sh /serve.sh
ENV APP_MODE=\${MODE}
CMD ["/bin/sh", "/serve.sh"]
`;

export type AppImageMode = 'db' | 'never' | 'crash';

/** Builds the three variants on the test engine (local tags; `docker run` needs no registry for them). */
export function buildAppCheckImages(docker: DockerEnvironment): Record<AppImageMode, string> {
  const context = mkdtempSync('/tmp/llapp-');
  try {
    writeFileSync(join(context, 'serve.sh'), SERVE, { mode: 0o755 });
    writeFileSync(join(context, 'Dockerfile'), DOCKERFILE);
    const images = {} as Record<AppImageMode, string>;
    for (const mode of ['db', 'never', 'crash'] as const) {
      const tag = `lifeline-test/drill-app:${mode}`;
      const build = docker.docker(['build', '-q', '--build-arg', `BASE=${docker.baseImage}`, '--build-arg', `MODE=${mode}`, '-t', tag, context]);
      if (build.status !== 0) throw new Error(`docker build ${tag} failed: ${build.stderr}`);
      images[mode] = tag;
    }
    return images;
  } finally {
    rmSync(context, { recursive: true, force: true });
  }
}
