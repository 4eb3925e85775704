// Public API of the consumer side.
export { Consumer, createConsumer } from './consumer.js';
export type { ConsumerEventName, ConsumerEvents } from './events.js';
export type { BatchHandler, FailurePolicy, OffsetOutOfRangePolicy, RecordHandler } from './handler.js';
export { CONSUMER_DEFAULTS, type ConsumerOptions } from './options.js';
export type { OutOfRangeReason } from './incarnation.js';
export { decodeHeaders, type ConsumedRecord, type RecordHeaders } from './record.js';
export { replayDeadLetter, replayDeadLetters, type ReplayFilter, type ReplayResult, type ReplayTarget } from './replay.js';
export type { HandlerDrizzle, HandlerTx } from './transaction.js';
