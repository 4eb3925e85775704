// Public API of the consumer side.
export { Consumer, createConsumer } from './consumer.js';
export type { ConsumerEventName, ConsumerEvents } from './events.js';
export { CONSUMER_DEFAULTS, type BatchHandler, type ConsumerOptions, type FailurePolicy, type OffsetOutOfRangePolicy, type RecordHandler } from './options.js';
export type { OutOfRangeReason } from './incarnation.js';
export { decodeHeaders, type ConsumedRecord, type RecordHeaders } from './record.js';
export { replayDeadLetter, replayDeadLetters, type ReplayFilter, type ReplayResult, type ReplayTarget } from './replay.js';
export type { HandlerDrizzle, HandlerTx } from './transaction.js';
