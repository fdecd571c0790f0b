import type { EventEmitter } from 'node:events';
import { UpstreamType } from '@apm-sidecar/proto/upstream';
import type { CollectorStats } from './types';

/**
 * An agent connection as its carrier sees it, and what is said in clear before a session has
 * keys: the TCP server and the HTTP tunnel both carry AgentConnection over a Wire.
 */
export interface AgentLink {
  /** The ClientHello was accepted (ServerHello sent) and the connection is neither refused nor closed. */
  readonly helloAccepted: boolean;
  /** Resolves once every frame received so far was handled (stored, acked or refused). */
  readonly idle: Promise<void>;
}

export type RejectReason = keyof CollectorStats['rejected'];

/** The largest frame accepted before the agent is authenticated (DESIGN §7): a handshake message is far smaller. */
export const PREAUTH_MAX_FRAME_BYTES = 4096;

/**
 * What an agent connection needs of its carrier: a TCP socket, or a tunnel
 * session whose bytes travel in HTTP request and response bodies.
 * Emits 'data' (Buffer), 'error' and 'close'.
 */
export interface Wire extends EventEmitter {
  write(chunk: Buffer): boolean;
  end(): void;
  destroy(): void;
  /** Stop reading (a refused peer's further bytes are not taken in while the refusal flushes). */
  pause?(): unknown;
  /** Read again (after frames waiting for the store were handled). */
  resume?(): unknown;
  readonly remoteAddress?: string | undefined;
}

export function remoteIp(wire: Wire): string {
  return wire.remoteAddress ?? '';
}

/** A clear-text refusal (the peer has no session keys yet): HandshakeRejected with `{ code, message }`. */
export function refusalFrame(code: string, message: string): Buffer {
  const body = Buffer.from(JSON.stringify({ code, message }));
  const frame = Buffer.allocUnsafe(5 + body.length);
  frame.writeUInt32LE(body.length + 1, 0);
  frame[4] = UpstreamType.HandshakeRejected;
  body.copy(frame, 5);
  return frame;
}
