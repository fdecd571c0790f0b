import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import StatsD from 'hot-shots';
import { type CollectorProc, FAST_SIDECAR, collectorPerSuite, getJson } from '../helpers/collector';
import { type SidecarProc, runToEnd, startSidecar, statusJson, waitFor } from '../helpers/procs';

/**
 * DogStatsD clients nobody on this team wrote — hot-shots (npm) over UDP and over the Unix datagram
 * socket, Debian's python3-statsd and python3-aiodogstatsd run with /usr/bin/python3 — send to a
 * real sidecar, and the values are read back at the real collector through its JSON API.
 */
interface Row {
  name: string;
  tags: Record<string, string>;
  count: number;
  sum: number;
  max: number;
}

const PYTHON = '/usr/bin/python3';

/** Whether /usr/bin/python3 can import `mod` (make test installs the Debian packages first). */
function pythonHas(mod: string): boolean {
  return spawnSync(PYTHON, ['-c', `import ${mod}`], { stdio: 'ignore' }).status === 0;
}

describe('DogStatsD from real clients, checked at the collector', () => {
  let collector: CollectorProc;
  let key = '';
  const suite = collectorPerSuite('dsd', [], (c, k) => {
    collector = c;
    key = k;
  });
  let sc: SidecarProc;
  let udpPort = 0;
  const dsock = join(suite.dir, 'dsd.sock');

  before(async () => {
    sc = await startSidecar(
      join(suite.dir, 'sc'),
      [
        '--transport',
        'tcp',
        '--server-host',
        '127.0.0.1',
        '--server-port',
        String(collector.port),
        '--set',
        'agent_id=dsd-agent',
        ...FAST_SIDECAR,
        '--set',
        'dogstatsd_udp=127.0.0.1:0',
        '--set',
        `dogstatsd_socket=${dsock}`,
        '--http',
        '127.0.0.1:0',
      ],
      { APM_SIDECAR_ACCESS_KEY: key },
    );
    udpPort = (await statusJson(sc.socket)).dogstatsd.udpPort as number;
    await waitFor('the sidecar to be active', async () => (await statusJson(sc.socket)).state === 'active', 15000);
  });
  after(() => sc?.kill('SIGTERM'));

  async function rows(name: string): Promise<Row[]> {
    const r = await getJson<Row[]>(collector.httpPort, `/api/metrics?agent=dsd-agent&name=${encodeURIComponent(name)}`);
    assert.equal(r.status, 200);
    return r.body;
  }
  const total = (rs: Row[], f: 'count' | 'sum') => rs.reduce((a, r) => a + r[f], 0);

  /** Waits until the collector holds `want` for `name` (sum, count, or max for gauges and sets). */
  async function atCollector(name: string, f: 'count' | 'sum' | 'max', want: number, tags?: Record<string, string>): Promise<void> {
    let seen: number | null = null;
    await waitFor(
      `${name} ${f} = ${want} at the collector`,
      async () => {
        let rs = await rows(name);
        if (tags !== undefined) rs = rs.filter((r) => JSON.stringify(r.tags) === JSON.stringify(tags));
        seen = f === 'max' ? (rs.length === 0 ? null : Math.max(...rs.map((r) => r.max))) : total(rs, f);
        return seen === want;
      },
      15000,
    ).catch((err: Error) => {
      throw new Error(`${err.message}; last seen ${seen}`);
    });
  }

  function close(c: InstanceType<typeof StatsD>): Promise<void> {
    return new Promise((resolve) => c.close(() => resolve()));
  }

  test('hot-shots over UDP: counters (also sampled), gauges, timers, histograms, distributions, sets, container id, events and service checks', async () => {
    const c = new StatsD({
      host: '127.0.0.1',
      port: udpPort,
      datadog: true,
      containerID: 'ctr-42',
      includeDatadogTelemetry: false,
      errorHandler: (e) => assert.fail(e),
    });
    const random = Math.random;
    try {
      for (let i = 0; i < 10; i++) c.increment('hs.udp.hits', 1, { route: '/a' });
      // hot-shots draws Math.random() to decide whether to send a sampled value: 0 sends every one,
      // so five values sent at rate 0.5 must count as ten.
      Math.random = () => 0;
      for (let i = 0; i < 5; i++) c.increment('hs.udp.sampled', 1, 0.5);
      c.histogram('hs.udp.size', 100, 0.25);
      Math.random = random;
      c.gauge('hs.udp.pool', 3);
      c.gauge('hs.udp.pool', 7);
      for (const v of [10, 20, 30]) c.timing('hs.udp.lat', v);
      c.histogram('hs.udp.size', 5);
      c.distribution('hs.udp.dist', 2);
      c.distribution('hs.udp.dist', 4);
      for (const u of ['alice', 'bob', 'alice', 'carol']) c.set('hs.udp.users', u);
      c.event('deploy v42', 'rolled out\nto eu', { alert_type: 'success', aggregation_key: 'deploys' }, ['env:prod']);
      c.check('db.reachable', c.CHECKS.CRITICAL, { message: 'timeout after 2s', hostname: 'db1' }, ['env:prod']);
    } finally {
      Math.random = random;
      await close(c);
    }
    await atCollector('hs.udp.hits', 'sum', 10, { container_id: 'ctr-42', route: '/a' });
    await atCollector('hs.udp.sampled', 'sum', 10);
    await atCollector('hs.udp.lat', 'count', 3);
    await atCollector('hs.udp.lat', 'sum', 60);
    await atCollector('hs.udp.size', 'count', 5, { container_id: 'ctr-42' });
    await atCollector('hs.udp.dist', 'sum', 6);
    await atCollector('hs.udp.pool', 'max', 7);
    await atCollector('hs.udp.users', 'max', 3);
    const events = await waitFor('the event and the service check at the collector', async () => {
      const r = await getJson<{ app: string; type: string; message: string; event: { attributes: Record<string, unknown> } }[]>(
        collector.httpPort,
        '/api/events?agent=dsd-agent',
      );
      const mine = r.body.filter((e) => e.app === 'dogstatsd');
      return mine.length >= 2 ? mine : null;
    });
    const ev = events.find((e) => e.type === 'dogstatsd.event');
    assert.equal(ev?.message, 'deploy v42');
    assert.equal(ev?.event.attributes.text, 'rolled out\nto eu');
    assert.equal(ev?.event.attributes.alertType, 'success');
    assert.match(String(ev?.event.attributes.tags), /env:prod/);
    const chk = events.find((e) => e.type === 'dogstatsd.service_check');
    assert.equal(chk?.event.attributes.status, 'critical');
    assert.equal(chk?.event.attributes.message, 'timeout after 2s');
    assert.equal(chk?.event.attributes.hostname, 'db1');
    const st = (await statusJson(sc.socket)).dogstatsd;
    assert.equal(st.invalid, 0, JSON.stringify(st.invalidByReason));
  });

  test('hot-shots over the Unix datagram socket (dogstatsd_socket), buffered lines in one datagram', async () => {
    const c = new StatsD({
      protocol: 'uds',
      path: dsock,
      maxBufferSize: 1024,
      bufferFlushInterval: 20,
      includeDatadogTelemetry: false,
      errorHandler: (e) => assert.fail(e),
    });
    try {
      for (let i = 0; i < 20; i++) c.increment('hs.uds.hits', 2, ['via:uds', 'via:socket']);
      for (let i = 1; i <= 4; i++) c.distribution('hs.uds.lat', i * 10);
    } finally {
      await close(c);
    }
    // A repeated tag key keeps both values.
    await atCollector('hs.uds.hits', 'sum', 40, { via: 'socket,uds' });
    await atCollector('hs.uds.lat', 'count', 4);
    await atCollector('hs.uds.lat', 'sum', 100);
  });

  test('python3-statsd (Debian) over UDP: incr, sampled incr, pipeline, timing, gauge, set', async (t) => {
    if (!pythonHas('statsd')) return t.skip('python3-statsd cannot be imported by /usr/bin/python3 (make test installs it: apt-get install python3-statsd)');
    const script = `
import random, sys, statsd
c = statsd.StatsClient('127.0.0.1', int(sys.argv[1]), prefix='py')
for _ in range(7): c.incr('hits')
random.random = lambda: 0.0  # every sampled value is sent
for _ in range(3): c.incr('sampled', 1, rate=0.25)
with c.pipeline() as p:
    p.incr('hits', 3)
    p.timing('lat', 12.5)
    p.timing('lat', 7.5)
c.gauge('level', 4)
for u in ['a', 'b', 'a']: c.set('users', u)
`;
    const r = await runToEnd(PYTHON, ['-c', script, String(udpPort)]);
    assert.equal(r.code, 0, r.stderr);
    await atCollector('py.hits', 'sum', 10);
    await atCollector('py.sampled', 'sum', 12);
    await atCollector('py.lat', 'count', 2);
    await atCollector('py.lat', 'sum', 20);
    await atCollector('py.level', 'max', 4);
    await atCollector('py.users', 'max', 2);
  });

  test('python3-aiodogstatsd (Debian) over UDP: tagged counters, gauges, histograms, distributions, timings', async (t) => {
    if (!pythonHas('aiodogstatsd')) {
      return t.skip('python3-aiodogstatsd cannot be imported by /usr/bin/python3 (make test installs it: apt-get install python3-aiodogstatsd)');
    }
    const script = `
import asyncio, sys, aiodogstatsd
async def main():
    async with aiodogstatsd.Client(host='127.0.0.1', port=int(sys.argv[1]), namespace='aio', constant_tags={'svc': 'pay'}) as c:
        for _ in range(6): c.increment('hits', tags={'code': '200'})
        c.increment('hits', value=4, tags={'code': '500'})
        c.gauge('queue', value=9)
        for v in (1, 2, 3): c.histogram('size', value=v)
        c.distribution('dist', value=50)
        c.timing('lat', value=15)
asyncio.run(main())
`;
    const r = await runToEnd(PYTHON, ['-c', script, String(udpPort)]);
    assert.equal(r.code, 0, r.stderr);
    await atCollector('aio.hits', 'sum', 6, { code: '200', svc: 'pay' });
    await atCollector('aio.hits', 'sum', 4, { code: '500', svc: 'pay' });
    await atCollector('aio.queue', 'max', 9);
    await atCollector('aio.size', 'sum', 6);
    await atCollector('aio.dist', 'count', 1);
    await atCollector('aio.lat', 'sum', 15);
  });

  test('malformed datagrams are counted by reason in status and /metrics and do not stop the input', async () => {
    const { createSocket } = await import('node:dgram');
    const s = createSocket('udp4');
    try {
      const send = (b: string) => new Promise<void>((res, rej) => s.send(b, udpPort, '127.0.0.1', (e) => (e ? rej(e) : res())));
      await send('bad.value:x|c\nbad.type:1|q\n_sc|x|9\n\u0000\u00ff garbage');
      await send('after.bad:1|c\nagain.bad:y|c');
    } finally {
      s.close();
    }
    await atCollector('after.bad', 'sum', 1);
    const st = (await statusJson(sc.socket)).dogstatsd;
    assert.deepEqual(st.invalidByReason, { bad_value: 2, bad_type: 1, bad_service_check: 1, no_type: 1 });
    assert.equal(sc.logs('DogStatsD line refused (bad_value)').length, 1, 'logged once per reason');
    assert.equal(sc.alive, true);
    const listening = sc.lines.find((l) => typeof l.http === 'object' && l.http !== null && 'port' in l.http);
    assert.ok(listening, 'the sidecar logged its --http address');
    const httpPort = (listening.http as { port: number }).port;
    const text = await (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text();
    assert.match(text, /^apm_sidecar_dogstatsd_invalid_total\{reason="bad_service_check"\} 1$/m);
    assert.match(text, /^apm_sidecar_dogstatsd_lines_total\{kind="event"\} 1$/m);
  });
});
