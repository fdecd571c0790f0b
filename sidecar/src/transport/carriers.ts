import { HttpTunnelSocket } from '../upstream/http-tunnel';
import { type Carrier, dialTcp } from '../upstream/session';

export interface CarrierOptions {
  soTimeoutMs: number;
  /** net_send_max_bytes: responses may carry several frames of up to this size. */
  maxSendBytes: number;
}

/**
 * The carriers of an upstream session, behind one interface (`Carrier`): a TCP socket, or the
 * same bytes tunnelled over HTTP POSTs (the Introscope "HTTP tunneling" mode). A carrier moves
 * bytes; it knows nothing of frames, attempts or the sidecar state.
 */
export function dialerFor(kind: 'tcp' | 'http', o: CarrierOptions): (host: string, port: number) => Carrier {
  if (kind === 'tcp') return dialTcp;
  return (host, port) =>
    new HttpTunnelSocket({
      host,
      port,
      // Poll often enough that the session's so_timeout never fires on a quiet but healthy tunnel.
      pollMs: Math.max(10, Math.min(1000, Math.floor(o.soTimeoutMs / 6))),
      requestTimeoutMs: o.soTimeoutMs,
      maxResponseBytes: Math.max(o.maxSendBytes, 1 << 20) * 4,
    });
}
