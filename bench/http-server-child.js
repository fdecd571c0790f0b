'use strict';
// A trivial HTTP server for bench/http.js, in one of three variants (argv[2]):
//   bare  no instrumentation
//   apm   apm.instrumentHttp() with the shim connected to a real sidecar (APM_SIDECAR_SOCKET)
//   otel  @opentelemetry/instrumentation-http with a tracer provider whose spans go to a
//         batch processor and an exporter that drops them (instrumentation cost, no export)
// Every request answers 'ok'; with ?downstream=1 it first calls DOWNSTREAM_PORT through node:http,
// so the outgoing instrumentation (correlation headers / client spans) is measured too.
// Prints {"ready":true,"port":N}; exits on SIGTERM.
const { join } = require('node:path');

const variant = process.argv[2];
let apm = null;
if (variant === 'apm') {
  apm = require(join(__dirname, '..', 'client-shim')).connect({ app: 'bench-http', instrumentHttp: true });
} else if (variant === 'otel') {
  const { NodeTracerProvider, BatchSpanProcessor } = require('@opentelemetry/sdk-trace-node');
  const { HttpInstrumentation } = require('@opentelemetry/instrumentation-http');
  const exporter = {
    // ExportResultCode.SUCCESS is 0 (@opentelemetry/core): the spans are dropped here.
    export: (_spans, done) => done({ code: 0 }),
    shutdown: () => Promise.resolve(),
  };
  const provider = new NodeTracerProvider({ spanProcessors: [new BatchSpanProcessor(exporter)] });
  provider.register();
  // Enabled on construction: hooks require('node:http') and uses the global provider registered above.
  new HttpInstrumentation();
}
// Loaded after the instrumentation, as an app would (OpenTelemetry patches node:http on require).
const http = require('node:http');

const downstreamPort = Number(process.env.DOWNSTREAM_PORT || 0);
const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });

const server = http.createServer((req, res) => {
  if (downstreamPort > 0 && req.url.includes('downstream=1')) {
    http
      .get({ host: '127.0.0.1', port: downstreamPort, path: '/leaf', agent }, (r) => {
        r.resume();
        r.on('end', () => res.end('ok'));
      })
      .on('error', () => {
        res.statusCode = 502;
        res.end();
      });
    return;
  }
  res.end('ok');
});
server.keepAliveTimeout = 60000;
server.listen(0, '127.0.0.1', () => process.stdout.write(`${JSON.stringify({ ready: true, port: server.address().port })}\n`));
process.on('SIGTERM', () => {
  server.close();
  server.closeAllConnections();
  Promise.resolve(apm?.close()).then(() => process.exit(0));
});
