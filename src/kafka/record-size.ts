/**
 * The one size rule for a record, shared by `enqueue` (which refuses what the relay would
 * refuse) and the relay (which refuses before producing what the producer would).
 *
 * The producer refuses a record whose largest encoded size exceeds its
 * `message.max.bytes`: the record framing at its largest (length, attributes, timestamp
 * and offset deltas, key and value lengths, header count: 36 bytes) plus key, value and
 * the headers as written (each name and value with its varint length).
 */
export const RECORD_OVERHEAD_BYTES = 36;

/** librdkafka's default `message.max.bytes`, and so the default limit. */
export const DEFAULT_MAX_RECORD_BYTES = 1_000_000;

/** Bytes of a zig-zag varint holding `n` (Kafka's record encoding). */
function varintBytes(n: number): number {
  let v = n * 2;
  let bytes = 1;
  while (v >= 0x80) {
    v = Math.floor(v / 0x80);
    bytes += 1;
  }
  return bytes;
}

function bytesOf(value: string | Buffer | Uint8Array): number {
  return typeof value === 'string' ? Buffer.byteLength(value) : value.byteLength;
}

/** One header as the size rule sees it. */
export type SizedHeader = readonly [name: string, value: string | Buffer | Uint8Array];

/** The size of a record as the producer checks it against `message.max.bytes`. */
export function recordBytes(key: string | Buffer | null, value: Buffer | Uint8Array | null, headers: Iterable<SizedHeader>): number {
  let size = RECORD_OVERHEAD_BYTES + (key === null ? 0 : bytesOf(key)) + (value === null ? 0 : value.byteLength);
  for (const [name, v] of headers) {
    const n = bytesOf(name);
    const l = bytesOf(v);
    size += varintBytes(n) + n + varintBytes(l) + l;
  }
  return size;
}

/** Why a record of `bytes` can never be published under `limit`, in words for `last_error` and errors. */
export function tooLargeMessage(bytes: number, limit: number): string {
  return (
    `record of ${bytes} bytes (key, value and headers, relay headers included) exceeds the limit of ${limit} bytes ` +
    `(producer message.max.bytes); it can never be published as it is: store the body elsewhere and send a reference ` +
    `(claimCheck), or raise message.max.bytes on the producer and max.message.bytes on the topic`
  );
}
