import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { join, relative } from 'node:path';
import { describe, test } from 'node:test';
import { SIDECAR_STATES, type SidecarState } from '@apm-sidecar/proto';
import { type LinkEvent, transition } from '@apm-sidecar/sidecar';

const EVENTS: Record<LinkEvent['type'], LinkEvent> = {
  'session-active': { type: 'session-active', cause: 'connected' },
  'session-lost': { type: 'session-lost', cause: 'connection closed by the collector' },
  'attempt-failed': { type: 'attempt-failed', failed: 3, muteAfterAttempts: 3, cause: 'ECONNREFUSED' },
  'standby-timer': { type: 'standby-timer', standbyAfterMs: 60000 },
  'schedule-exhausted': { type: 'schedule-exhausted', attempts: 3, cause: 'ECONNREFUSED' },
  'operator-reconnect': { type: 'operator-reconnect', everActive: true },
};

const ORDER = ['session-active', 'session-lost', 'attempt-failed', 'standby-timer', 'schedule-exhausted', 'operator-reconnect'] as const;

/** The whole machine: state × event (in ORDER) → next state ('·' = unchanged). */
const EXPECTED: Record<SidecarState, (SidecarState | '·')[]> = {
  connecting: ['active', '·', 'muted', 'standby', 'stopped', '·'],
  active: ['active', 'reconnecting', '·', '·', '·', '·'],
  reconnecting: ['active', '·', 'muted', 'standby', 'stopped', '·'],
  standby: ['active', '·', 'muted', '·', 'stopped', '·'],
  muted: ['active', '·', '·', '·', 'stopped', '·'],
  stopped: ['active', '·', '·', '·', '·', 'reconnecting'],
};

describe('link transition (pure)', () => {
  test('every state × event gives the state of the table, and a cause exactly when it changes', () => {
    assert.deepEqual([...ORDER].sort(), Object.keys(EVENTS).sort(), 'the table covers every event');
    for (const state of SIDECAR_STATES) {
      for (const [i, type] of ORDER.entries()) {
        const event = EVENTS[type];
        const want = EXPECTED[state][i];
        const t = transition(state, event);
        assert.equal(t.state, want === '·' ? state : want, `${state} + ${type}`);
        if (want === '·') assert.equal(t.cause, null, `${state} + ${type}: no cause when unchanged`);
        else assert.equal(typeof t.cause, 'string', `${state} + ${type}: a cause`);
      }
    }
  });

  test('muted only once the failed attempts reach mute_after_attempts; 0 never mutes', () => {
    const ev = (failed: number, muteAfterAttempts: number): LinkEvent => ({ type: 'attempt-failed', failed, muteAfterAttempts, cause: 'x' });
    assert.equal(transition('reconnecting', ev(2, 3)).state, 'reconnecting');
    assert.equal(transition('reconnecting', ev(3, 3)).state, 'muted');
    assert.equal(transition('standby', ev(4, 3)).state, 'muted');
    assert.equal(transition('standby', ev(1000, 0)).state, 'standby');
  });

  test('operator reconnect from stopped: connecting if never active, else reconnecting', () => {
    assert.deepEqual(transition('stopped', { type: 'operator-reconnect', everActive: false }), { state: 'connecting', cause: 'reconnect requested' });
    assert.deepEqual(transition('stopped', { type: 'operator-reconnect', everActive: true }), { state: 'reconnecting', cause: 'reconnect requested' });
  });

  test('causes name the key and the numbers', () => {
    assert.equal(transition('reconnecting', EVENTS['standby-timer']).cause, 'collector unreachable for 60000 ms (standby_after_ms)');
    assert.equal(transition('standby', EVENTS['attempt-failed']).cause, '3 failed attempts to reach the collector (mute_after_attempts=3): ECONNREFUSED');
    assert.equal(
      transition('muted', EVENTS['schedule-exhausted']).cause,
      'gave up after 3 reconnect attempts (ECONNREFUSED); apm-sidecar reconnect or SIGHUP tries again',
    );
  });
});

describe('one writer of the state', () => {
  test('only link/link.ts writes the sidecar state (StateHolder.set); transports report to the Link', () => {
    const src = join(__dirname, '..', '..', '..', 'sidecar', 'src');
    const writers: string[] = [];
    const walk = (dir: string): void => {
      for (const e of readdirSync(dir, { withFileTypes: true })) {
        const p = join(dir, e.name);
        if (e.isDirectory()) walk(p);
        else if (e.name.endsWith('.ts') && /\b(state|holder)\s*\.\s*set\(/.test(readFileSync(p, 'utf8'))) writers.push(relative(src, p));
      }
    };
    walk(src);
    assert.deepEqual(writers, [join('link', 'link.ts')]);
  });
});
