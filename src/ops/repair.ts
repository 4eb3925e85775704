import type pg from 'pg';
import { withTransaction } from '../db/transaction.js';
import { assertKnownTopic } from './inspect.js';
import { OutboxError } from '../errors.js';
import {
  auditSql,
  discardDeadLettersSql,
  lockDeadLettersSql,
  lockDeadRowsSql,
  lockRowsByIdSql,
  requestReplaySql,
  retryRowsSql,
  skipRowsSql,
} from '../sql/outbox-repair.js';

export interface RepairRequest {
  command: 'retry' | 'skip';
  /** Row ids (decimal strings), or: */
  ids: string[];
  /** dead rows matching these (retry only). */
  filter?: { topic: string | null; key: string | null; since: string | null; limit: number } | undefined;
  reason: string;
  actor: string;
  dryRun: boolean;
}

interface Row {
  id: string;
  topic: string;
  key: string | null;
  state: string;
  attempts: number;
}

export interface RepairResult {
  command: 'retry' | 'skip';
  dryRun: boolean;
  changed: number;
  audit: string | null;
  rows: Array<Row & { to: string }>;
}

/**
 * One audited repair, in one transaction (the CLI's `retry`/`skip` and the relay's HTTP
 * routes): the rows are locked, every one must exist and be in a state the command
 * applies to, or nothing changes (NOT_FOUND / INVALID_ARGUMENT); then they change and an
 * `operator_actions` row records who, what, why and how many. A dry run changes nothing.
 */
export async function repairRows(pool: pg.Pool, q: string, request: RepairRequest): Promise<RepairResult> {
  const { command, ids, filter, reason, actor, dryRun } = request;
  return withTransaction(
    pool,
    async (client) => {
      const { rows } = filter
        ? await client.query<Row>(lockDeadRowsSql(q), [filter.topic, filter.key, filter.since, filter.limit])
        : await client.query<Row>(lockRowsByIdSql(q), [ids]);
      if (rows.length === 0 && filter) {
        if (filter.topic) await assertKnownTopic(client, q, filter.topic);
        const asked = [filter.topic && `topic ${JSON.stringify(filter.topic)}`, filter.key !== null && `key ${JSON.stringify(filter.key.slice(0, 200))}`, filter.since && `created since ${filter.since}`].filter(Boolean);
        throw new OutboxError('NOT_FOUND', `no dead row${asked.length > 0 ? ` of ${asked.join(', ')}` : ''}; nothing changed`);
      }
      const found = new Set(rows.map((r) => r.id));
      const missing = ids.filter((id) => !found.has(id));
      if (missing.length > 0) throw new OutboxError('NOT_FOUND', `no outbox row with id ${missing.join(', ')}; nothing changed`);
      const allowed = command === 'retry' ? ['failed', 'dead'] : ['pending', 'failed', 'dead'];
      const refused = rows.filter((r) => !allowed.includes(r.state));
      if (refused.length > 0) {
        throw new OutboxError(
          'INVALID_ARGUMENT',
          `${refused.map((r) => `row ${r.id} is ${r.state}`).join(', ')}: ${command} applies to ${allowed.join(', ')} rows; nothing changed`,
        );
      }
      const changed = rows.map((r) => r.id);
      const to = command === 'retry' ? 'pending' : 'skipped';
      let audit: string | undefined;
      if (!dryRun && changed.length > 0) {
        await client.query(command === 'retry' ? retryRowsSql(q) : skipRowsSql(q), command === 'retry' ? [changed] : [changed, reason]);
        const counts: Record<string, number> = {};
        for (const r of rows) counts[r.state] = (counts[r.state] ?? 0) + 1;
        const { rows: a } = await client.query<{ id: string }>(auditSql(q), [
          actor,
          command,
          changed,
          filter ? JSON.stringify({ state: 'dead', ...filter }) : null,
          reason,
          JSON.stringify({ changed: changed.length, from: counts }),
        ]);
        audit = a[0]?.id;
      }
      return { command, dryRun, changed: changed.length, audit: audit ?? null, rows: rows.map((r) => ({ ...r, to })) };
    },
    // A dry run, or nothing to change: rolled back.
    { commit: (result) => !result.dryRun && result.changed > 0 },
  );
}

export interface DeadLetterRequest {
  action: 'replay' | 'discard';
  group: string;
  ids: string[];
  reason: string;
  actor: string;
  dryRun: boolean;
}

/**
 * Requests replays of, or discards, a consumer group's dead letters, audited, in one
 * transaction: every id must be the group's and still pending, or nothing changes.
 */
export async function requestDeadLetters(pool: pg.Pool, q: string, r: DeadLetterRequest) {
  return withTransaction(
    pool,
    async (client) => {
      const { rows } = await client.query<{ id: string; topic: string; replayed: boolean; discarded: boolean }>(lockDeadLettersSql(q), [r.group, r.ids]);
      const found = new Set(rows.map((row) => row.id));
      const missing = r.ids.filter((id) => !found.has(id));
      if (missing.length > 0) throw new OutboxError('NOT_FOUND', `group ${r.group} has no dead letter ${missing.join(', ')}; nothing changed`);
      const settled = rows.filter((row) => row.replayed || row.discarded);
      if (settled.length > 0) {
        throw new OutboxError('INVALID_ARGUMENT', `${settled.map((row) => `dead letter ${row.id} is ${row.replayed ? 'replayed' : 'discarded'}`).join(', ')}; nothing changed`);
      }
      let audit: string | undefined;
      if (!r.dryRun) {
        await client.query(r.action === 'replay' ? requestReplaySql(q) : discardDeadLettersSql(q), r.action === 'replay' ? [r.group, r.ids] : [r.group, r.ids, r.reason]);
        const { rows: a } = await client.query<{ id: string }>(auditSql(q), [
          r.actor,
          `dead-letters ${r.action}`,
          r.ids,
          JSON.stringify({ group: r.group }),
          r.reason,
          JSON.stringify({ changed: r.ids.length }),
        ]);
        audit = a[0]?.id;
      }
      return { action: r.action, group: r.group, dryRun: r.dryRun, changed: r.ids.length, audit: audit ?? null, ids: r.ids };
    },
    { commit: (result) => !result.dryRun },
  );
}
