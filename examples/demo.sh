#!/usr/bin/env bash
# apm-sidecar end to end on this machine, in about 20 seconds:
#
#   collector (apm-collector: SQLite store, JSON API on 127.0.0.1)
#     ▲ encrypted TCP session (access key created here with `apm-collector keys create`)
#   sidecar (transport tcp)
#     ▲ Unix socket $TMP/apm.sock
#   example app (examples/http-app, instrumented with @apm-sidecar/shim)
#     ▲ HTTP on 127.0.0.1
#   load generator (examples/http-app/load.js, LOAD_SECONDS, default 6)
#
# Then it prints `apm-sidecar status`, the sidecar's /readyz and a few /metrics lines,
# stops the app and the sidecar (SIGTERM: the sidecar flushes open intervals), and shows
# what reached the collector through its JSON API.
#
# Run from anywhere after `npm ci && npm run build` (or `make demo`, which does both).
# KEEP=1 keeps the temporary directory (logs, packs) for a look afterwards.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

LOAD_SECONDS="${LOAD_SECONDS:-6}"
if ! [[ $LOAD_SECONDS =~ ^[0-9]+$ ]] || ((LOAD_SECONDS < 1 || LOAD_SECONDS > 120)); then
  echo "demo: LOAD_SECONDS must be an integer 1..120, got '$LOAD_SECONDS'" >&2
  exit 2
fi

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
  stop "$APP_PID" "example app"
  stop "$SIDECAR_PID" "sidecar"
  stop "$COLLECTOR_PID" "collector"
  wait 2>/dev/null || true
  if [[ -n ${KEEP:-} ]]; then
    echo "demo: files kept in $TMP" >&2
  else
    rm -rf "$TMP"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

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
echo "read token created (only its hash is stored; not printed here): from now on the API needs it"

say "starting the collector (agents on 127.0.0.1, a free port; JSON API on 127.0.0.1)"
node collector/dist/cli.js run --host 127.0.0.1 --port 0 --http 127.0.0.1:0 --data-dir "$TMP/collector" \
  >"$TMP/collector.log" 2>&1 &
COLLECTOR_PID=$!
if ! wait_for 10 "$COLLECTOR_PID" "the collector" collector_port agents >/dev/null; then
  cat "$TMP/collector.log" >&2
  exit 1
fi
COLLECTOR_PORT="$(collector_port agents)"
API_PORT="$(collector_port http)"
echo "collector pid $COLLECTOR_PID; agents on 127.0.0.1:$COLLECTOR_PORT; API on http://127.0.0.1:$API_PORT/"
node -e 'fetch(`http://127.0.0.1:${process.argv[1]}/api/agents`).then(async (r) => console.log(`GET /api/agents without a token -> ${r.status} ${(await r.json()).error.code}`))' "$API_PORT"

# Its retention database goes to $TMP/sidecar too, so every demo starts from a clean state
# (without --data-dir the sidecar would use /var/lib/apm-sidecar when writable).
say "starting the sidecar (transport tcp to 127.0.0.1:$COLLECTOR_PORT, socket $SOCK)"
APM_SIDECAR_ACCESS_KEY="$ACCESS_KEY" node sidecar/dist/cli.js run \
  --transport tcp \
  --server-host 127.0.0.1 \
  --server-port "$COLLECTOR_PORT" \
  --socket "$SOCK" \
  --data-dir "$TMP/sidecar" \
  --http 127.0.0.1:0 \
  --set agent_id=demo-agent \
  --set metric_interval_ms=2000 \
  --set flush_ms=500 \
  >"$TMP/sidecar.log" 2>&1 &
SIDECAR_PID=$!
if ! wait_for 10 "$SIDECAR_PID" "the sidecar" http_port >/dev/null; then
  cat "$TMP/sidecar.log" >&2
  exit 1
fi
HTTP_PORT="$(http_port)"
echo "sidecar pid $SIDECAR_PID; /healthz, /readyz and /metrics on 127.0.0.1:$HTTP_PORT"

say "starting the example app (examples/http-app/server.js)"
APM_SIDECAR_SOCKET="$SOCK" PORT=0 node examples/http-app/server.js >"$TMP/app.out" 2>"$TMP/app.err" &
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
echo "its log (JSON lines on stdout; time and message shown):"
node -e '
  for (const l of require("fs").readFileSync(process.argv[1], "utf8").split("\n")) {
    if (l.trim() === "") continue;
    try { const o = JSON.parse(l); console.log(`  ${o.time}  ${o.msg}${o.app ? ` (${o.app} pid ${o.appPid})` : ""}`); }
    catch { console.log(`  ${l}`); }
  }' "$TMP/sidecar.log"
[[ $rc -eq 0 ]] || exit "$rc"

say "what reached the collector (its JSON API on 127.0.0.1:$API_PORT)"
APM_COLLECTOR_TOKEN="$READ_TOKEN" node examples/show-collector.js "$API_PORT"

say "stopping the collector"
stop "$COLLECTOR_PID" "collector"
COLLECTOR_PID=""

say "done"
