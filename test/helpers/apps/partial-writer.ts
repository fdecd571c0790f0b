// Fixture: a misbehaving client that says hello, then writes only the first
// half of a metrics frame and hangs, so a test can kill -9 it mid-frame.
import { createConnection } from 'node:net';
import { MessageType, PROTOCOL_VERSION, encodeHello } from '@apm-sidecar/proto';

const s = createConnection({ path: process.env.APM_SIDECAR_SOCKET as string });
s.on('connect', () => {
  s.write(
    encodeHello({
      v: PROTOCOL_VERSION,
      app: 'partial',
      pid: process.pid,
      shimVersion: 'fixture',
      instanceId: `partial-${process.pid}`,
      secret: 'p'.repeat(32),
      seq: 0,
    }),
  );
  const frame = Buffer.alloc(1000);
  frame.writeUInt32LE(996, 0);
  frame[4] = MessageType.Metrics;
  s.write(frame.subarray(0, 500), () => process.stdout.write(`${JSON.stringify({ partial: true })}\n`));
});
s.on('error', () => process.exit(3));
setInterval(() => {}, 1000);
