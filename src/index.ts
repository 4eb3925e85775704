// Public API of outbox-relay. Everything a user needs is re-exported here by name.

export { enqueue, type EnqueueOptions } from './outbox/enqueue.js';
export { HEADER, RESERVED_HEADERS, type JsonValue, type OutboxEvent } from './outbox/event.js';
export { DEFAULT_MAX_MESSAGE_BYTES, encodedSize, validateEvent, validateTopic } from './outbox/validate.js';
export { MAX_KEY_BYTES } from './outbox/key-size.js';
export { DEFAULT_MAX_RECORD_BYTES, recordBytes } from './kafka/record-size.js';
export {
  CLAIM_CHECK_DEFAULTS,
  CLAIM_CHECK_HEADER,
  postgresClaimCheckStore,
  type ClaimCheckOptions,
  type ClaimCheckReference,
  type ClaimCheckStore,
} from './claim-check/store.js';
export { migrate, loadMigrations, PARTITION_UNITS, DEFAULT_PARTITIONS_AHEAD, type MigrateOptions, type MigrateResult, type PartitionUnit } from './db/migrate.js';
export { messages, outboxTables, MESSAGE_STATES, type MessageState } from './db/schema.js';
export { fromDrizzle, toQueryable, type DrizzleExecutor, type Queryable } from './db/queryable.js';
export { DEFAULT_SCHEMA } from './db/identifiers.js';
export { ROLE_GRANTS, ROLE_KINDS, roleNames, type RoleGrants, type RoleKind, type RoleNames, type RoleOptions } from './db/roles.js';
export { applyRoles, rolesSql, type ApplyRolesOptions, type RolesSqlOptions } from './sql/roles.js';
export { OutboxError, ValidationError, OptionsError, coerceError, describeError, type OutboxErrorCode } from './errors.js';
export { PRODUCER_PRESETS, type KafkaConnection, type KafkaProperties, type ProducerPreset } from './kafka/config.js';
export { classifyKafkaError, type KafkaFailureKind } from './kafka/errors.js';
export { createLogger, redactUrl, type Logger } from './log.js';
export { createRelay, Relay } from './relay/relay.js';
export { serveRelayHttp, parseHttpAddress, DEFAULT_HTTP_PORT } from './relay/http.js';
export { collectStatus, type Status } from './ops/status.js';
export { rewindOffsets, setOffset, storedOffsets, type GroupOffsetsTarget, type OffsetChange, type OffsetChangeOptions, type OffsetsAudit, type StoredOffset } from './ops/offsets.js';
export { RELAY_OPTION_BOUNDS, type RelayOptions, type ResolvedRelayOptions } from './relay/options.js';
export type { BatchPhases, RelayEventMap } from './relay/events.js';
export {
  Consumer,
  createConsumer,
  CONSUMER_DEFAULTS,
  decodeHeaders,
  replayDeadLetter,
  replayDeadLetters,
  type BatchHandler,
  type ConsumedRecord,
  type ConsumerEventName,
  type ConsumerEvents,
  type ConsumerOptions,
  type FailurePolicy,
  type HandlerDrizzle,
  type HandlerTx,
  type OffsetOutOfRangePolicy,
  type OutOfRangeReason,
  type RecordHandler,
  type RecordHeaders,
  type ReplayFilter,
  type ReplayResult,
  type ReplayTarget,
} from './consumer/index.js';
