import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { after, describe, test } from 'node:test';
import type { SidecarState } from '@apm-sidecar/proto';
import { type Carrier, PROFILES, StateHolder, TcpTransport, parseReconnectSchedule } from '@apm-sidecar/sidecar';
import { FakeClock, fileLogger } from '../helpers/fake-clock';

/** A carrier that never reaches anyone: it fails as a refused TCP connect does (error, then close). */
class RefusedCarrier extends EventEmitter implements Carrier {
  readonly writableLength = 0;
  constructor() {
    super();
    setImmediate(() => {
      this.emit('error', Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }));
      this.emit('close');
    });
  }
  write(): boolean {
    return true;
  }
  destroy(): void {}
}

const settle = () => new Promise((r) => setImmediate(r)).then(() => new Promise((r) => setImmediate(r)));

const cleanups: (() => void)[] = [];
after(() => {
  for (const c of cleanups) c();
});

describe('TcpTransport reports to the Link (fake carrier, fake clock)', () => {
  test('whatap: the transport dials when the Link says, three attempts 5000 ms apart, then stopped; reconnect dials again', async () => {
    const clock = new FakeClock();
    const t0 = clock.now();
    const { log, cleanup } = fileLogger();
    cleanups.push(cleanup);
    const state = new StateHolder(log);
    const changes: [number, SidecarState][] = [];
    state.onChange((to) => changes.push([clock.now() - t0, to]));
    const dials: number[] = [];
    const transport = new TcpTransport({
      hosts: ['127.0.0.1'],
      port: 6600,
      key: { projectId: 'p', secret: Buffer.alloc(32) },
      agentId: 'a',
      version: 'test',
      connectTimeoutMs: 5000,
      soTimeoutMs: 60000,
      maxSendBytes: 1 << 20,
      schedule: parseReconnectSchedule(PROFILES.whatap.reconnect_schedule),
      standbyAfterMs: 60000,
      muteAfterAttempts: 3,
      apps: () => [],
      random: () => 0,
      clock,
      dial: () => {
        dials.push(clock.now() - t0);
        return new RefusedCarrier();
      },
    });
    transport.start({ wake: () => {}, state, log });
    await settle();
    assert.deepEqual(dials, [0]);
    assert.equal(state.state, 'connecting');
    assert.equal(transport.status().nextAttemptAt, new Date(t0 + 5000).toISOString());
    for (let i = 0; i < 3; i++) {
      clock.advance(5000);
      await settle();
    }
    assert.deepEqual(dials, [0, 5000, 10000, 15000]);
    assert.deepEqual(changes, [
      [10000, 'muted'],
      [15000, 'stopped'],
    ]);
    assert.equal(clock.pending, 0, 'stopped: nothing scheduled');
    const st = transport.status();
    assert.equal((st.lastError as { code: string }).code, 'ECONNREFUSED');
    assert.equal(st.reconnectAttempts, 4);
    assert.equal(st.nextAttemptAt, null);

    assert.deepEqual(transport.reconnect(), { ok: true, message: 'reconnecting to 127.0.0.1:6600' });
    assert.equal(state.state, 'connecting', 'never active: connecting again');
    assert.deepEqual(transport.reconnect(), { ok: true, message: 'already connecting to 127.0.0.1:6600' });
    await settle();
    assert.equal(dials.length, 5);
    await transport.close();
    assert.equal(clock.pending, 0);
  });
});
