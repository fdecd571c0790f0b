'use strict';
// Builds the shim as one minified, tree-shaken file (dist/shim.js), from the
// TypeScript sources of the shim and of the proto parts it uses. An app loads
// one small file instead of the whole proto package; tsc still emits the
// type declarations (dist/*.d.ts).
const { buildSync } = require('esbuild');
const { join } = require('node:path');

const root = join(__dirname, '..');
buildSync({
  entryPoints: [join(__dirname, 'src', 'index.ts')],
  outfile: join(__dirname, 'dist', 'shim.js'),
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
});
