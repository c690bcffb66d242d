#!/usr/bin/env node
// The operator CLI runs the same bundled code as the actions (dist/cli is built by `npm run build`).
// Node's on-disk compile cache (Node >= 22.1) skips re-compiling the bundle on every call, which is
// most of a short command's start-up time.
import module from 'node:module';

module.enableCompileCache?.();
await import('../dist/cli/index.js');
