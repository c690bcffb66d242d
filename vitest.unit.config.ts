import { defineConfig } from 'vitest/config';

// `npm run test:unit`: the tests under test/unit, without starting PostgreSQL or Redis.
export default defineConfig({
  test: {
    include: ['test/unit/**/*.test.ts'],
    setupFiles: ['test/helpers/temp-cleanup.ts'],
    testTimeout: 60_000,
    server: { deps: { inline: ['@actions/workflow-parser'] } },
  },
});
