import { describe, expect, it } from 'vitest';
import { StallDetector } from '../../src/consumer/stall-detector.js';

describe('consumer watchdog: when a consumer counts as stalled', () => {
  function detector(stallTimeoutMs: number) {
    let now = 0;
    const d = new StallDetector(stallTimeoutMs, () => now);
    return { d, advance: (ms: number) => (now += ms) };
  }
  const at = (entries: [string, number][]) => new Map(entries);

  it('a consumer with lag and no progress past the stall timeout is reported, with the partitions', () => {
    const { d, advance } = detector(10_000);
    expect(d.check(at([['t:0', 5]]), at([['t:0', 9]]))).toBeUndefined();
    advance(10_001);
    expect(d.check(at([['t:0', 5]]), at([['t:0', 9]]))).toMatch(/no progress for 10 s while lag > 0 \(t:0 at 5 of 9\)/);
  });

  it('a caught-up consumer is never reported, however long it idles', () => {
    const { d, advance } = detector(10_000);
    advance(60_000);
    expect(d.check(at([['t:0', 9]]), at([['t:0', 9]]))).toBeUndefined();
  });

  it('moving positions or fetched records count as progress', () => {
    const { d, advance } = detector(10_000);
    d.check(at([['t:0', 5]]), at([['t:0', 50]]));
    advance(9_000);
    expect(d.check(at([['t:0', 6]]), at([['t:0', 50]]))).toBeUndefined();
    advance(9_000);
    d.fetched(['t:0']);
    advance(9_000);
    expect(d.check(at([['t:0', 6]]), at([['t:0', 50]]))).toBeUndefined();
  });

  it('a stalled partition is reported even while another partition of the consumer makes progress', () => {
    const { d, advance } = detector(10_000);
    d.check(at([['t:0', 5], ['t:1', 100]]), at([['t:0', 50], ['t:1', 500]]));
    for (let step = 1; step <= 4; step++) {
      advance(3_000);
      d.progress(['t:1']); // t:1 keeps fetching and committing
      const reason = d.check(at([['t:0', 5], ['t:1', 100 + step * 10]]), at([['t:0', 50], ['t:1', 500]]));
      if (step < 4) expect(reason).toBeUndefined();
      else expect(reason).toMatch(/no progress for 12 s while lag > 0 \(t:0 at 5 of 50\)/);
    }
  });

  it('a partition moved to the start of a recreated log that then fetches nothing is reported after 10 s, by its stored position, though the fetch position hides the lag', () => {
    const { d, advance } = detector(120_000);
    // librdkafka still reports the old log's position (15), beyond the new log's end (6).
    const positions = at([['t:0', 15]]);
    d.replaced('t:0');
    advance(9_000);
    expect(d.check(positions, at([['t:0', 6]]), at([['t:0', 0]]))).toBeUndefined();
    advance(1_000);
    expect(d.check(positions, at([['t:0', 6]]), at([['t:0', 0]]))).toMatch(/no record for 10 s after moving to the start of a recreated topic's log \(t:0 at 0 of 6\)/);
  });

  it('a moved partition whose records arrive, or whose new log is empty, is not reported', () => {
    const { d, advance } = detector(120_000);
    d.replaced('t:0');
    d.replaced('t:1');
    d.fetched(['t:0']);
    advance(30_000);
    expect(d.check(at([['t:0', 3], ['t:1', 0]]), at([['t:0', 3], ['t:1', 0]]), at([['t:0', 3], ['t:1', 0]]))).toBeUndefined();
  });

  it('a rebalance restarts every partition clock', () => {
    const { d, advance } = detector(10_000);
    d.check(at([['t:0', 5]]), at([['t:0', 9]]));
    advance(9_000);
    d.progress();
    advance(9_000);
    expect(d.check(at([['t:0', 5]]), at([['t:0', 9]]))).toBeUndefined();
  });

  it('a stall timeout of 0 turns the watchdog off', () => {
    const { d, advance } = detector(0);
    advance(1_000_000);
    expect(d.check(at([['t:0', 0]]), at([['t:0', 9]]))).toBeUndefined();
  });
});
