import { configDefaults, defineConfig } from 'vitest/config';

// As bin/outbox-relay runs the product (see there): test files run relays, consumers and
// their Kafka clients in one process, whose calls in flight would otherwise take all four
// of libuv's threads during a broker outage and hold PostgreSQL's logins back. Inherited by
// the workers, which read it when their thread pool starts.
process.env.UV_THREADPOOL_SIZE ??= '64';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // The soak runs alone, after the rest (npm test runs npm run test:chaos last): it owns
    // a Kafka cluster and a PostgreSQL of its own and needs the machine's cores.
    exclude: [...configDefaults.exclude, ...(process.env.OUTBOX_TEST_CHAOS === '1' ? [] : ['test/chaos/**'])],
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
