import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  CORRELATION_HEADER,
  TRACEPARENT_HEADER,
  formatCorrelation,
  formatTraceparent,
  parseCorrelation,
  parseTraceparent,
  readHeader,
} from '@apm-sidecar/proto';

const TRACE_ID = '4bf92f3577b34da6a3ce929d0e0e4736';
const PARENT_ID = '00f067aa0ba902b7';

describe('correlation headers', () => {
  it('uses the lower-case header names apm-correlation and traceparent', () => {
    assert.equal(CORRELATION_HEADER, 'apm-correlation');
    assert.equal(TRACEPARENT_HEADER, 'traceparent');
  });

  describe('parseCorrelation / formatCorrelation', () => {
    it('parses k=v pairs separated by semicolons, in order', () => {
      const m = parseCorrelation('txid=4bf92f3577b34da6;notxdetect=true');
      assert.deepStrictEqual(
        [...m],
        [
          ['txid', '4bf92f3577b34da6'],
          ['notxdetect', 'true'],
        ],
      );
    });

    it('returns an empty map for a missing or empty header', () => {
      assert.equal(parseCorrelation(undefined).size, 0);
      assert.equal(parseCorrelation('').size, 0);
      assert.equal(parseCorrelation(';;;').size, 0);
    });

    it('trims spaces around keys and values and keeps "=" inside a value', () => {
      const m = parseCorrelation(' txid = abc ; url=/a?b=c ;x=');
      assert.deepStrictEqual(
        [...m],
        [
          ['txid', 'abc'],
          ['url', '/a?b=c'],
          ['x', ''],
        ],
      );
    });

    it('skips parts with no key or no "="', () => {
      const m = parseCorrelation('=v;novalue;  =x;k=v');
      assert.deepStrictEqual([...m], [['k', 'v']]);
    });

    it('keeps the last value of a repeated key', () => {
      assert.equal(parseCorrelation('a=1;a=2').get('a'), '2');
    });

    it('keeps at most 32 keys', () => {
      const header = Array.from({ length: 100 }, (_, i) => `k${i}=${i}`).join(';');
      const m = parseCorrelation(header);
      assert.equal(m.size, 32);
      assert.equal(m.get('k0'), '0');
      assert.equal(m.get('k31'), '31');
      assert.equal(m.has('k32'), false);
    });

    it('formats pairs as k=v joined by semicolons, and parsing the result gives the pairs back', () => {
      const pairs = new Map([
        ['txid', '4bf92f3577b34da6'],
        ['notxdetect', 'true'],
        ['caller', 'svc-a'],
      ]);
      const s = formatCorrelation(pairs);
      assert.equal(s, 'txid=4bf92f3577b34da6;notxdetect=true;caller=svc-a');
      assert.deepStrictEqual(parseCorrelation(s), pairs);
      assert.equal(formatCorrelation(new Map()), '');
      assert.equal(formatCorrelation(new Map([['a', '1']])), 'a=1');
    });
  });

  describe('parseTraceparent', () => {
    it('parses a version 00 header into trace id, parent id and flags', () => {
      assert.deepStrictEqual(parseTraceparent(`00-${TRACE_ID}-${PARENT_ID}-01`), { traceId: TRACE_ID, parentId: PARENT_ID, flags: '01' });
      assert.deepStrictEqual(parseTraceparent(`00-${TRACE_ID}-${PARENT_ID}-00`), { traceId: TRACE_ID, parentId: PARENT_ID, flags: '00' });
    });

    it('accepts surrounding whitespace', () => {
      assert.deepStrictEqual(parseTraceparent(`  00-${TRACE_ID}-${PARENT_ID}-01\t`), { traceId: TRACE_ID, parentId: PARENT_ID, flags: '01' });
    });

    it('accepts a future version with extra fields, but not version 00 with extra fields', () => {
      assert.deepStrictEqual(parseTraceparent(`01-${TRACE_ID}-${PARENT_ID}-01-future`), { traceId: TRACE_ID, parentId: PARENT_ID, flags: '01' });
      assert.equal(parseTraceparent(`00-${TRACE_ID}-${PARENT_ID}-01-future`), undefined);
    });

    it('round-trips what formatTraceparent writes', () => {
      assert.deepStrictEqual(parseTraceparent(formatTraceparent(TRACE_ID, PARENT_ID)), { traceId: TRACE_ID, parentId: PARENT_ID, flags: '01' });
      assert.deepStrictEqual(parseTraceparent(formatTraceparent(TRACE_ID, PARENT_ID, false)), { traceId: TRACE_ID, parentId: PARENT_ID, flags: '00' });
    });

    const invalid: [string, string | undefined][] = [
      ['a missing header', undefined],
      ['an empty string', ''],
      ['an all-zero trace id', `00-${'0'.repeat(32)}-${PARENT_ID}-01`],
      ['an all-zero parent id', `00-${TRACE_ID}-${'0'.repeat(16)}-01`],
      ['version ff', `ff-${TRACE_ID}-${PARENT_ID}-01`],
      ['a short trace id', `00-${TRACE_ID.slice(1)}-${PARENT_ID}-01`],
      ['a long trace id', `00-${TRACE_ID}0-${PARENT_ID}-01`],
      ['a short parent id', `00-${TRACE_ID}-${PARENT_ID.slice(1)}-01`],
      ['a long parent id', `00-${TRACE_ID}-${PARENT_ID}0-01`],
      ['a one-digit version', `0-${TRACE_ID}-${PARENT_ID}-01`],
      ['three-digit flags', `00-${TRACE_ID}-${PARENT_ID}-001`],
      ['upper-case hex in the trace id', `00-${TRACE_ID.toUpperCase()}-${PARENT_ID}-01`],
      ['upper-case hex in the parent id', `00-${TRACE_ID}-00F067AA0BA902B7-01`],
      ['upper-case hex in the flags', `00-${TRACE_ID}-${PARENT_ID}-0A`],
      ['upper-case hex in the version', `0A-${TRACE_ID}-${PARENT_ID}-01`],
      ['non-hex characters', `00-${TRACE_ID.slice(0, 31)}g-${PARENT_ID}-01`],
      ['underscores instead of dashes', `00_${TRACE_ID}_${PARENT_ID}_01`],
      ['missing flags', `00-${TRACE_ID}-${PARENT_ID}`],
      ['garbage', 'not a traceparent'],
    ];
    for (const [what, value] of invalid) {
      it(`rejects ${what}`, () => {
        assert.equal(parseTraceparent(value), undefined);
      });
    }
  });

  describe('readHeader', () => {
    it('reads a string value from a plain (IncomingHttpHeaders-like) object', () => {
      assert.equal(readHeader({ traceparent: 'x', other: 'y' }, 'traceparent'), 'x');
      assert.equal(readHeader({ other: 'y' }, 'traceparent'), undefined);
      assert.equal(readHeader({ traceparent: undefined }, 'traceparent'), undefined);
    });

    it('takes the first element of an array value', () => {
      assert.equal(readHeader({ 'apm-correlation': ['a=1', 'b=2'] }, 'apm-correlation'), 'a=1');
      assert.equal(readHeader({ 'apm-correlation': [] }, 'apm-correlation'), undefined);
    });

    it('reads from a fetch Headers object, whatever the case of the name it was set with', () => {
      const h = new Headers({ TraceParent: `00-${TRACE_ID}-${PARENT_ID}-01`, 'APM-Correlation': 'txid=1' });
      assert.equal(readHeader(h, 'traceparent'), `00-${TRACE_ID}-${PARENT_ID}-01`);
      assert.equal(readHeader(h, 'apm-correlation'), 'txid=1');
      assert.equal(readHeader(h, 'missing'), undefined);
    });

    it('joins repeated fetch Headers values as fetch does', () => {
      const h = new Headers();
      h.append('apm-correlation', 'a=1');
      h.append('apm-correlation', 'b=2');
      assert.equal(readHeader(h, 'apm-correlation'), 'a=1, b=2');
    });

    it('ignores values that are not strings, and headers that are not objects', () => {
      assert.equal(readHeader({ traceparent: 5 }, 'traceparent'), undefined);
      assert.equal(readHeader({ traceparent: [5] }, 'traceparent'), undefined);
      assert.equal(readHeader(null, 'traceparent'), undefined);
      assert.equal(readHeader(undefined, 'traceparent'), undefined);
      assert.equal(readHeader('traceparent: x', 'traceparent'), undefined);
      assert.equal(readHeader(42, 'traceparent'), undefined);
    });

    it('ignores a value longer than 4096 characters', () => {
      assert.equal(readHeader({ 'apm-correlation': 'a'.repeat(4096) }, 'apm-correlation'), 'a'.repeat(4096));
      assert.equal(readHeader({ 'apm-correlation': 'a'.repeat(4097) }, 'apm-correlation'), undefined);
      assert.equal(readHeader(new Headers({ 'apm-correlation': 'a'.repeat(5000) }), 'apm-correlation'), undefined);
    });

    it('feeds parseCorrelation and parseTraceparent end to end', () => {
      const headers = { 'apm-correlation': 'txid=abc;notxdetect=true', traceparent: `00-${TRACE_ID}-${PARENT_ID}-01` };
      assert.equal(parseCorrelation(readHeader(headers, CORRELATION_HEADER)).get('notxdetect'), 'true');
      assert.equal(parseTraceparent(readHeader(headers, TRACEPARENT_HEADER))?.traceId, TRACE_ID);
    });
  });
});
