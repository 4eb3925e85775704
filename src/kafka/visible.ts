import type { KafkaConnection } from './config.js';
import { CommittedReader } from './reader.js';

export interface OffsetRange {
  topic: string;
  partition: number;
  /** First offset to look at. */
  from: number;
  /** The partition's last stable offset: the range ends before it. */
  end: number;
}

/**
 * Whether a read_committed reader would get any record in each range. A transactional
 * topic's log holds offsets that are no records: each transaction's commit or abort marker,
 * and the records of aborted transactions. A consumer caught up to the last record still
 * sits an offset or more below the log end, so `end - stored` alone would show lag that no
 * record makes. Answers, by `topic:partition`: true (a record waits), false (only markers
 * and aborted records), or nothing when undecided within `timeoutMs`.
 */
export async function recordsWaiting(connection: KafkaConnection, ranges: OffsetRange[], timeoutMs: number): Promise<Map<string, boolean>> {
  const answers = new Map<string, boolean>();
  const open = new Map(ranges.filter((r) => r.from < r.end).map((r) => [`${r.topic}:${r.partition}`, r]));
  for (const r of ranges) if (r.from >= r.end) answers.set(`${r.topic}:${r.partition}`, false);
  if (open.size === 0) return answers;
  // One record per partition settles it: fetch little, buffer little.
  const reader = await CommittedReader.open(connection, 'outbox-relay-lag-probe', 'lag probe', timeoutMs, {
    'fetch.max.bytes': 1_048_576,
    'max.partition.fetch.bytes': 65_536,
    'queued.max.messages.kbytes': 1_024,
  });
  try {
    const settle = (key: string, waiting: boolean) => {
      const range = open.get(key);
      if (!range) return;
      open.delete(key);
      answers.set(key, waiting);
      // Decided: fetch no more of it.
      reader.pause(range.topic, range.partition);
    };
    // Only the end-of-partition event says a range holds no record: the position may run
    // ahead of the records handed over (it is the fetcher's). The event is reported before
    // the records of the same consume call, so it is applied only after them. A stored
    // offset below the log start (records deleted before they were applied): the consumer
    // itself goes on from the log start, so the probe reads from there too, and the records
    // it finds are waiting.
    const ends: Array<{ key: string; offset: number }> = [];
    reader.onEnd((eof) => ends.push({ key: `${eof.topic}:${eof.partition}`, offset: eof.offset }));
    reader.assign(
      [...open.values()].map((r) => ({ topic: r.topic, partition: r.partition, offset: r.from })),
      100,
    );
    const deadline = Date.now() + timeoutMs;
    while (open.size > 0 && Date.now() < deadline) {
      for (const message of await reader.consume(100)) {
        const key = `${message.topic}:${message.partition}`;
        const range = open.get(key);
        if (range) settle(key, message.offset < range.end);
      }
      for (const eof of ends.splice(0)) {
        const range = open.get(eof.key);
        if (range && eof.offset >= range.end) settle(eof.key, false);
      }
    }
    return answers;
  } finally {
    await reader.close();
  }
}
