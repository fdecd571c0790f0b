// The text of `apm-sidecar status`: the JSON status (see stats.ts) as lines a person reads.

interface UpstreamStatus {
  transport?: string;
  server?: string | null;
  servers?: string[];
  connected?: boolean;
  lastError?: { code: string; message: string; at: string } | null;
  nextAttemptAt?: string | null;
  attempts?: number;
  /** The link's phase: 'dialing' while an attempt runs, 'gave-up' when the schedule stopped. */
  phase?: string;
}

function seconds(ms: number): string {
  return ms < 10000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms / 1000)} s`;
}

/** Where the upstream stands: the last error while it is not connected, and when the next attempt is. */
function upstreamLines(u: UpstreamStatus | undefined, now: number): string[] {
  if (u === undefined || u.servers === undefined) return [];
  const where = u.server ?? u.servers.join(', ');
  if (u.connected === true) return [`upstream:   connected to ${where}`];
  const lines = [`upstream:   not connected (${u.servers.join(', ')}), ${u.attempts ?? 0} attempts since the last session`];
  const e = u.lastError;
  lines.push(e ? `last error: ${e.message} [${e.code}] at ${e.at}` : 'last error: none yet');
  if (u.nextAttemptAt) {
    const inMs = Date.parse(u.nextAttemptAt) - now;
    lines.push(`next try:   ${inMs > 0 ? `in ${seconds(inMs)}` : 'now'} (${u.nextAttemptAt})`);
  } else if (u.phase === 'dialing') {
    lines.push(`next try:   under way now (${where})`);
  } else if (u.phase === 'gave-up') {
    lines.push('next try:   none: the reconnect schedule gave up (`apm-sidecar reconnect` or SIGHUP tries again)');
  }
  return lines;
}

export function humanStatus(s: Record<string, unknown>, now = Date.now()): string {
  const q = s.queues as Record<string, { depth: number; capacity: number; dropped: number }>;
  const counters = s.counters as { received: Record<string, number>; sent: Record<string, number>; dropped: Record<string, number> };
  const shims = s.shims as { app: string; pid: number; lastSeenAt: string }[];
  const r = (s.retention ?? {}) as { rows?: number; condition?: string; lastError?: string | null; usedBytes?: number | null; freeBytes?: number | null };
  const lines = [
    `state:      ${s.state} (since ${s.stateSince}: ${s.stateCause})`,
    `agent:      ${s.agentId}  transport: ${s.transport}  socket: ${s.socket}`,
    `queue1:     ${q.queue1?.depth}/${q.queue1?.capacity} (dropped ${q.queue1?.dropped})`,
    `queue2:     ${q.queue2?.depth}/${q.queue2?.capacity} (dropped ${q.queue2?.dropped})`,
    `received:   ${Object.entries(counters.received)
      .map(([k, v]) => `${k}=${v}`)
      .join(' ')}`,
    `sent:       ${Object.entries(counters.sent)
      .map(([k, v]) => `${k}=${v}`)
      .join(' ')}`,
    `dropped:    ${
      Object.entries(counters.dropped)
        .map(([k, v]) => `${k}=${v}`)
        .join(' ') || 'none'
    }`,
    `retention:  ${r.condition ?? 'unknown'}, ${r.rows ?? 0} rows, ${r.usedBytes ?? '?'} bytes used, ${r.freeBytes ?? '?'} bytes free${
      r.condition !== 'ok' && r.lastError ? ` (${r.lastError})` : ''
    }`,
    ...upstreamLines(s.upstream as UpstreamStatus | undefined, now),
    `shims:      ${shims.length}`,
    ...shims.map((x) => `  - ${x.app} pid ${x.pid}, last seen ${x.lastSeenAt}`),
  ];
  return `${lines.join('\n')}\n`;
}
