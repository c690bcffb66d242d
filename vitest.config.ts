import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/helpers/global-setup.ts'],
    setupFiles: ['test/helpers/temp-cleanup.ts'],
    testTimeout: 180_000,
    hookTimeout: 180_000,
    // Two cores, but most of a file's time is spent waiting (settle windows, health waits, Docker,
    // servers starting): three files at a time keep both cores busy (20.5 min with two, measured
    // 2026-12-02). Per-test timeouts leave room for the extra contention.
    maxWorkers: 3,
    server: { deps: { inline: ['@actions/workflow-parser'] } },
  },
});
