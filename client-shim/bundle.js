'use strict';
// Builds the shim as minified, tree-shaken files from the TypeScript sources of the shim and of
// the proto parts it uses: dist/shim.js, what an app loads, and dist/shim-http.js, the HTTP
// auto-instrumentation, loaded only when the app asks for it (apm.instrumentHttp()). An app loads
// one small file instead of the whole proto package; tsc still emits the type declarations
// (dist/*.d.ts).
//
//   node client-shim/bundle.js [--sizes]   --sizes: also print the bytes each source module adds to each bundle
const { build } = require('esbuild');
const { join, relative } = require('node:path');

const root = join(__dirname, '..');
const common = {
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'cjs',
  minify: true,
  treeShaking: true,
  sourcemap: true,
  legalComments: 'none',
  alias: { '@apm-sidecar/proto': join(root, 'proto', 'src', 'index.ts') },
  logLevel: 'warning',
  metafile: process.argv.includes('--sizes'),
};

/** One line per source module, largest first, from esbuild's metafile. */
function sizes(result) {
  const lines = [];
  for (const [file, out] of Object.entries(result.metafile.outputs)) {
    if (file.endsWith('.map')) continue;
    lines.push(`${relative(root, file)}: ${out.bytes} B`);
    const inputs = Object.entries(out.inputs).sort((a, b) => b[1].bytesInOutput - a[1].bytesInOutput);
    for (const [input, { bytesInOutput }] of inputs) lines.push(`  ${String(bytesInOutput).padStart(6)}  ${input}`);
  }
  return lines.join('\n');
}

/** The client's require('./http-instrumentation') stays a require, of the other bundle. */
const httpApart = {
  name: 'http-apart',
  setup(build) {
    build.onResolve({ filter: /^\.\/http-instrumentation$/ }, () => ({ path: './shim-http.js', external: true }));
  },
};

Promise.all([
  build({ ...common, entryPoints: [join(__dirname, 'src', 'index.ts')], outfile: join(__dirname, 'dist', 'shim.js'), plugins: [httpApart] }),
  build({ ...common, entryPoints: [join(__dirname, 'src', 'http-instrumentation.ts')], outfile: join(__dirname, 'dist', 'shim-http.js') }),
])
  .then((results) => {
    if (common.metafile) process.stdout.write(`${results.map(sizes).join('\n')}\n`);
  })
  .catch(() => {
    // esbuild has printed the errors.
    process.exitCode = 1;
  });
