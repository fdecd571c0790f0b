import { ApmError } from '@apm-sidecar/proto';

/** No TCP connection to the collector within connect_timeout. */
export class ConnectTimeoutError extends ApmError {
  constructor(ms: number) {
    super('ERR_CONNECT_TIMEOUT', `connect timed out after ${ms} ms`);
  }
}

/**
 * The connection to the collector failed at the socket level. The code is the system's
 * (ECONNREFUSED, ECONNRESET, ...) when it gives one, so the status shows what happened.
 */
export class UpstreamSocketError extends ApmError {
  constructor(err: NodeJS.ErrnoException) {
    super(err.code ?? 'ERR_SOCKET', err.message);
  }
}

/** Nothing was received from the collector for tcp_so_timeout. */
export class ReadTimeoutError extends ApmError {
  constructor(ms: number) {
    super('ERR_SO_TIMEOUT', `upstream read timeout: nothing received for ${ms} ms`);
  }
}

/** The collector answered the session with a license that is not granted. */
export class NoLicenseError extends ApmError {
  constructor(reason: string) {
    super('ERR_NO_LICENSE', reason);
  }
}

/**
 * A batch was not delivered because the upstream session is down or ended before the collector
 * acknowledged it; it stays retained and is sent again on a later session.
 */
export class UpstreamDownError extends ApmError {
  constructor(cause: string) {
    super('ERR_UPSTREAM_DOWN', cause);
  }
}

/**
 * An HTTP tunnel request was answered with bytes that are not HTTP (Node's parser failed with an
 * HPE_ code): the address is not the collector's HTTP port, most often its agent port, which
 * speaks apm-sidecar frames.
 */
export class NotHttpPeerError extends ApmError {
  constructor(parserCode: string) {
    super(
      'ERR_NOT_HTTP_PEER',
      `the peer does not answer HTTP — is this the agent (TCP) port? Transport http needs the collector's HTTP address (${parserCode})`,
    );
  }
}

/** An HTTP tunnel request got no response within its request timeout. */
export class TunnelTimeoutError extends ApmError {
  constructor(ms: number) {
    super('ERR_TUNNEL_TIMEOUT', `no tunnel response within ${ms} ms`);
  }
}

/** An HTTP tunnel response carried more bytes than the sidecar accepts for one. */
export class TunnelResponseTooLargeError extends ApmError {
  constructor(max: number) {
    super('ERR_FRAME_TOO_LARGE', `tunnel response larger than ${max} bytes`);
  }
}

/**
 * The collector answered a tunnel request with an HTTP status other than 200: ERR_TUNNEL_SESSION for
 * 410 (the tunnel session expired), the collector's own code when its body names one
 * (ERR_TOO_MANY_CONNECTIONS, ...), else ERR_TUNNEL_HTTP.
 */
export class TunnelHttpError extends ApmError {
  readonly status: number;
  constructor(status: number, body: string) {
    super(status === 410 ? 'ERR_TUNNEL_SESSION' : (collectorCode(body) ?? 'ERR_TUNNEL_HTTP'), `tunnel answered HTTP ${status}: ${body}`);
    this.status = status;
  }
}

/** The collector's typed refusal in an error body (`{ error: { code } }`), if there is one. */
function collectorCode(text: string): string | null {
  try {
    const code = (JSON.parse(text) as { error?: { code?: unknown } }).error?.code;
    return typeof code === 'string' && /^ERR_[A-Z0-9_]{1,60}$/.test(code) ? code : null;
  } catch {
    return null;
  }
}
