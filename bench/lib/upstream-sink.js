'use strict';
/**
 * A minimal upstream receiver for bench/upstream.js, built only from the proto
 * classes (no SQLite, no logging, no licenses): it does the real handshake
 * (readClientHello + ServerHandshake), sends Config and License like the
 * collector, opens every sealed frame with Opener and acks it at once.
 *
 * The agent id picks what it does with a data frame before acking:
 *   open:*    open (authenticate + decrypt) only
 *   decode:*  open, then decodeMetricBatch / decodeTextBatch (the collector's
 *             decode step, with a series cache as the collector keeps one)
 *
 * It is a separate process, like the collector, so the sender and the receiver
 * each have a core. The access key comes in APM_BENCH_KEY; it prints
 * {"port": N} on stdout when listening and exits on SIGTERM or stdin end.
 */
const { createServer } = require('node:net');
const { join, resolve } = require('node:path');

const ROOT = resolve(__dirname, '../..');
const proto = require(join(ROOT, 'proto/dist/index.js'));
const up = require(join(ROOT, 'proto/dist/upstream/index.js'));
// As the collector (key-proof.ts): the handshake's X25519 in node:crypto, secretbox from tweetnacl.
const nacl = { ...require('tweetnacl'), ...up.nodeX25519 };

const key = up.parseAccessKey(process.env.APM_BENCH_KEY ?? '');
const MAX_FRAME = 5 * 1024 * 1024;
const seriesCache = new Map();

function connection(socket) {
  socket.setNoDelay(true);
  let phase = 'hello';
  let hs = null;
  let sealer = null;
  let opener = null;
  let decode = false;
  const write = (b) => {
    if (!socket.destroyed) socket.write(b);
  };
  const parser = new proto.FrameParser(MAX_FRAME, (type, payload) => {
    if (phase === 'hello') {
      const hello = up.readClientHello(payload);
      if (hello.projectId !== key.projectId) throw new Error('unknown project');
      decode = hello.agentId.startsWith('decode:');
      hs = new up.ServerHandshake(nacl, hello, key.secret);
      write(hs.serverHello());
      phase = 'finished';
      return;
    }
    if (phase === 'finished') {
      const keys = hs.clientFinished(payload);
      hs = null;
      sealer = new up.Sealer(nacl, keys, up.Direction.CollectorToAgent);
      opener = new up.Opener(nacl, keys, up.Direction.AgentToCollector);
      phase = 'info';
      return;
    }
    const m = opener.open(type, payload);
    if (phase === 'info') {
      up.decodeAgentInfo(m.body);
      write(sealer.text(up.Inner.Config, up.encodeAgentConfig({ configVersion: 1, settings: {} })));
      write(sealer.text(up.Inner.License, up.encodeLicense({ granted: true, reason: 'bench sink' })));
      phase = 'active';
      return;
    }
    switch (m.inner) {
      case up.Inner.MetricBatch:
        if (decode) up.decodeMetricBatch(m.body, seriesCache);
        write(sealer.text(up.Inner.Ack, up.encodeUpAck(m.counter)));
        return;
      case up.Inner.TextBatch:
        if (decode) up.decodeTextBatch(m.body);
        write(sealer.text(up.Inner.Ack, up.encodeUpAck(m.counter)));
        return;
      case up.Inner.Ping:
        write(sealer.text(up.Inner.Pong, m.body));
        return;
      default:
        return;
    }
  });
  socket.on('data', (chunk) => {
    try {
      parser.push(chunk);
    } catch (err) {
      process.stderr.write(`upstream-sink: ${err.message}\n`);
      socket.destroy();
    }
  });
  socket.on('error', () => socket.destroy());
}

const server = createServer(connection);
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`${JSON.stringify({ port: server.address().port })}\n`);
});
const stop = () => process.exit(0);
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
process.stdin.on('end', stop);
process.stdin.resume();
