// Preloaded into a sidecar (node --require) by the socket-mode test: records the
// mode of MODE_WITNESS_PATH at the instants a poller could miss, as JSON lines
// in MODE_WITNESS_OUT: right after listen() returns (bind has created the file)
// and right before any chmod/chown of it.
import fs from 'node:fs';
import net from 'node:net';

const target = process.env.MODE_WITNESS_PATH ?? '';
const out = process.env.MODE_WITNESS_OUT ?? '';

function witness(at: string): void {
  try {
    const mode = fs.lstatSync(target).mode & 0o7777;
    fs.appendFileSync(out, `${JSON.stringify({ at, mode })}\n`);
  } catch {
    // not there (yet)
  }
}

const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (this: net.Server, ...args: unknown[]) {
  const r = (listen as (...a: unknown[]) => net.Server).apply(this, args);
  witness('after listen()');
  return r;
} as typeof listen;

for (const name of ['chmodSync', 'chownSync'] as const) {
  const original = fs[name] as (...a: unknown[]) => void;
  (fs as unknown as Record<string, unknown>)[name] = (...args: unknown[]) => {
    if (args[0] === target) witness(`before ${name}`);
    return original(...args);
  };
}
