'use strict';
/**
 * (a) Cost of one histogram.record() on a bound handle, next to its peers, in one process.
 *
 *   shim      apm.histogram('http.server.duration', { route: '/pay' }) → handle.record(v)
 *   shimLookup the same series looked up on every call: apm.histogram(name, tags).record(v)
 *   otel      @opentelemetry/sdk-metrics histogram.record(v, { route: '/pay' })  (no bound handles in OTel 2.x)
 *   otelBare  the same with no attributes (OTel's cheapest record(): no attribute hashing)
 *   hot-shots client.timing('http.server.duration', v, ['route:/pay']), buffered, to a UDP sink on 127.0.0.1
 *   floor     12 bytes (u32 series id + f64 value) written into a preallocated buffer
 *   empty     a call that does nothing (the loop's own cost)
 *
 * Every target is an object with record(v), driven by its own copy of the same
 * loop source (compiled separately with new Function, so no target shares type
 * feedback with another). Inputs are 1024 pre-built log-normal latencies. After
 * calibration and warm-up, rounds of ~ROUND_MS each run the targets in a rotating
 * order; the result is the median ns/call over the rounds.
 *
 *   node bench/record.js [--json] [--rounds N] [--round-ms MS]
 */
const dgram = require('node:dgram');
const { join, resolve } = require('node:path');
const { tmpdir } = require('node:os');
const { latencies, median, quantile, num, table } = require('./lib/stats');

const ROOT = resolve(__dirname, '..');

function arg(name, fallback) {
  const i = process.argv.indexOf(name);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
}

const ROUNDS = arg('--rounds', 15);
const ROUND_MS = arg('--round-ms', 60);
const WARMUP_ROUNDS = 3;
const MASK = 1023;
const LOOP_SRC = 'for (let i = 0; i < n; i++) t.record(values[i & 1023]);';

const tick = () => new Promise((r) => setImmediate(r));

async function udpSink() {
  const sock = dgram.createSocket('udp4');
  const stats = { packets: 0, bytes: 0 };
  sock.on('message', (m) => {
    stats.packets++;
    stats.bytes += m.length;
  });
  await new Promise((r) => sock.bind(0, '127.0.0.1', r));
  return { port: sock.address().port, stats, close: () => sock.close() };
}

async function buildTargets() {
  // --- the shim: not connected (absent socket path); record() never touches the socket.
  // The package's own entry (package.json "main"), i.e. what an app's require('@apm-sidecar/shim') loads.
  const { connect } = require(join(ROOT, 'client-shim'));
  const apm = connect({
    app: 'bench',
    socket: join(tmpdir(), `apm-bench-absent-${process.pid}`, 'apm.sock'),
    flushMs: 3_600_000, // no flush inside the measurement
    reconnectMinMs: 3_600_000,
    reconnectMaxMs: 3_600_000,
  });
  const shimTags = { route: '/pay' };
  const shimHandle = apm.histogram('http.server.duration', shimTags);

  // --- OpenTelemetry: a MeterProvider with a reader that is never collected.
  const { MeterProvider, MetricReader } = require('@opentelemetry/sdk-metrics');
  class IdleReader extends MetricReader {
    async onForceFlush() {}
    async onShutdown() {}
  }
  const provider = new MeterProvider({ readers: [new IdleReader()] });
  const otelHist = provider.getMeter('bench').createHistogram('http.server.duration', { unit: 'ms' });
  const otelAttrs = { route: '/pay' };
  // The same call with no attributes: OTel's cheapest record() (one series, no attribute hashing).
  const otelBare = provider.getMeter('bench').createHistogram('http.server.duration.bare', { unit: 'ms' });

  // --- hot-shots: buffered (1432 bytes, the usual UDP payload size), to a local UDP sink.
  const StatsD = require('hot-shots');
  const sink = await udpSink();
  const errors = { n: 0 };
  const statsd = new StatsD({
    host: '127.0.0.1',
    port: sink.port,
    maxBufferSize: 1432,
    bufferFlushInterval: 1000,
    includeDataDogTags: false,
    includeDatadogTelemetry: false,
    errorHandler: () => errors.n++,
  });
  const hsTags = ['route:/pay'];

  // --- the floor: 12 bytes into a preallocated buffer.
  const buf = Buffer.allocUnsafe(64 * 1024);
  const floor = {
    off: 0,
    record(v) {
      let o = this.off;
      if (o > buf.length - 12) o = 0;
      buf.writeUInt32LE(7, o);
      buf.writeDoubleLE(v, o + 4);
      this.off = o + 12;
    },
  };

  const targets = [
    { key: 'shim', name: '@apm-sidecar/shim histogram.record() (bound handle)', t: shimHandle },
    {
      key: 'shimLookup',
      name: '@apm-sidecar/shim apm.histogram(name, tags).record() (lookup per call)',
      t: { record: (v) => apm.histogram('http.server.duration', shimTags).record(v) },
    },
    { key: 'otel', name: '@opentelemetry/sdk-metrics histogram.record(v, attrs)', t: { record: (v) => otelHist.record(v, otelAttrs) } },
    { key: 'otelBare', name: '@opentelemetry/sdk-metrics histogram.record(v), no attributes', t: { record: (v) => otelBare.record(v) } },
    { key: 'hotshots', name: 'hot-shots timing(), buffered, UDP sink', t: { record: (v) => statsd.timing('http.server.duration', v, hsTags) } },
    { key: 'floor', name: 'floor: 12 bytes into a preallocated buffer', t: floor },
    { key: 'empty', name: 'empty call (loop overhead)', t: { record(_v) {} } },
  ];
  for (const x of targets) {
    // eslint-disable-next-line no-new-func
    x.loop = new Function('t', 'values', 'n', LOOP_SRC);
    x.samples = [];
  }
  const close = async () => {
    await apm.close();
    await provider.shutdown();
    await new Promise((r) => statsd.close(() => r()));
    await tick();
    sink.close();
  };
  return { targets, close, sink, errors, shimStats: () => apm.stats() };
}

function timeLoop(x, values, n) {
  const t0 = process.hrtime.bigint();
  x.loop(x.t, values, n);
  return Number(process.hrtime.bigint() - t0);
}

async function run({ rounds = ROUNDS, roundMs = ROUND_MS } = {}) {
  const values = Array.from(latencies(MASK + 1, 42));
  const { targets, close, sink, errors } = await buildTargets();

  // Warm up (the JIT optimizes each loop), then calibrate calls per round so
  // that one round takes about roundMs.
  for (const x of targets) {
    let n = 1000;
    const until = Date.now() + 300;
    while (Date.now() < until) {
      const ns = timeLoop(x, values, n);
      if (ns < 10e6) n *= 2;
      await tick();
    }
    const ns = timeLoop(x, values, n);
    x.n = Math.max(1000, Math.round((n * roundMs * 1e6) / ns));
    await tick();
  }
  for (let r = 0; r < WARMUP_ROUNDS; r++) {
    for (const x of targets) {
      timeLoop(x, values, x.n);
      await tick();
    }
  }
  for (let r = 0; r < rounds; r++) {
    for (let k = 0; k < targets.length; k++) {
      const x = targets[(r + k) % targets.length];
      x.samples.push(timeLoop(x, values, x.n) / x.n);
      await tick(); // let the UDP sink and hot-shots' timers run outside the timed loop
    }
  }
  await close();
  const rows = targets.map((x) => ({
    key: x.key,
    name: x.name,
    callsPerRound: x.n,
    rounds,
    medianNs: median(x.samples),
    p25Ns: quantile(x.samples, 0.25),
    p75Ns: quantile(x.samples, 0.75),
    minNs: Math.min(...x.samples),
  }));
  return { rows, udpSink: { ...sink.stats }, hotShotsErrors: errors.n };
}

function report(res) {
  const by = Object.fromEntries(res.rows.map((r) => [r.key, r]));
  const lines = [
    table(
      ['library / call', 'median ns/call', 'p25–p75 ns', 'calls × rounds'],
      res.rows.map((r) => [r.name, num(r.medianNs, 1), `${num(r.p25Ns, 1)}–${num(r.p75Ns, 1)}`, `${num(r.callsPerRound)} × ${r.rounds}`]),
    ),
    '',
    `hot-shots ÷ shim = ${num(by.hotshots.medianNs / by.shim.medianNs, 1)}×   shim ÷ otel(attrs) = ${num(by.shim.medianNs / by.otel.medianNs, 2)}×   shim ÷ otel(no attrs) = ${num(by.shim.medianNs / by.otelBare.medianNs, 2)}×   shim ÷ floor = ${num(by.shim.medianNs / by.floor.medianNs, 2)}×`,
    `UDP sink received ${num(res.udpSink.packets)} packets (${num(res.udpSink.bytes)} bytes); hot-shots errors: ${res.hotShotsErrors}`,
  ];
  return lines.join('\n');
}

module.exports = { run, report };

if (require.main === module) {
  run().then(
    (res) => {
      if (process.argv.includes('--json')) process.stdout.write(`${JSON.stringify(res)}\n`);
      else process.stdout.write(`${report(res)}\n`);
    },
    (err) => {
      process.stderr.write(`${err.stack}\n`);
      process.exit(1);
    },
  );
}
