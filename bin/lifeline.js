#!/usr/bin/env node
// The operator CLI runs the same bundled code as the actions (dist/cli is built by `npm run build`).
import '../dist/cli/index.js';
