import { type Server, type Socket, createServer, connect as tcpConnect } from 'node:net';

/**
 * A real TCP relay (node:net) between a sidecar and the collector that sees whole frames
 * (u32le length | u8 type | payload) in both directions and can drop or inject them, as a hostile
 * or broken middlebox would.
 *
 *   dropUp(type)   true: the agent → collector frame is not forwarded (counted in droppedUp)
 *   dropDown(type) the same for collector → agent frames (counted in droppedDown)
 *   injectDown(f)  write a frame to every agent, between two collector frames
 */
export class FrameRelay {
  dropUp: (type: number) => boolean = () => false;
  droppedUp = 0;
  dropDown: (type: number) => boolean = () => false;
  droppedDown = 0;
  accepted = 0;
  private readonly server: Server;
  private readonly clients = new Set<Socket>();
  private readonly sockets = new Set<Socket>();
  port = 0;

  constructor(private readonly targetPort: number) {
    this.server = createServer((client) => this.accept(client));
  }

  listen(): Promise<number> {
    return new Promise((resolve) =>
      this.server.listen(0, '127.0.0.1', () => {
        this.port = (this.server.address() as { port: number }).port;
        resolve(this.port);
      }),
    );
  }

  injectDown(frame: Buffer): void {
    for (const c of this.clients) c.write(frame);
  }

  close(): void {
    for (const s of this.sockets) s.destroy();
    this.server.close();
  }

  private accept(client: Socket): void {
    this.accepted++;
    const upstream = tcpConnect({ host: '127.0.0.1', port: this.targetPort });
    this.sockets.add(client);
    this.sockets.add(upstream);
    this.clients.add(client);
    let up = Buffer.alloc(0);
    client.on('data', (d: Buffer) => {
      up = Buffer.concat([up, d]);
      while (up.length >= 4 && up.length >= 4 + up.readUInt32LE(0)) {
        const frame = up.subarray(0, 4 + up.readUInt32LE(0));
        up = up.subarray(frame.length);
        if (this.dropUp(frame[4] as number)) this.droppedUp++;
        else upstream.write(frame);
      }
    });
    // Downstream whole frames too, so an injected frame never lands inside one of the collector's.
    let down = Buffer.alloc(0);
    upstream.on('data', (d: Buffer) => {
      down = Buffer.concat([down, d]);
      while (down.length >= 4 && down.length >= 4 + down.readUInt32LE(0)) {
        const frame = down.subarray(0, 4 + down.readUInt32LE(0));
        down = down.subarray(frame.length);
        if (this.dropDown(frame[4] as number)) this.droppedDown++;
        else client.write(frame);
      }
    });
    const end = () => {
      client.destroy();
      upstream.destroy();
      this.clients.delete(client);
      this.sockets.delete(client);
      this.sockets.delete(upstream);
    };
    for (const s of [client, upstream]) {
      s.on('close', end);
      s.on('error', end);
    }
  }
}
