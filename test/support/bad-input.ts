import { expect } from 'vitest';
import { HEADER } from '../../src/outbox/event.js';
import { headerValue, readTopic } from './kafka.js';
import { expectExactlyOnce } from './relay.js';
import type { TestServices } from './services.js';
import { uniqueName } from './wait.js';

/**
 * What the bad-input corpus (test/bad-input/) checks around each refusal: counts, a snapshot
 * of what a refused operation must leave as it was, and a repair fixture with its check.
 */
export function badInputChecks({ pool, connection }: TestServices) {
    async function count(sql: string, values: unknown[] = []): Promise<number> {
    return (await pool.query<{ n: number }>(`select count(*)::int as n from ${sql}`, values)).rows[0]!.n;
  }
  
  /** What a refused operation must leave as it was: rows' states, offsets, dead letters, the audit trail. */
  async function snapshot(schema: string) {
    const rows = async (sql: string) => (await pool.query(sql)).rows;
    return {
      messages: await rows(`select id::text, topic, state, attempts, last_error, next_attempt_at from ${schema}.messages order by id`),
      offsets: await rows(`select group_id, topic, partition, next_offset::text from ${schema}.consumer_offsets order by 1, 2, 3`),
      deadLetters: await rows(`select id::text, replay_requested_at, discarded_at, replayed_at from ${schema}.dead_letters order by id`),
      audit: await count(`${schema}.operator_actions`),
    };
  }
  
  /** A dead row whose topic was missing, a row of its key held behind it, a sent row; a consumer group with an offset and a dead letter. */
  async function repairFixture(schema: string, topic: string) {
    const insert = async (sql: string, values: unknown[]) => (await pool.query(`${sql} returning id::text`, values)).rows[0].id as string;
    const gone = uniqueName('gone').replaceAll('_', '-');
    const dead = await insert(
      `insert into ${schema}.messages (topic, key, payload, state, attempts, last_error, created_at) values ($1, 'a', 'first of a', 'dead', 2, 'unknown topic', now() - interval '1 hour')`,
      [gone],
    );
    const behind = await insert(`insert into ${schema}.messages (topic, key, payload) values ($1, 'a', 'second of a')`, [topic]);
    const sent = await insert(`insert into ${schema}.messages (topic, key, payload, state, attempts, sent_at) values ($1, 's', 'sent', 'sent', 1, now())`, [topic]);
    await pool.query(`insert into ${schema}.consumer_offsets (group_id, topic, partition, next_offset) values ('ledger', $1, 0, 0)`, [topic]);
    const letter = await insert(`insert into ${schema}.dead_letters (group_id, topic, partition, "offset", error, attempts) values ('ledger', $1, 0, 0, 'boom', 3)`, [topic]);
    return { dead, behind, sent, letter, topic };
  }
  
  /** Reads the topic back and checks the repaired dead row went first, then the row held behind it: exactly once each. */
  async function expectRepairedInOrder(topic: string, f: RepairFixture): Promise<void> {
    const read = await readTopic(connection, topic, 1, { expected: 2 });
    expectExactlyOnce(read, [f.dead, f.behind]);
    expect(read.map((m) => headerValue(m, HEADER.outboxId))).toEqual([f.dead, f.behind]);
  }
  return { count, snapshot, repairFixture, expectRepairedInOrder };
}

export type RepairFixture = Awaited<ReturnType<ReturnType<typeof badInputChecks>['repairFixture']>>;
