import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { InstanceBindings } from '@apm-sidecar/sidecar';

const h = (s: string) => InstanceBindings.hash(s);

describe('InstanceBindings', () => {
  test('an instance id is bound to the first secret; another secret is a mismatch', () => {
    const b = new InstanceBindings(() => false);
    assert.equal(b.check('i', h('s1')), 'new');
    b.bind('i', h('s1'));
    assert.equal(b.check('i', h('s1')), 'match');
    assert.equal(b.check('i', h('s2')), 'mismatch');
  });

  test('a reserved id matches no secret', () => {
    const b = new InstanceBindings(() => false);
    b.reserve('dogstatsd');
    assert.equal(b.check('dogstatsd', h('')), 'mismatch');
    assert.equal(b.check('dogstatsd', Buffer.alloc(0)), 'mismatch');
  });

  test('past its bound it forgets the least recently used binding, never a live or reserved one', () => {
    const live = new Set(['a']);
    const b = new InstanceBindings((id) => live.has(id), 3);
    b.reserve('r');
    b.bind('a', h('a'));
    b.bind('b', h('b'));
    b.bind('c', h('c'));
    assert.equal(b.size, 3);
    assert.equal(b.check('r', h('x')), 'mismatch', 'reserved kept');
    assert.equal(b.check('a', h('a')), 'match', 'live kept');
    assert.equal(b.check('b', h('b')), 'new', 'the oldest idle binding went');
    assert.equal(b.check('c', h('c')), 'match');
  });
});
