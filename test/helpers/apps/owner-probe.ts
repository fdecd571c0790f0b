// Fixture app: connects to SOCKET, records a counter, prints every state change
// the shim publishes on its diagnostics channel as a JSON line, and after
// RUN_MS prints its stats and exits.
import { subscribe } from 'node:diagnostics_channel';
import { connect } from '@apm-sidecar/shim';

subscribe('apm-sidecar:shim:state', (m) => {
  process.stdout.write(`${JSON.stringify({ stateChange: m })}\n`);
});
const apm = connect({ app: 'owner-probe', socket: process.env.SOCKET, flushMs: 50, reconnectMinMs: 50, reconnectMaxMs: 200 });
apm.counter('owner.n').add(1);
setTimeout(
  async () => {
    process.stdout.write(`${JSON.stringify({ final: true, state: apm.state, stats: apm.stats(), lastConnectError: apm.lastConnectError })}\n`);
    await apm.close();
  },
  Number(process.env.RUN_MS ?? 1500),
);
