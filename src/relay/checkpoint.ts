import { OutboxError } from '../errors.js';
import type { KafkaConnection } from '../kafka/config.js';
import { CommittedReader } from '../kafka/reader.js';

/**
 * A checkpoint record: written in the same Kafka transaction as the records it lists, so
 * it is visible to a read_committed reader exactly when they are. It is what tells a new
 * owner of a shard which rows the previous owner got into Kafka without marking them.
 *
 * Version 2 (written since 2026-12) lists the ids only: it is produced together with the
 * records rather than after their delivery, so a transaction waits for one round of
 * deliveries, not two. The positions of the rows are recorded by the mark that follows the
 * commit; rows marked from a checkpoint (after a failure between commit and mark) have
 * none. Version 1 (ids with each row's partition and offset) is still read.
 */
export interface Checkpoint {
  v: 2;
  /** instance_id of the relay group's database row: checkpoints of another database are ignored. */
  instance: string;
  group: string;
  shard: number;
  relay: string;
  /** Outbox ids the transaction carried. */
  ids: string[];
}

/** A checkpoint as read: a version 1 record also says where each row landed. */
export interface ReadCheckpoint extends Omit<Checkpoint, 'v'> {
  v: 1 | 2;
  /** Partition and offset of each id, in a version 1 record; null in a version 2 one. */
  partitions: Array<number | null>;
  offsets: Array<number | null>;
}

export function checkpointKey(group: string, shard: number): string {
  return `${group}/${shard}`;
}

export function encodeCheckpoint(checkpoint: Checkpoint): Buffer {
  return Buffer.from(JSON.stringify(checkpoint));
}

function malformed(): OutboxError {
  return new OutboxError('KAFKA_ERROR', 'malformed checkpoint record');
}

export function decodeCheckpoint(value: Buffer | null): ReadCheckpoint {
  let parsed: Partial<ReadCheckpoint> | null;
  try {
    parsed = JSON.parse(value?.toString('utf8') ?? 'null') as Partial<ReadCheckpoint> | null;
  } catch {
    throw malformed();
  }
  if (!parsed || typeof parsed !== 'object' || !Array.isArray(parsed.ids) || !parsed.ids.every((id) => typeof id === 'string')) throw malformed();
  const ids = parsed.ids;
  if (parsed.v === 2) return { ...(parsed as ReadCheckpoint), partitions: ids.map(() => null), offsets: ids.map(() => null) };
  if (parsed.v === 1 && Array.isArray(parsed.partitions) && Array.isArray(parsed.offsets) && parsed.offsets.length === ids.length && parsed.partitions.length === ids.length) {
    return parsed as ReadCheckpoint;
  }
  throw malformed();
}

export interface CheckpointAt {
  offset: number;
  checkpoint: ReadCheckpoint;
}

/**
 * Reads the committed checkpoints of one shard in `[fromOffset, endOffset)` of a checkpoint
 * partition. `endOffset` is the high watermark taken AFTER the producer was fenced, so it
 * covers every transaction a former owner could still commit. The reader is
 * read_committed: records of aborted transactions are skipped, and it cannot pass a
 * transaction that is still open, so it waits for the partition's open transactions to
 * finish rather than miss one.
 */
export async function readCheckpoints(
  connection: KafkaConnection,
  topic: string,
  partition: number,
  key: string,
  fromOffset: number,
  endOffset: number,
  timeoutMs: number,
): Promise<CheckpointAt[]> {
  if (fromOffset >= endOffset) return [];
  const reader = await CommittedReader.open(connection, 'outbox-relay-checkpoint-reader', 'read checkpoints', timeoutMs);
  try {
    let reachedEnd = false;
    reader.onEnd((eof) => {
      if (eof.partition === partition && eof.offset >= endOffset) reachedEnd = true;
    });
    reader.assign([{ topic, partition, offset: fromOffset }], 200);
    const found: CheckpointAt[] = [];
    const deadline = Date.now() + timeoutMs;
    while (!reachedEnd) {
      if (Date.now() > deadline) {
        throw new OutboxError('KAFKA_ERROR', `checkpoint read of ${topic}[${partition}] did not reach offset ${endOffset} in ${timeoutMs} ms`, {
          retriable: true,
        });
      }
      for (const message of await reader.consume(500)) {
        if (message.offset >= endOffset) reachedEnd = true;
        if (message.offset < endOffset && message.key?.toString() === key) {
          found.push({ offset: message.offset, checkpoint: decodeCheckpoint(message.value) });
        }
      }
      const position = reader.position(topic, partition);
      if (position !== undefined && position >= endOffset) reachedEnd = true;
    }
    return found;
  } finally {
    await reader.close();
  }
}
