import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/setup/services.ts'],
    setupFiles: ['test/setup/children.ts'],
    // Kafka and PostgreSQL tests share one broker and server on a 2-core machine: two files
    // at a time keeps them fast without starving the broker.
    maxWorkers: 2,
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // A failing test is a failing test: never retried.
    retry: 0,
    reporters: ['default'],
  },
});
