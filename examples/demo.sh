#!/usr/bin/env bash
# apm-sidecar end to end on this machine, in about a minute:
#
#   collector (apm-collector: SQLite store, JSON API on 127.0.0.1)
#     ▲ encrypted TCP session (access key created here with `apm-collector keys create`)
#   sidecar (transport tcp)
#     ▲ Unix socket $TMP/apm.sock
#   example app (examples/http-app, instrumented with @apm-sidecar/shim)
#     ▲ HTTP on 127.0.0.1
#   load generator (examples/http-app/load.js, LOAD_SECONDS, default 6)
#
# Then it prints `apm-sidecar status`, the sidecar's /readyz and a few /metrics lines; takes the
# collector away for OUTAGE_SECONDS while the load goes on, showing the sidecar's states as they
# change (active → reconnecting → standby → muted → active once the collector is back) and the
# collector's request count before and after (the metrics recorded during the outage arrive
# afterwards); stops the app and the sidecar (SIGTERM: the sidecar flushes open intervals); shows
# what reached the collector through its JSON API; and keeps the collector's page up until Ctrl-C.
#
# Run from anywhere after `npm ci && npm run build` (or `make demo`, which does both).
#   LOAD_SECONDS    the first load, default 6
#   OUTAGE_SECONDS  how long the collector is away, default 20; the sidecar's reconnect schedule,
#                   standby_after_ms and mute_after_attempts are scaled to it (--set)
#   DEMO_HOLD       1: keep the page up until Ctrl-C (the default when stdin is a terminal);
#                   0: exit at the end (the default otherwise, e.g. in CI)
#   KEEP=1          keep the temporary directory (logs, packs) for a look afterwards
# Ctrl-C at any moment stops every process the demo started and removes the directory.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

LOAD_SECONDS="${LOAD_SECONDS:-6}"
if ! [[ $LOAD_SECONDS =~ ^[0-9]+$ ]] || ((LOAD_SECONDS < 1 || LOAD_SECONDS > 120)); then
  echo "demo: LOAD_SECONDS must be an integer 1..120, got '$LOAD_SECONDS'" >&2
  exit 2
fi

OUTAGE_SECONDS="${OUTAGE_SECONDS:-20}"
if ! [[ $OUTAGE_SECONDS =~ ^[0-9]+$ ]] || ((OUTAGE_SECONDS < 5 || OUTAGE_SECONDS > 300)); then
  echo "demo: OUTAGE_SECONDS must be an integer 5..300, got '$OUTAGE_SECONDS'" >&2
  exit 2
fi
if [[ -n ${DEMO_HOLD:-} ]]; then
  [[ $DEMO_HOLD == 0 || $DEMO_HOLD == 1 ]] || { echo "demo: DEMO_HOLD must be 0 or 1, got '$DEMO_HOLD'" >&2; exit 2; }
  HOLD=$DEMO_HOLD
elif [[ -t 0 ]]; then
  HOLD=1
else
  HOLD=0
fi
# The outage timeline, scaled to its length (20 s: a retry every second, standby after 4 s,
# muted after 8 failed attempts).
RETRY_MS=$((OUTAGE_SECONDS * 1000 / 20))
STANDBY_MS=$((OUTAGE_SECONDS * 1000 / 5))
MUTE_AFTER=8

command -v node >/dev/null || { echo "demo: node is not on PATH (Node.js >= 20 is needed)" >&2; exit 1; }
node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)' ||
  { echo "demo: Node.js >= 20 is needed, found $(node --version)" >&2; exit 1; }
for f in proto/dist/index.js client-shim/dist/shim.js sidecar/dist/cli.js collector/dist/cli.js; do
  [[ -f $f ]] || { echo "demo: $f is missing: run 'npm ci && npm run build' first (make demo does both)" >&2; exit 1; }
done

TMP="$(mktemp -d "${TMPDIR:-/tmp}/apm-demo.XXXXXX")"
SOCK="$TMP/apm.sock"
SIDECAR_PID=""
APP_PID=""
COLLECTOR_PID=""
LOAD_PID=""
FOLLOW_PID=""
INTERRUPTED=""

say() { printf '\n==> %s\n' "$*"; }

# stop PID NAME: SIGTERM, wait up to 10 s, then SIGKILL. Prints nothing if already gone.
stop() {
  local pid=$1 name=$2 i
  [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  echo "demo: $name (pid $pid) did not stop within 10 s; killing it" >&2
  kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  [[ -n $INTERRUPTED ]] && printf '\ndemo: %s: stopping what it started\n' "$INTERRUPTED" >&2
  stop "$FOLLOW_PID" "state follower"
  stop "$LOAD_PID" "load generator"
  stop "$APP_PID" "example app"
  stop "$SIDECAR_PID" "sidecar"
  stop "$COLLECTOR_PID" "collector"
  wait 2>/dev/null || true
  if [[ -n ${KEEP:-} ]]; then
    echo "demo: files kept in $TMP" >&2
  else
    rm -rf "$TMP"
  fi
  [[ -n $INTERRUPTED ]] && echo "demo: stopped" >&2
  exit "$rc"
}
trap cleanup EXIT
trap 'INTERRUPTED=interrupted; exit 130' INT
trap 'INTERRUPTED=terminated; exit 143' TERM

# The long-running processes get a session of their own (setsid): Ctrl-C reaches the script and
# its foreground command only, and cleanup stops them in order (the app before the sidecar
# before the collector) instead of all dying at once and being reported as "exited early".
# (Without util-linux's setsid they share the script's process group: Ctrl-C then reaches them too.)
if command -v setsid >/dev/null; then
  bg() { setsid "$@" & }
else
  bg() { "$@" & }
fi

# wait_for SECONDS PID WHAT CMD...: poll CMD every 0.1 s while PID is alive.
wait_for() {
  local secs=$1 pid=$2 what=$3 i
  shift 3
  for ((i = 0; i < secs * 10; i++)); do
    if "$@"; then return 0; fi
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "demo: $what exited early" >&2
      return 1
    fi
    sleep 0.1
  done
  echo "demo: timed out waiting for $what" >&2
  return 1
}

# The port the sidecar's --http listener got (it logs the address it bound).
http_port() {
  node -e '
    for (const l of require("fs").readFileSync(process.argv[1], "utf8").split("\n")) {
      try { const o = JSON.parse(l); if (o.http && o.http.port) { console.log(o.http.port); process.exit(0); } } catch {}
    }
    process.exit(1);' "$TMP/sidecar.log"
}

# collector_port FIELD: the port the collector logged for `agents` or `http`.
collector_port() {
  node -e '
    for (const l of require("fs").readFileSync(process.argv[1], "utf8").split("\n")) {
      try { const o = JSON.parse(l); if (o.msg === "listening") { console.log(o[process.argv[2]].port); process.exit(0); } } catch {}
    }
    process.exit(1);' "$TMP/collector.log" "$1"
}

say "creating an access key (apm-collector keys create --project demo)"
ACCESS_KEY="$(node collector/dist/cli.js keys create --project demo --data-dir "$TMP/collector" | tail -n 1)"
echo "key for project demo created (kept in $TMP/collector, mode 0600; not printed here)"

say "creating a read token for the collector's API and page (apm-collector tokens create)"
READ_TOKEN="$(node collector/dist/cli.js tokens create --data-dir "$TMP/collector" | tail -n 1)"
echo "read token created (only its hash is stored; printed at the end for the page): from now on the API needs it"

# start_collector AGENTS_PORT HTTP_PORT (0 = a free port); its log goes to $TMP/collector.log.
start_collector() {
  : >"$TMP/collector.log"
  bg node collector/dist/cli.js run --host 127.0.0.1 --port "$1" --http "127.0.0.1:$2" --data-dir "$TMP/collector" \
    >"$TMP/collector.log" 2>&1
  COLLECTOR_PID=$!
  if ! wait_for 10 "$COLLECTOR_PID" "the collector" collector_port agents >/dev/null; then
    cat "$TMP/collector.log" >&2
    exit 1
  fi
}

# collector_sum NAME [FROM_MS TO_MS]: the sum of a counter's points stored at the collector.
collector_sum() {
  APM_COLLECTOR_TOKEN="$READ_TOKEN" node -e '
    const [port, name, from, to] = process.argv.slice(1);
    const q = `name=${encodeURIComponent(name)}&limit=10000${from ? `&from=${from}&to=${to}` : ""}`;
    fetch(`http://127.0.0.1:${port}/api/metrics?${q}`, { headers: { authorization: `Bearer ${process.env.APM_COLLECTOR_TOKEN}` } })
      .then(async (r) => { if (!r.ok) throw new Error(`GET /api/metrics -> ${r.status}`); console.log((await r.json()).reduce((a, p) => a + p.sum, 0)); })
      .catch((e) => { console.error(`demo: ${e.message}`); process.exit(1); });' "$API_PORT" "$@"
}

# settled_sum NAME: collector_sum once it has stopped changing (two reads 1.5 s apart), at most 30 s.
settled_sum() {
  local prev="" cur i
  for ((i = 0; i < 20; i++)); do
    cur="$(collector_sum "$1")"
    if [[ $cur == "$prev" && $cur != 0 ]]; then
      echo "$cur"
      return 0
    fi
    prev=$cur
    sleep 1.5
  done
  echo "$cur"
}

say "starting the collector (agents on 127.0.0.1, a free port; JSON API on 127.0.0.1)"
start_collector 0 0
COLLECTOR_PORT="$(collector_port agents)"
API_PORT="$(collector_port http)"
echo "collector pid $COLLECTOR_PID; agents on 127.0.0.1:$COLLECTOR_PORT; API on http://127.0.0.1:$API_PORT/"
node -e 'fetch(`http://127.0.0.1:${process.argv[1]}/api/agents`).then(async (r) => console.log(`GET /api/agents without a token -> ${r.status} ${(await r.json()).error.code}`))' "$API_PORT"

# Its retention database goes to $TMP/sidecar too, so every demo starts from a clean state
# (without --data-dir the sidecar would use /var/lib/apm-sidecar when writable).
say "starting the sidecar (transport tcp to 127.0.0.1:$COLLECTOR_PORT, socket $SOCK)"
APM_SIDECAR_ACCESS_KEY="$ACCESS_KEY" bg node sidecar/dist/cli.js run \
  --transport tcp \
  --server-host 127.0.0.1 \
  --server-port "$COLLECTOR_PORT" \
  --socket "$SOCK" \
  --data-dir "$TMP/sidecar" \
  --http 127.0.0.1:0 \
  --set agent_id=demo-agent \
  --set metric_interval_ms=2000 \
  --set flush_ms=500 \
  --set reconnect_schedule="$RETRY_MS" \
  --set standby_after_ms="$STANDBY_MS" \
  --set mute_after_attempts="$MUTE_AFTER" \
  >"$TMP/sidecar.log" 2>&1
SIDECAR_PID=$!
if ! wait_for 10 "$SIDECAR_PID" "the sidecar" http_port >/dev/null; then
  cat "$TMP/sidecar.log" >&2
  exit 1
fi
HTTP_PORT="$(http_port)"
echo "sidecar pid $SIDECAR_PID; /healthz, /readyz and /metrics on 127.0.0.1:$HTTP_PORT"

say "starting the example app (examples/http-app/server.js)"
APM_SIDECAR_SOCKET="$SOCK" PORT=0 bg node examples/http-app/server.js >"$TMP/app.out" 2>"$TMP/app.err"
APP_PID=$!
if ! wait_for 10 "$APP_PID" "the example app" grep -q '"listening"' "$TMP/app.out"; then
  cat "$TMP/app.err" >&2
  exit 1
fi
APP_PORT="$(sed -n 's/.*"listening":\([0-9]*\).*/\1/p' "$TMP/app.out" | head -n 1)"
echo "app pid $APP_PID listening on 127.0.0.1:$APP_PORT"

say "one GET /pay: the headers its outgoing call to /inventory carried (tx.outgoingHeaders())"
node -e '
  fetch(`http://127.0.0.1:${process.argv[1]}/pay`).then((r) => r.json()).then(
    (j) => console.log(JSON.stringify(j.inventory.received, null, 2)),
    (e) => { console.error(`demo: ${e.message}`); process.exit(1); });' "$APP_PORT"

say "load for ${LOAD_SECONDS} s (examples/http-app/load.js)"
node examples/http-app/load.js --port "$APP_PORT" --duration "$LOAD_SECONDS" --concurrency 4 2>&1
sleep 1 # one more shim flush (flush_ms=500) so the status below includes the last requests

say "apm-sidecar status"
node sidecar/dist/cli.js status --socket "$SOCK"

say "the sidecar's /readyz and a few lines of /metrics"
node -e '
  const base = `http://127.0.0.1:${process.argv[1]}`;
  (async () => {
    const r = await fetch(`${base}/readyz`);
    console.log(`GET /readyz -> ${r.status} ${(await r.text()).trim()}`);
    const m = await (await fetch(`${base}/metrics`)).text();
    for (const l of m.split("\n")) if (/^apm_sidecar_(state\{.*\} 1|received_total|queue_depth|shims)/.test(l)) console.log(l);
  })().catch((e) => { console.error(`demo: ${e.message}`); process.exit(1); });' "$HTTP_PORT"

say "the collector's count of requests (http.server.requests) before the outage"
BEFORE="$(settled_sum http.server.requests)"
echo "$BEFORE"

say "taking the collector away for ${OUTAGE_SECONDS} s (SIGTERM) while the load goes on"
echo "the sidecar retries every ${RETRY_MS} ms, goes to standby after ${STANDBY_MS} ms, is muted after ${MUTE_AFTER} failed attempts:"
bg node examples/http-app/load.js --port "$APP_PORT" --duration "$OUTAGE_SECONDS" --concurrency 2 2>"$TMP/load2.err" >/dev/null
LOAD_PID=$!
LOG_OFFSET="$(stat -c %s "$TMP/sidecar.log")"
OUTAGE_START="$(node -p 'Date.now()')"
bg node examples/follow-states.js "$TMP/sidecar.log" "$LOG_OFFSET" "$OUTAGE_START" active $((OUTAGE_SECONDS + 30))
FOLLOW_PID=$!
stop "$COLLECTOR_PID" "collector"
wait "$COLLECTOR_PID" 2>/dev/null || true
COLLECTOR_PID=""
sleep "$OUTAGE_SECONDS"
OUTAGE_END="$(node -p 'Date.now()')"
echo "  +$(node -p "((${OUTAGE_END} - ${OUTAGE_START}) / 1000).toFixed(1).padStart(5)") s  the collector is back (same ports, same data directory)"
start_collector "$COLLECTOR_PORT" "$API_PORT"
rc=0
wait "$FOLLOW_PID" || rc=$?
FOLLOW_PID=""
[[ $rc -eq 0 ]] || exit 1
wait "$LOAD_PID" 2>/dev/null || true
LOAD_PID=""
sed 's/^/  /' "$TMP/load2.err"

say "the metrics recorded during the outage arrived afterwards"
AFTER="$(settled_sum http.server.requests)"
DURING="$(collector_sum http.server.requests "$OUTAGE_START" "$OUTAGE_END")"
echo "http.server.requests at the collector: $BEFORE before the outage, $AFTER now (+$((AFTER - BEFORE)));"
echo "of them $DURING in the intervals of the outage, recorded while the collector was away"

say "stopping the app (SIGTERM: the shim flushes, waits for the ack, closes)"
stop "$APP_PID" "example app"
wait "$APP_PID" 2>/dev/null || true
APP_PID=""
tail -n 1 "$TMP/app.err"

say "stopping the sidecar (SIGTERM: it closes open intervals and writes every queued pack)"
kill -TERM "$SIDECAR_PID"
rc=0
wait "$SIDECAR_PID" || rc=$?
SIDECAR_PID=""
echo "sidecar exited with code $rc"
echo "its log (JSON lines on stdout; time and message shown; a message repeated in a row is shown once with its count):"
node -e '
  const rows = [];
  for (const l of require("fs").readFileSync(process.argv[1], "utf8").split("\n")) {
    if (l.trim() === "") continue;
    let o;
    try { o = JSON.parse(l); } catch { rows.push({ time: "", text: l }); continue; }
    // The retry loop of the outage: its attempts are summed up by the line that follows them.
    if (o.msg === "connecting upstream" || /^next upstream attempt/.test(o.msg)) continue;
    const text = `${o.msg}${o.app ? ` (${o.app} pid ${o.appPid})` : ""}`;
    const last = rows[rows.length - 1];
    if (last !== undefined && last.text === text) last.n++;
    else rows.push({ time: o.time, text, n: 1 });
  }
  for (const r of rows) console.log(`  ${r.time}  ${r.text}${r.n > 1 ? `  (×${r.n})` : ""}`);' "$TMP/sidecar.log"
[[ $rc -eq 0 ]] || exit "$rc"

say "what reached the collector (its JSON API on 127.0.0.1:$API_PORT)"
echo "(the collector was restarted during the outage: /api/stats counts what it received since; the stored data covers the whole run)"
APM_COLLECTOR_TOKEN="$READ_TOKEN" node examples/show-collector.js "$API_PORT"

say "the collector's page"
echo "http://127.0.0.1:$API_PORT/"
echo "read token (paste it into the page): $READ_TOKEN"
if [[ $HOLD == 1 ]]; then
  echo "the collector keeps running; Ctrl-C stops it and removes the demo's files"
  rc=0
  wait "$COLLECTOR_PID" || rc=$?
  COLLECTOR_PID=""
  echo "demo: the collector exited (code $rc)" >&2
  exit 1
fi

say "stopping the collector (DEMO_HOLD=0, or stdin is not a terminal)"
stop "$COLLECTOR_PID" "collector"
COLLECTOR_PID=""

say "done"
