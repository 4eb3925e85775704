import { defineConfig } from 'vitest/config';

// The unit layer: pure logic, no PostgreSQL, no Kafka, no setup; seconds in all.
// `npm test` runs these files too, beside the rest (vitest.config.ts).
export default defineConfig({
  test: {
    include: ['test/unit/**/*.test.ts'],
    retry: 0,
    reporters: ['default'],
  },
});
