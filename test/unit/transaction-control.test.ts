import { describe, expect, it } from 'vitest';
import { transactionControlStatement } from '../../src/consumer/tx-control.js';

describe('transaction control in handler SQL', () => {
  it.each([
    ['commit', 'commit'],
    ['COMMIT;', 'commit'],
    ['  end  ', 'end'],
    ['rollback', 'rollback'],
    ['ROLLBACK WORK', 'rollback'],
    ['rollback prepared \'x\'', 'rollback'],
    ['abort', 'abort'],
    ['begin isolation level serializable', 'begin'],
    ['start transaction', 'start transaction'],
    ['prepare transaction \'t1\'', 'prepare transaction'],
    ['commit prepared \'t1\'', 'commit'],
    ['select 1; commit', 'commit'],
    ['insert into t values (1);\n-- done\nCOMMIT', 'commit'],
    ['/* a /* nested */ comment */ begin', 'begin'],
    ["select 'x'';'; end", 'end'],
    // `$` and non-ASCII letters continue an identifier: `a$$b$` is one, not a dollar quote.
    ['select 1 as a$$b$; commit; select 2 as c$$b$', 'commit'],
    ['select 1 as é$b$; commit; select 2 as x$b$', 'commit'],
    // Dollar-quote tags may hold non-ASCII letters.
    ["select $é$ ' $é$; commit; select 'a'", 'commit'],
  ])('%j is refused as %s', (sql, refused) => {
    expect(transactionControlStatement(sql)).toBe(refused);
  });

  it.each([
    'select 1',
    'savepoint a',
    'release savepoint a',
    'rollback to savepoint a',
    'ROLLBACK TRANSACTION TO a',
    "insert into notes values ('commit; rollback')",
    "insert into notes values (E'it\\'s; commit')",
    'select $$ ; commit $$',
    'select $body$ begin; end $body$',
    'update t set a = $1 where b = $2',
    'select "commit" from t; select 1',
    '-- commit\nselect 1',
    '/* begin */ select 1',
    'prepare q as select 1',
    "do $$ begin perform 1; end $$",
    'with x as (select 1) select * from x',
    'select * from ending',
  ])('%j is allowed', (sql) => {
    expect(transactionControlStatement(sql)).toBeUndefined();
  });
});

describe('transaction control with standard_conforming_strings off', () => {
  it("a backslash escapes a quote in '…' then, so a COMMIT after it is seen", () => {
    const sql = "select 'x\\' $$ '; commit; select $$ $$";
    expect(transactionControlStatement(sql, { backslashEscapes: true })).toBe('commit');
  });
});
