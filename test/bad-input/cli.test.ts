/**
 * The bad-input corpus (test/bad-input/), CLI flags: what this entry point must refuse, each
 * case checking (a) the refusal is typed (an OutboxError code, a SQLSTATE and constraint, a
 * CLI exit code 2 with its message, an HTTP status with a JSON error) or the row/record is
 * parked with its reason, and (b) nothing is lost: the refused write changed nothing, and
 * good input through the same entry point still flows, end to end.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { cli } from '../support/cli.js';
import { freshSchema } from '../support/db.js';
import { freshTopic } from '../support/kafka.js';
import { startRelay, waitAllSent, withRelay } from '../support/relay.js';
import { useTestServices } from '../support/services.js';
import { badInputChecks, type RepairFixture as Fixture } from '../support/bad-input.js';

const services = useTestServices({ poolSize: 8 });
const { pool, admin } = services;
const { snapshot, repairFixture, expectRepairedInOrder } = badInputChecks(services);

// ---------------------------------------------------------------------------------------
// CLI
// ---------------------------------------------------------------------------------------

interface CliCase {
  name: string;
  args: (f: Fixture) => string[];
  stderr: RegExp;
  /** Append --schema <schema> (default true). */
  schema?: boolean;
}

const CLI_CASES: CliCase[] = [
  { name: 'retry of a non-numeric id', args: () => ['retry', 'abc', '--reason', 'r'], stderr: /row id "abc" is not a positive decimal id/ },
  { name: 'retry of a negative id', args: () => ['retry', '--reason', 'r', '--', '-5'], stderr: /row id "-5" is not a positive decimal id/ },
  { name: 'retry of an id beyond bigint', args: () => ['retry', '9223372036854775808', '--reason', 'r'], stderr: /not a positive decimal id/ },
  { name: 'retry of an id that does not exist', args: () => ['retry', '424242424', '--reason', 'r'], stderr: /no outbox row with id 424242424; nothing changed \[NOT_FOUND\]/ },
  { name: 'retry of a dead row together with a sent one', args: (f) => ['retry', f.dead, f.sent, '--reason', 'r'], stderr: /row \d+ is sent: retry applies to failed, dead rows; nothing changed/ },
  { name: 'retry without --reason', args: (f) => ['retry', f.dead], stderr: /--reason is required/ },
  { name: 'retry with an empty --reason', args: (f) => ['retry', f.dead, '--reason', ''], stderr: /--reason must be 1-2000 characters/ },
  { name: 'retry --dead --since a day that does not exist (30 February)', args: () => ['retry', '--dead', '--since', '2026-02-30T10:00:00Z', '--reason', 'r'], stderr: /--since must be an ISO time/ },
  { name: 'retry --dead --limit in exponent notation', args: () => ['retry', '--dead', '--limit', '1e3', '--reason', 'r'], stderr: /--limit must be an integer, got "1e3"/ },
  { name: 'retry --dead of a topic no row has', args: () => ['retry', '--dead', '--topic', 'no-such-topic', '--reason', 'r'], stderr: /no outbox row has topic "no-such-topic"/ },
  { name: 'an unknown flag', args: (f) => ['retry', f.dead, '--reason', 'r', '--force'], stderr: /Unknown option '--force'/ },
  { name: 'an unknown command', args: () => ['frobnicate'], stderr: /unknown command "frobnicate"/ },
  { name: 'a --schema with SQL in it', args: () => ['stuck', '--schema', 'outbox; drop table x'], schema: false, stderr: /use lower-case letters, digits and _ \[INVALID_OPTIONS\]/ },
  { name: 'stuck --older-than with an unknown unit', args: () => ['stuck', '--older-than', '5x'], stderr: /--older-than must be a duration such as 30s/ },
  { name: 'stuck --older-than beyond ten years', args: () => ['stuck', '--older-than', '99999d'], stderr: /--older-than must be at most 3650d/ },
  { name: 'show of an id that does not exist', args: () => ['show', '424242424'], stderr: /no outbox row with id 424242424 \[NOT_FOUND\]/ },
  { name: 'offsets set to a negative offset', args: (f) => ['offsets', 'set', '--group', 'ledger', '--topic', f.topic, '--partition', '0', '--offset=-1', '--reason', 'r'], stderr: /--offset must be >= 0, got -1/ },
  { name: 'offsets set of an unknown group', args: (f) => ['offsets', 'set', '--group', 'no-such-group', '--topic', f.topic, '--partition', '0', '--offset', '0', '--reason', 'r'], stderr: /consumer group "no-such-group" has no stored offsets/ },
  { name: 'offsets set on a topic that does not exist', args: () => ['offsets', 'set', '--group', 'ledger', '--topic', 'no-such-topic-bad-input', '--partition', '0', '--offset', '0', '--reason', 'r'], stderr: /topic no-such-topic-bad-input does not exist/ },
  { name: 'offsets set beyond the end of the partition', args: (f) => ['offsets', 'set', '--group', 'ledger', '--topic', f.topic, '--partition', '0', '--offset', '99999999999', '--reason', 'r'], stderr: /offset 99999999999 is beyond the end/ },
  { name: 'offsets rewind to a time in the future', args: (f) => ['offsets', 'rewind', '--group', 'ledger', '--topic', f.topic, '--to-time', '2999-01-01T00:00:00Z', '--reason', 'r'], stderr: /is in the future/ },
  { name: 'offsets set without --reason', args: (f) => ['offsets', 'set', '--group', 'ledger', '--topic', f.topic, '--partition', '0', '--offset', '0'], stderr: /--reason is required/ },
  { name: 'offsets show of an unknown group', args: () => ['offsets', 'show', '--group', 'no-such-group'], stderr: /consumer group "no-such-group" has no stored offsets/ },
  { name: 'offsets show of a topic the group has no offsets of', args: () => ['offsets', 'show', '--group', 'ledger', '--topic', 'no-such-topic'], stderr: /consumer group "ledger" has no stored offsets for topic "no-such-topic"/ },
  { name: 'stuck of a topic no row has', args: () => ['stuck', '--older-than', '1s', '--topic', 'no-such-topic'], stderr: /no outbox row has topic "no-such-topic"/ },
  { name: 'dead-letters list of an unknown group', args: () => ['dead-letters', 'list', '--group', 'no-such-group'], stderr: /no consumer group "no-such-group" here/ },
  { name: 'dead-letters list of a topic the group has nothing of', args: () => ['dead-letters', 'list', '--group', 'ledger', '--topic', 'no-such-topic'], stderr: /consumer group "ledger" has no offsets and no dead letters of topic "no-such-topic"/ },
  { name: 'dead-letters replay without --reason', args: (f) => ['dead-letters', 'replay', f.letter, '--group', 'ledger'], stderr: /--reason is required/ },
  { name: 'dead-letters discard for an unknown group', args: (f) => ['dead-letters', 'discard', f.letter, '--group', 'no-such-group', '--reason', 'r'], stderr: /no consumer group "no-such-group" here/ },
  { name: 'relay with a shard count above its bound', args: () => ['relay', '--shards', '5000'], stderr: /shards must be an integer in 1\.\.1024, got 5000 \[INVALID_OPTIONS\]/ },
  // Filters are bound parameters: SQL in them is a key or topic no row has, refused, and nothing is changed or audited.
  { name: 'retry --dead --key with SQL in it', args: () => ['retry', '--dead', '--key', "x'; drop table messages; --", '--reason', 'r', '--json'], stderr: /no dead row of key "x'; drop table messages; --"; nothing changed \[NOT_FOUND\]/ },
  { name: 'retry --dead --topic with SQL in it', args: () => ['retry', '--dead', '--topic', "t' or 1=1 --", '--reason', 'r'], stderr: /no outbox row has topic "t' or 1=1 --"/ },
  { name: 'stuck --key with SQL in it', args: () => ['stuck', '--older-than', '1s', '--key', "a' or '1'='1", '--json'], stderr: /no unsent row has key "a' or '1'='1"/ },
  { name: 'stuck --topic with SQL in it', args: () => ['stuck', '--topic', 'x"; select pg_sleep(10); --'], stderr: /no outbox row has topic "x\\"; select pg_sleep\(10\); --"/ },
  { name: 'dead-letters list --group with SQL in it', args: () => ['dead-letters', 'list', '--group', "ledger' or '1'='1"], stderr: /no consumer group "ledger' or '1'='1" here/ },
  { name: 'offsets show --group with SQL in it', args: () => ['offsets', 'show', '--group', 'ledger; delete from consumer_offsets'], stderr: /consumer group "ledger; delete from consumer_offsets" has no stored offsets/ },
];

describe('the CLI: bad input exits 2 with a message and changes nothing', () => {
  let schema: string;
  let f: Fixture;
  let before: Awaited<ReturnType<typeof snapshot>>;
  beforeAll(async () => {
    schema = await freshSchema(pool);
    f = await repairFixture(schema, await freshTopic(admin, 1));
    before = await snapshot(schema);
  });

  it.concurrent.for(CLI_CASES)('outbox-relay refuses $name', async (c, { expect }) => {
    const args = [...c.args(f), ...(c.schema === false ? [] : ['--schema', schema])];
    const result = await cli(...args);
    expect({ args, code: result.code }).toEqual({ args, code: 2 });
    expect(result.stderr).toMatch(/^outbox-relay [a-z-]+: .+|^unknown command/);
    expect(result.stderr).toMatch(c.stderr);
    expect(await snapshot(schema)).toEqual(before);
  });

  it('after the refusals, a retry with a reason is audited and the relay publishes the row, then the row held behind it', async () => {
    expect(await snapshot(schema)).toEqual(before);
    // The operator creates the topic the row was for (here: points it at one that exists).
    await pool.query(`update ${schema}.messages set topic = $2 where id = $1`, [f.dead, f.topic]);
    const retried = await cli('retry', f.dead, '--reason', 'topic created', '--actor', 'oncall', '--schema', schema);
    expect(retried.code).toBe(0);
    const discarded = await cli('dead-letters', 'discard', f.letter, '--group', 'ledger', '--reason', 'duplicate', '--schema', schema);
    expect(discarded.code).toBe(0);
    await withRelay(startRelay(schema, { shards: 1 }), async () => {
      await waitAllSent(pool, schema, 30_000);
    });
    await expectRepairedInOrder(f.topic, f);
    const { rows } = await pool.query(`select actor, command, row_ids::text[] as ids from ${schema}.operator_actions order by id`);
    expect(rows).toMatchObject([{ actor: 'oncall', command: 'retry', ids: [f.dead] }, { command: 'dead-letters discard', ids: [f.letter] }]);
  });
});
