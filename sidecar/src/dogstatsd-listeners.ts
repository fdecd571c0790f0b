import { createSocket as createUdp } from 'node:dgram';
import { chmodSync, existsSync, lstatSync, unlinkSync } from 'node:fs';
import { isIPv6 } from 'node:net';
import type { Logger } from './logger';
import { SocketPathKindError } from './socket-path';

export interface DogStatsdListenOptions {
  udp: { host: string; port: number } | null;
  socketPath: string;
  onPacket: (buf: Buffer) => void;
  log: Logger;
}

export interface DogStatsdListeners {
  udpPort: number | null;
  close(): void;
}

/** DogStatsD on UDP (`dogstatsd_udp`) and/or a Unix datagram socket (`dogstatsd_socket`). */
export async function listenDogStatsd(o: DogStatsdListenOptions): Promise<DogStatsdListeners> {
  const closers: (() => void)[] = [];
  let udpPort: number | null = null;
  if (o.udp !== null) {
    const { host, port } = o.udp;
    const s = createUdp({ type: isIPv6(host) ? 'udp6' : 'udp4', recvBufferSize: 4 * 1024 * 1024 });
    await new Promise<void>((resolve, reject) => {
      s.once('error', reject);
      s.bind(port, host, () => {
        s.off('error', reject);
        resolve();
      });
    });
    s.on('message', (msg: Buffer) => o.onPacket(msg));
    s.on('error', (err) => o.log.warn({ err: err.message }, 'dogstatsd UDP socket error'));
    udpPort = s.address().port;
    o.log.info({ dogstatsd: { udp: `${host}:${udpPort}` } }, 'listening for DogStatsD on UDP');
    closers.push(() => s.close());
  }
  if (o.socketPath.length > 0) {
    const path = o.socketPath;
    if (existsSync(path)) {
      if (!lstatSync(path).isSocket()) throw new SocketPathKindError(`dogstatsd_socket: ${path} exists and is not a socket; refusing to replace it`);
      // A datagram socket cannot be probed for a live listener; a leftover file is replaced.
      unlinkSync(path);
    }
    const { createSocket } = await import('unix-dgram');
    const s = createSocket('unix_dgram', (msg: Buffer) => o.onPacket(msg));
    s.on('error', (err: Error) => o.log.warn({ err: err.message }, 'dogstatsd Unix socket error'));
    s.bind(path);
    chmodSync(path, 0o660);
    o.log.info({ dogstatsd: { socket: path } }, 'listening for DogStatsD on a Unix datagram socket');
    closers.push(() => {
      s.close();
      try {
        unlinkSync(path);
      } catch {
        // gone already
      }
    });
  }
  return {
    udpPort,
    close: () => {
      for (const c of closers) c();
    },
  };
}
