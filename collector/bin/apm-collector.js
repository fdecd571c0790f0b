#!/usr/bin/env node
'use strict';
// The `apm-collector` command. It lives outside dist/ so that npm links it at install time:
// npm skips a bin whose file does not exist yet, and dist/ only appears with the build.
const { join } = require('node:path');

const cli = join(__dirname, '..', 'dist', 'cli.js');
let main;
try {
  ({ main } = require(cli));
} catch (err) {
  if (err && err.code === 'MODULE_NOT_FOUND' && String(err.message).includes(cli)) {
    process.stderr.write('apm-collector: not built yet: run `make build` (or `npm run build`) in the checkout first\n');
    process.exit(1);
  }
  throw err;
}
main(process.argv);
