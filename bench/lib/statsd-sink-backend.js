'use strict';
/**
 * A backend for Etsy statsd (bench (i)): it discards every flush, and counts what statsd itself
 * counted: statsd.metrics_received (lines), statsd.packets_received and statsd.bad_lines_seen.
 * statsd zeroes those counters after each flush, so the backend adds them up at flush and reads the
 * live counters object in between; the bench asks with an IPC message 'counts'.
 */
const NAMES = { lines: 'statsd.metrics_received', packets: 'statsd.packets_received', bad: 'statsd.bad_lines_seen' };

exports.init = (_startupTime, _config, events) => {
  const flushed = { lines: 0, packets: 0, bad: 0 };
  let live = null;
  let flushes = 0;
  events.on('flush', (_ts, metrics) => {
    // Listeners run before statsd's own clear_metrics (registered once per flush, after them).
    live = metrics.counters;
    for (const [k, name] of Object.entries(NAMES)) flushed[k] += live[name] ?? 0;
    flushes++;
    if (flushes === 1) process.send?.({ type: 'ready' });
  });
  process.on('message', (m) => {
    if (m !== 'counts') return;
    const c = { type: 'counts', flushes };
    for (const [k, name] of Object.entries(NAMES)) c[k] = flushed[k] + (live?.[name] ?? 0);
    process.send(c);
  });
  return true;
};
