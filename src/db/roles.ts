import { OptionsError } from '../errors.js';
import { quoteRole, quoteSchema } from './identifiers.js';

/**
 * The four least-privilege roles of an outbox schema and what each is granted: the one
 * source of `outbox-relay roles` (and scripts/roles.sql, rendered from it) and of the
 * relay's start-up check of its own privileges. Every grant names why it is needed.
 */

export const ROLE_KINDS = ['writer', 'relay', 'consumer', 'operator'] as const;
export type RoleKind = (typeof ROLE_KINDS)[number];
export type RoleNames = Record<RoleKind, string>;

/**
 * When a grant is part of a role: `always`; `retention`, unless the relay runs without
 * retention; `claim-checks`, with the built-in claim-check store; `dashboard`, for the reads
 * of the relay's dashboard and `/api/status` (the relay runs without them, and warns).
 */
export type GrantNeed = 'always' | 'retention' | 'claim-checks' | 'dashboard';

export type TablePrivilege = 'select' | 'insert' | 'update' | 'delete';

export interface TableGrant {
  table: OutboxTable;
  /** Privileges on the whole table. */
  privileges?: readonly TablePrivilege[];
  /** SELECT on these columns only. */
  select?: readonly string[];
  /** UPDATE of these columns only. */
  update?: readonly string[];
  need?: GrantNeed;
  why: string;
}

export interface FunctionGrant {
  /** Signature within the schema, as `name(argument types)`. */
  fn: OutboxFunction;
  need?: GrantNeed;
  why: string;
}

export interface RoleGrants {
  /** What the role is for, printed above its grants. */
  summary: string;
  tables: readonly TableGrant[];
  functions: readonly FunctionGrant[];
}

/**
 * The tables and functions the migrations make (a test keeps these lists equal to the
 * catalog of a migrated schema). Privileges on them are set by the roles' SQL, not added
 * to: what one of the four roles had on them is revoked first. The partitioned layout's
 * objects are handled apart (see rolesSql), as they exist only once it is chosen.
 */
export const OUTBOX_TABLES = [
  'migrations',
  'messages',
  'outbox_source',
  'claim_checks',
  'relay_groups',
  'relay_shards',
  'relay_members',
  'consumer_offsets',
  'consumer_inbox',
  'dead_letters',
  'operator_actions',
] as const;
export type OutboxTable = (typeof OUTBOX_TABLES)[number];

export const OUTBOX_FUNCTIONS = [
  'notify_messages()',
  'reserved_header_names()',
  'headers_free_of_reserved(jsonb)',
  'refuse_reserved_headers()',
  'refuse_oversized_key()',
] as const;
export type OutboxFunction = (typeof OUTBOX_FUNCTIONS)[number];

/** The relay's columns of `messages`: a relay marks rows, it never rewrites what a writer wrote. */
const RELAY_MARKS = ['state', 'attempts', 'last_error', 'errors', 'next_attempt_at', 'held', 'sent_at', 'kafka_partition', 'kafka_offset'] as const;
/** The operator's columns of `messages`: retry and skip change a row's state, never its content. */
const OPERATOR_REPAIRS = ['state', 'attempts', 'last_error', 'next_attempt_at', 'held'] as const;

export const ROLE_GRANTS: Record<RoleKind, RoleGrants> = {
  writer: {
    summary: 'order services: insert outbox rows in their own transactions (enqueue or a plain INSERT); read nothing back but the new ids',
    tables: [
      { table: 'messages', privileges: ['insert'], select: ['id'], why: 'INSERT ... RETURNING id: enqueue returns the new ids' },
      {
        table: 'claim_checks',
        privileges: ['insert'],
        select: ['id'],
        update: ['message_id'],
        need: 'claim-checks',
        why: "enqueue's built-in claim-check store: a large body is inserted, and linked to its outbox row",
      },
    ],
    functions: [
      { fn: 'headers_free_of_reserved(jsonb)', why: "the insert trigger's check of reserved header names runs as the inserting role" },
      { fn: 'reserved_header_names()', why: 'called by that check' },
    ],
  },
  relay: {
    summary: 'claims and marks rows, holds shard leases, keeps checkpoints, purges sent rows; no DDL, not the owner',
    tables: [
      { table: 'migrations', privileges: ['select'], why: "start-up: the schema's migrations are all applied" },
      { table: 'outbox_source', privileges: ['select'], why: "start-up: this outbox's source id, sent on every record" },
      { table: 'messages', privileges: ['select'], update: RELAY_MARKS, why: 'claims, held rows, marks sent and failed' },
      { table: 'messages', privileges: ['delete'], need: 'retention', why: 'retention deletes sent rows past the retention period' },
      { table: 'claim_checks', select: ['id', 'message_id', 'created_at'], privileges: ['delete'], need: 'retention', why: 'retention deletes the bodies of expired rows' },
      { table: 'relay_groups', privileges: ['select', 'insert', 'update'], why: 'the relay group: registered at first start, activated, taken over' },
      { table: 'relay_shards', privileges: ['select', 'insert', 'update'], why: 'shard leases, fencing tokens and checkpoint cursors' },
      { table: 'relay_members', privileges: ['select', 'insert', 'update', 'delete'], why: 'membership, heartbeats and the idle flag of wake-ups' },
      {
        table: 'consumer_offsets',
        select: ['group_id', 'topic', 'partition', 'next_offset'],
        need: 'dashboard',
        why: "the dashboard's consumer lag",
      },
      {
        table: 'dead_letters',
        select: ['id', 'group_id', 'topic', 'partition', 'offset', 'attempts', 'error', 'failed_at', 'replayed_at', 'replay_requested_at', 'discarded_at', 'discard_reason'],
        need: 'dashboard',
        why: "the dashboard's list of dead letters (never their keys, values or headers)",
      },
    ],
    functions: [],
  },
  consumer: {
    summary: "exactly-once consumers: offsets, the inbox and dead letters; the application's own tables are the application's to grant",
    tables: [
      { table: 'consumer_offsets', privileges: ['select', 'insert', 'update'], why: 'offsets stored with the effects, compare-and-set' },
      { table: 'consumer_inbox', privileges: ['select', 'insert', 'delete'], why: 'de-duplication of re-published events, and its retention' },
      { table: 'dead_letters', privileges: ['select', 'insert', 'update'], why: 'records that failed every attempt, replays' },
      { table: 'claim_checks', select: ['id', 'body'], need: 'claim-checks', why: "the built-in claim-check store's bodies, resolved before the handler" },
    ],
    functions: [],
  },
  operator: {
    summary: 'on-call engineers (the CLI): status, stuck, show; audited retry and skip; dead letters; consumer offsets',
    tables: [
      { table: 'messages', privileges: ['select'], update: OPERATOR_REPAIRS, why: 'status, stuck and show; retry and skip' },
      { table: 'operator_actions', privileges: ['select', 'insert'], why: 'the audit trail of every repair' },
      { table: 'relay_groups', privileges: ['select'], why: 'status: the serving relay group' },
      { table: 'relay_shards', privileges: ['select'], why: 'status: shard owners' },
      { table: 'relay_members', privileges: ['select'], why: 'status: live relays' },
      { table: 'consumer_offsets', privileges: ['select', 'insert', 'update'], why: 'offsets show, set and rewind' },
      { table: 'consumer_inbox', privileges: ['select', 'delete'], why: 'offsets set and rewind forget the inbox rows from the new offset on' },
      { table: 'dead_letters', privileges: ['select'], update: ['replay_requested_at', 'discarded_at', 'discard_reason'], why: 'dead-letters list, show, replay and discard' },
    ],
    functions: [],
  },
};

/** Which optional grants a role set includes. */
export interface RoleOptions {
  /** The relay purges sent rows (its default). Default true. */
  retention?: boolean;
  /** Writers use the built-in claim-check store (enqueue's `claimCheck` with postgresClaimCheckStore). Default false. */
  claimChecks?: boolean;
}

/** Whether a grant of this need is part of a role set with these options. */
export function grantIncluded(need: GrantNeed | undefined, options: RoleOptions): boolean {
  if (need === 'retention') return options.retention ?? true;
  if (need === 'claim-checks') return options.claimChecks ?? false;
  return true;
}

/** `<schema>_writer`, `<schema>_relay`, ... unless named otherwise; validated. */
export function roleNames(schema: string, overrides: Partial<RoleNames> = {}): RoleNames {
  quoteSchema(schema);
  const names = Object.fromEntries(ROLE_KINDS.map((kind) => [kind, overrides[kind] ?? `${schema}_${kind}`])) as RoleNames;
  for (const kind of ROLE_KINDS) quoteRole(names[kind]);
  if (new Set(Object.values(names)).size !== ROLE_KINDS.length) {
    throw new OptionsError(`the four roles need four names, got ${ROLE_KINDS.map((k) => `${k}=${names[k]}`).join(' ')}`);
  }
  return names;
}
