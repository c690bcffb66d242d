import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/helpers/global-setup.ts'],
    testTimeout: 120_000,
    hookTimeout: 180_000,
    // Two cores: two test files at a time against the shared servers.
    maxWorkers: 2,
    server: { deps: { inline: ['@actions/workflow-parser'] } },
  },
});
