'use strict';
/**
 * statsd's own UDP server (node_modules/statsd/servers/udp.js, 0.9.0) with one change: the same
 * 4 MiB receive buffer the sidecar's dogstatsd_udp listener asks for, so neither receiver is judged
 * by the kernel's default buffer.
 */
const dgram = require('node:dgram');

exports.start = function start(config, callback) {
  const server = dgram.createSocket({ type: config.address_ipv6 ? 'udp6' : 'udp4', recvBufferSize: 4 * 1024 * 1024 }, callback);
  server.bind(config.port || 8125, config.address || undefined);
  this.server = server;
  return true;
};
