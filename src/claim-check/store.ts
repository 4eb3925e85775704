import { createHash } from 'node:crypto';
import type pg from 'pg';
import { DEFAULT_SCHEMA, quoteSchema } from '../db/identifiers.js';
import { toQueryable } from '../db/queryable.js';
import { insertClaimCheckSql, linkClaimCheckSql, readClaimCheckSql } from '../sql/claim-checks.js';
import { OutboxError, ValidationError } from '../errors.js';

/**
 * Header naming the store that holds a record's body; the record's value is then a
 * {@link ClaimCheckReference} as JSON. Set by `enqueue`, never by a row's own headers.
 */
export const CLAIM_CHECK_HEADER = 'outbox-claim-check';

/** What a record carries in place of a body stored out of band. */
export interface ClaimCheckReference {
  v: 1;
  /** The store's name ({@link ClaimCheckStore.name}). */
  store: string;
  /** The body's id in that store. */
  id: string;
  /** The body's size in bytes. */
  size: number;
  /** Hex SHA-256 of the body: a consumer refuses a body that does not match. */
  sha256: string;
}

/**
 * Where large bodies go. The PostgreSQL table of the outbox schema is built in
 * ({@link postgresClaimCheckStore}); any other store (an S3-compatible bucket, …) plugs in
 * by implementing this.
 */
export interface ClaimCheckStore {
  /** Recorded in every reference; a consumer picks the store to read from by it. */
  readonly name: string;
  /**
   * Stores a body and returns its id. `db` is the writer's transaction (what `enqueue` was
   * given): a store in the same database writes there, so a rollback takes the body too;
   * an external store ignores it (a rolled-back writer leaves an unreferenced object).
   */
  put(db: unknown, body: Buffer, meta: { size: number; sha256: string; topic: string }): Promise<string>;
  /** The body of `id`, or `null` when the store has none. */
  get(id: string): Promise<Buffer | null>;
  /**
   * Optional: told the outbox row id that carries the reference, in the same transaction
   * (the built-in store keeps a body while its row is unsent).
   */
  link?(db: unknown, id: string, messageId: string): Promise<void>;
}

export interface ClaimCheckOptions {
  store: ClaimCheckStore;
  /** Payloads larger than this many bytes are stored out of band. Default 256 KiB. */
  thresholdBytes?: number;
  /** Largest body accepted. Default 256 MiB (a PostgreSQL value holds at most 1 GiB). */
  maxBodyBytes?: number;
}

export const CLAIM_CHECK_DEFAULTS = { thresholdBytes: 256 * 1024, maxBodyBytes: 256 * 1024 * 1024 } as const;

export function sha256Hex(body: Buffer): string {
  return createHash('sha256').update(body).digest('hex');
}

/** The built-in store: table `claim_checks` of the outbox schema (migration 0008). */
export function postgresClaimCheckStore(options: {
  /** Schema holding `claim_checks`. Default `outbox`. */
  schema?: string;
  /** Where `get` reads from (a consumer's pool on the outbox database). Writes use the writer's transaction. */
  pool?: pg.Pool;
} = {}): ClaimCheckStore {
  const q = quoteSchema(options.schema ?? DEFAULT_SCHEMA);
  return {
    name: 'postgres',
    async put(db, body, meta) {
      const { rows } = await toQueryable(db).query<{ id: string }>(
        insertClaimCheckSql(q),
        [body, meta.size, meta.sha256],
      );
      return rows[0]!.id;
    },
    async link(db, id, messageId) {
      await toQueryable(db).query(linkClaimCheckSql(q), [id, messageId]);
    },
    async get(id) {
      if (!options.pool) throw new OutboxError('INVALID_OPTIONS', 'postgresClaimCheckStore needs a pool to read bodies: pass { pool }');
      // Not a uuid: no body of that id can exist (and the cast would fail the query).
      if (!/^[0-9a-f-]{36}$/i.test(id)) return null;
      const { rows } = await options.pool.query<{ body: Buffer }>(readClaimCheckSql(q), [id]);
      return rows[0]?.body ?? null;
    },
  };
}

export function resolveClaimCheckOptions(options: ClaimCheckOptions | undefined): Required<ClaimCheckOptions> | undefined {
  if (options === undefined) return undefined;
  const store = options.store;
  if (!store || typeof store.put !== 'function' || typeof store.get !== 'function' || typeof store.name !== 'string' || !/^[A-Za-z0-9._-]{1,64}$/.test(store.name)) {
    throw new ValidationError('claimCheck.store', 'must be a ClaimCheckStore: { name (1-64 of A-Z a-z 0-9 . _ -), put, get }');
  }
  const thresholdBytes = options.thresholdBytes ?? CLAIM_CHECK_DEFAULTS.thresholdBytes;
  const maxBodyBytes = options.maxBodyBytes ?? CLAIM_CHECK_DEFAULTS.maxBodyBytes;
  if (!Number.isInteger(thresholdBytes) || thresholdBytes < 1) throw new ValidationError('claimCheck.thresholdBytes', 'must be a positive integer');
  if (!Number.isInteger(maxBodyBytes) || maxBodyBytes < thresholdBytes || maxBodyBytes > 1_000_000_000) {
    throw new ValidationError('claimCheck.maxBodyBytes', `must be an integer in ${thresholdBytes}..1000000000`);
  }
  return { store, thresholdBytes, maxBodyBytes };
}

/** The reference a record carries, as its value. */
export function encodeReference(reference: ClaimCheckReference): Buffer {
  return Buffer.from(JSON.stringify(reference));
}

/** Parses a record's value as a reference; throws a typed error when it is not one. */
export function decodeReference(value: Buffer | null): ClaimCheckReference {
  let parsed: Partial<ClaimCheckReference> | null = null;
  try {
    parsed = JSON.parse(value?.toString('utf8') ?? 'null') as Partial<ClaimCheckReference> | null;
  } catch {
    parsed = null;
  }
  if (
    !parsed ||
    parsed.v !== 1 ||
    typeof parsed.store !== 'string' ||
    typeof parsed.id !== 'string' ||
    !Number.isSafeInteger(parsed.size) ||
    typeof parsed.sha256 !== 'string' ||
    !/^[0-9a-f]{64}$/.test(parsed.sha256)
  ) {
    throw new OutboxError('CLAIM_CHECK_INVALID', 'record has a claim-check header but its value is not a claim-check reference');
  }
  return parsed as ClaimCheckReference;
}

/** Fetches and verifies a referenced body. Throws CLAIM_CHECK_INVALID when it is missing or does not match. */
export async function fetchBody(stores: ReadonlyMap<string, ClaimCheckStore>, reference: ClaimCheckReference): Promise<Buffer> {
  const store = stores.get(reference.store);
  if (!store) {
    throw new OutboxError('CLAIM_CHECK_INVALID', `record's body is in claim-check store ${JSON.stringify(reference.store)}, which this consumer was not given (claimCheck)`);
  }
  const body = await store.get(reference.id);
  if (body === null) throw new OutboxError('CLAIM_CHECK_INVALID', `claim-check body ${reference.id} is not in store ${reference.store} (deleted by retention?)`);
  if (body.length !== reference.size || sha256Hex(body) !== reference.sha256) {
    throw new OutboxError(
      'CLAIM_CHECK_INVALID',
      `claim-check body ${reference.id} does not match its reference (size ${body.length}, expected ${reference.size}; sha256 mismatch): refused`,
    );
  }
  return body;
}
