import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { get } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import {
  CollectorStats,
  SqliteCollectorStore,
  SqliteStore,
  closeServer,
  createHttpApi,
  createLogger,
  createMetricsRegistry,
  listen,
  prometheusText,
} from '@apm-sidecar/collector';

function fetchText(port: number, path: string): Promise<{ status: number; type: string; body: string }> {
  return new Promise((resolve, reject) => {
    get({ host: '127.0.0.1', port, path }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => {
        body += d;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, type: String(res.headers['content-type']), body }));
    }).on('error', reject);
  });
}

describe('collector /metrics (prom-client)', () => {
  it('two collectors in one process each show their own counters (a registry per collector, not the global one)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'apm-prom-'));
    const store = SqliteStore.open(dir);
    const log = createLogger('silent');
    const a = new CollectorStats();
    const b = new CollectorStats();
    a.rejected.badKey = 7;
    b.rejected.badKey = 11;
    b.sessions.http = 2;
    const servers = [a, b].map((stats) => createHttpApi({ store: new SqliteCollectorStore(store), stats, log }));
    try {
      const ports = await Promise.all(servers.map(async (s) => (await listen(s, '127.0.0.1', 0)).port));
      const [ra, rb] = await Promise.all(ports.map((p) => fetchText(p, '/metrics')));
      assert.equal(ra?.status, 200);
      assert.match(String(ra?.type), /^text\/plain; version=0\.0\.4/);
      assert.match(String(ra?.body), /^apm_collector_rejected_total\{reason="badKey"\} 7$/m);
      assert.match(String(rb?.body), /^apm_collector_rejected_total\{reason="badKey"\} 11$/m);
      assert.match(String(ra?.body), /^apm_collector_sessions\{transport="http"\} 0$/m);
      assert.match(String(rb?.body), /^apm_collector_sessions\{transport="http"\} 2$/m);
      // A scrape reads the counters as they are now.
      a.rejected.badKey++;
      assert.match((await fetchText(ports[0] as number, '/metrics')).body, /^apm_collector_rejected_total\{reason="badKey"\} 8$/m);
    } finally {
      await Promise.all(servers.map((s) => closeServer(s)));
      store.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('writes one line per HELP, TYPE and sample, escapes label values and shows a non-finite counter as 0', async () => {
    const stats = new CollectorStats();
    stats.frames['a\\b\n"c'] = 3;
    stats.frames.Broken = Number.NaN;
    stats.droppedLate = 4;
    Object.assign(stats.pruned, { runs: 3, rows: 5000, errors: 1 });
    const text = await prometheusText(createMetricsRegistry({ stats, agentsByState: () => ({ live: 1, stalled: 0, disconnected: 2 }) }));
    const lines = text.split('\n');
    assert.equal(lines.pop(), '', 'ends with a newline');
    for (const l of lines) assert.match(l, /^(# (HELP|TYPE) \w+ .+|\w+(\{[^}]*\})? -?[\d.e+]+)$/, l);
    const frames = lines.indexOf('# TYPE apm_collector_frames_total counter');
    assert.deepEqual(lines.slice(frames - 1, frames + 3), [
      '# HELP apm_collector_frames_total Agent frames received, by type.',
      '# TYPE apm_collector_frames_total counter',
      'apm_collector_frames_total{type="a\\\\b\\n\\"c"} 3',
      'apm_collector_frames_total{type="Broken"} 0',
    ]);
    assert.deepEqual(
      lines.filter((l) => l.startsWith('apm_collector_agents')),
      ['apm_collector_agents{state="live"} 1', 'apm_collector_agents{state="stalled"} 0', 'apm_collector_agents{state="disconnected"} 2'],
    );
    assert.ok(lines.includes('apm_collector_late_points_dropped_total 4'));
    assert.deepEqual(
      lines.filter((l) => l.startsWith('# TYPE')),
      [
        '# TYPE apm_collector_sessions gauge',
        '# TYPE apm_collector_agents gauge',
        '# TYPE apm_collector_frames_total counter',
        '# TYPE apm_collector_rejected_total counter',
        '# TYPE apm_collector_late_points_dropped_total counter',
        '# TYPE apm_collector_received_total counter',
        '# TYPE apm_collector_duplicate_packs_total counter',
        '# TYPE apm_collector_store_errors_total counter',
        '# TYPE apm_collector_prune_runs_total counter',
        '# TYPE apm_collector_pruned_rows_total counter',
        '# TYPE apm_collector_prune_errors_total counter',
      ],
    );
    assert.ok(lines.includes('apm_collector_pruned_rows_total 5000'));
    assert.ok(lines.includes('apm_collector_prune_errors_total 1'));
  });
});
