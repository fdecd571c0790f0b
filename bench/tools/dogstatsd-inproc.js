'use strict';
/**
 * The DogStatsD parse-and-aggregate path alone, in this process, without sockets: the datagrams of
 * bench (i) (lib/dogstatsd-lines.js) into DogStatsdAggregator.packet(), a window taken every 10,000
 * datagrams. Several builds of the sidecar can be compared in one process, in alternating rounds
 * (each is given as its dist directory, e.g. a copy of an older build's sidecar/dist inside sidecar/).
 *
 *   node bench/tools/dogstatsd-inproc.js [DIST …] [--series 1000] [--rounds 14] [--round-ms 300]
 *
 * Prints, per build, the CPU ns per line (process.cpuUsage) of the rounds after 4 warm-up rounds:
 * median and range.
 */
const { join, resolve } = require('node:path');
const { buildPackets } = require('../lib/dogstatsd-lines');
const { median } = require('../lib/stats');

const args = process.argv.slice(2);
const opt = (name, fallback) => {
  const i = args.indexOf(name);
  if (i < 0) return fallback;
  const v = args[i + 1];
  args.splice(i, 2);
  return Number(v);
};
const series = opt('--series', 1000);
const rounds = opt('--rounds', 14);
const roundMs = opt('--round-ms', 300);
const dists = args.length > 0 ? args.map((d) => resolve(d)) : [join(__dirname, '../../sidecar/dist')];

const { packets } = buildPackets({ series, packets: Math.max(2000, Math.ceil(series / 10)) });
const builds = dists.map((d) => ({ d, agg: new (require(join(d, 'dogstatsd.js')).DogStatsdAggregator)(), ns: [] }));
let k = 0;
for (let r = 0; r < rounds; r++) {
  for (const b of builds) {
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    let lines = 0;
    while (performance.now() - t0 < roundMs) {
      for (let j = 0; j < 50; j++) {
        const p = packets[k++ % packets.length];
        b.agg.packet(p.buf);
        lines += p.lines;
        if (k % 10_000 === 0) b.agg.take(1, Date.now());
      }
    }
    const c = process.cpuUsage(c0);
    if (r >= 4) b.ns.push(((c.user + c.system) * 1000) / lines);
  }
}
for (const b of builds) {
  const s = [...b.ns].sort((x, y) => x - y);
  process.stdout.write(`${b.d}: ${median(s).toFixed(0)} ns/line (${s[0].toFixed(0)}–${s[s.length - 1].toFixed(0)}), ${series} series\n`);
}
