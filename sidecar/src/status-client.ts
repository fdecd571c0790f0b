import { createConnection } from 'node:net';
import {
  RemoteError,
  UnexpectedMessageError,
  DEFAULT_MAX_FRAME_BYTES,
  FrameParser,
  MessageType,
  decodeControlResult,
  decodeError,
  decodeStatusResponse,
  encodeControl,
  encodeStatusRequest,
  type ControlResult,
} from '@apm-sidecar/proto';
import { NotRunningError, StatusTimeoutError } from './cli-errors';

/** Ask a running sidecar over its socket: one request frame, one response frame. */
function ask<T>(path: string, request: Buffer, expect: number, decode: (p: Buffer) => T, timeoutMs: number): Promise<T> {
  return new Promise((resolve, reject) => {
    const s = createConnection({ path });
    const done = (err: Error | null, v?: T) => {
      clearTimeout(timer);
      s.destroy();
      if (err !== null) reject(err);
      else resolve(v as T);
    };
    const timer = setTimeout(() => done(new StatusTimeoutError(path, timeoutMs)), timeoutMs);
    const parser = new FrameParser(16 * DEFAULT_MAX_FRAME_BYTES, (type, payload) => {
      if (type === expect) done(null, decode(payload));
      else if (type === MessageType.Error) {
        const e = decodeError(payload);
        done(new RemoteError(e.code, e.message));
      } else done(new UnexpectedMessageError(`sidecar answered with message type ${type}`));
    });
    s.on('connect', () => s.write(request));
    s.on('data', (c: Buffer) => {
      try {
        parser.push(c);
      } catch (err) {
        done(err as Error);
      }
    });
    s.on('error', (err: NodeJS.ErrnoException) => {
      const why = err.code === 'ENOENT' || err.code === 'ECONNREFUSED' ? 'no sidecar is listening' : err.message;
      done(new NotRunningError(`${why} on ${path}`));
    });
    s.on('close', () => done(new NotRunningError(`the sidecar on ${path} closed the connection`)));
  });
}

export function requestStatus(path: string, timeoutMs = 3000): Promise<Record<string, unknown>> {
  return ask(path, encodeStatusRequest(), MessageType.StatusResponse, decodeStatusResponse, timeoutMs);
}

export function requestControl(path: string, command: string, timeoutMs = 5000): Promise<ControlResult> {
  return ask(path, encodeControl({ command }), MessageType.ControlResult, decodeControlResult, timeoutMs);
}
