import type pg from 'pg';
import { sleep } from '../async.js';
import { OptionsError, OutboxError } from '../errors.js';
import type { KafkaAdmin } from '../kafka/admin.js';
import { isKafkaError, KAFKA_CODES } from '../kafka/errors.js';
import { TransactionalProducer } from '../kafka/producer.js';
import { unsentTopicsSql } from '../sql/outbox-inspect.js';
import type { StartupContext } from './startup-database.js';
import { checkTopics, type TopicCache, type TopicReport } from './topics.js';

// The relay's start-up checks in Kafka: the checkpoint topic exists and is safe, the
// brokers accept the group's transactional producers, and the topics of unsent rows exist.

/** Creates the compacted checkpoint topic if missing (RF 3, or 1 on a smaller cluster); returns its partition count. */
export async function ensureCheckpointTopic(ctx: StartupContext, admin: KafkaAdmin): Promise<number> {
  const o = ctx.options;
  await admin.listTopics(10_000).catch((cause: unknown) => {
    throw new OutboxError('KAFKA_ERROR', `Kafka brokers ${String(o.connection.brokers)} are not reachable`, { cause, retriable: true });
  });
  const create = (replication: number) =>
    admin.createTopic({
      topic: o.checkpointTopic,
      num_partitions: o.shards,
      replication_factor: replication,
      config: { 'cleanup.policy': 'compact', 'min.insync.replicas': String(Math.min(2, replication)), 'segment.ms': String(3_600_000) },
    });
  try {
    await create(o.checkpointReplicationFactor ?? 3);
  } catch (err) {
    const cause = (err as Error).cause;
    if (o.checkpointReplicationFactor !== undefined || !isKafkaError(cause) || cause.code !== KAFKA_CODES.ERRORS.ERR_INVALID_REPLICATION_FACTOR) throw err;
    if (o.strict) throw new OutboxError('TOPIC_UNSAFE', 'the cluster has fewer than 3 brokers: checkpoints cannot be replicated (strict mode)');
    ctx.log.warn({ topic: o.checkpointTopic }, 'fewer than 3 brokers: checkpoint topic created with replication factor 1');
    await create(1);
  }
  // A topic just created takes a moment to appear in metadata.
  const deadline = Date.now() + 30_000;
  for (;;) {
    const [description] = await admin.describeTopics([o.checkpointTopic]);
    if (description && !description.error) {
      await checkCheckpointTopic(ctx, admin, description.partitions.length);
      return description.partitions.length;
    }
    if (Date.now() > deadline) {
      throw new OutboxError('KAFKA_ERROR', `checkpoint topic ${o.checkpointTopic} is not usable: ${description?.error?.message ?? 'missing'}`);
    }
    await sleep(100, ctx.signal);
  }
}

/**
 * The checkpoint topic is what lets a new owner of a shard find the batch a former owner
 * committed but did not mark: a checkpoint deleted before it was applied means that batch
 * is published again. So its settings are checked: one partition per shard at least (the
 * relay creates it so), and nothing deleted from it by time or size retention (a log that
 * no longer starts at 0: compaction keeps the start, retention moves it). The client
 * cannot read topic configs, so `cleanup.policy=compact` itself is what an operator must
 * keep; the relay creates the topic with it. Wrong settings fail start() in `strict`
 * mode and are logged as errors otherwise.
 */
async function checkCheckpointTopic(ctx: StartupContext, admin: KafkaAdmin, partitions: number): Promise<void> {
  const o = ctx.options;
  const problems: string[] = [];
  if (partitions < o.shards) {
    problems.push(`it has ${partitions} partitions for ${o.shards} shards (create it with at least one partition per shard)`);
  }
  const starts = await retrying(ctx, 'read the checkpoint topic log start', () =>
    admin.startOffsets(o.checkpointTopic, Array.from({ length: partitions }, (_, p) => p)),
  );
  const trimmed = [...starts.entries()].filter(([, start]) => start > 0).map(([p]) => p);
  if (trimmed.length > 0) {
    problems.push(
      `records were deleted from partitions ${trimmed.join(', ')} (time or size retention, or delete-records): ` +
        'it must be cleanup.policy=compact with no retention.ms/retention.bytes, or a crash can publish a batch twice',
    );
  }
  if (problems.length === 0) return;
  const message = `checkpoint topic ${o.checkpointTopic}: ${problems.join('; ')}`;
  if (o.strict) throw new OutboxError('TOPIC_UNSAFE', `strict mode: ${message}`);
  ctx.log.error({ topic: o.checkpointTopic, problems }, 'checkpoint topic settings put exactly-once at risk');
}

/** Retries a broker call for a few seconds: a topic just created has no leaders for a moment. */
async function retrying<T>(ctx: StartupContext, what: string, call: () => Promise<T>): Promise<T> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    try {
      return await call();
    } catch (err) {
      if (Date.now() > deadline || ctx.signal.aborted) throw err;
      ctx.log.debug({ err }, `${what}: retrying`);
      await sleep(200, ctx.signal);
    }
  }
}

/**
 * Some producer settings are refused by the brokers only when a transactional producer
 * initialises: a `transactionTimeoutMs` above their `transaction.max.timeout.ms`, a
 * transactional id the principal may not use. Every shard would then fail forever after a
 * "successful" start, so one producer under the group's probe id is initialised first.
 */
export async function probeTransactions(ctx: StartupContext): Promise<void> {
  const o = ctx.options;
  const producer = new TransactionalProducer({
    connection: o.connection,
    transactionalId: `${o.group}-probe`,
    preset: o.preset,
    transactionTimeoutMs: o.transactionTimeoutMs,
  });
  try {
    await producer.connect(o.transactionOperationTimeoutMs);
    await producer.init(o.transactionOperationTimeoutMs);
  } catch (err) {
    const code = (err as { cause?: { code?: unknown } }).cause?.code;
    if (code === KAFKA_CODES.ERRORS.ERR_INVALID_TRANSACTION_TIMEOUT) {
      throw new OptionsError(
        `transactionTimeoutMs (${o.transactionTimeoutMs}) is above the brokers' transaction.max.timeout.ms: lower it ` +
          '(the brokers default to 900000), or raise transaction.max.timeout.ms on the brokers',
      );
    }
    if (code === KAFKA_CODES.ERRORS.ERR_TRANSACTIONAL_ID_AUTHORIZATION_FAILED || code === KAFKA_CODES.ERRORS.ERR_CLUSTER_AUTHORIZATION_FAILED) {
      throw new OutboxError('KAFKA_ERROR', `the Kafka principal may not use transactional ids ${o.group}-*: grant it WRITE and DESCRIBE on them`, { cause: err });
    }
    throw err;
  } finally {
    await producer.disconnect().catch(() => undefined);
  }
}

export async function checkTargetTopics(ctx: StartupContext, pool: pg.Pool, cache: TopicCache): Promise<TopicReport> {
  const { rows } = await pool.query<{ topic: string }>(unsentTopicsSql(ctx.options.q));
  const report = await checkTopics(cache, rows.map((r) => r.topic), ctx.log);
  if (ctx.options.strict && (report.missing.length > 0 || report.unsafe.length > 0)) {
    const problems = [...report.missing.map((t) => `${t}: missing`), ...report.unsafe.map((u) => `${u.topic}: ${u.problem}`)];
    throw new OutboxError('TOPIC_UNSAFE', `strict mode: ${problems.join('; ')}`);
  }
  return report;
}
