import { Reader, Writer } from '../buffer';
import { MalformedMessageError, ProtocolVersionError } from '../errors';
import { type Obj, json, nonNegInt, optStr, parseJson, str } from './json';
import {
  type ControlMessage,
  type ControlResult,
  type ErrorMessage,
  HELLO_SECRET_MAX,
  HELLO_SECRET_MIN,
  type Hello,
  MAX_SEQ,
  MessageType,
  PROTOCOL_VERSION,
  type StateChange,
  type Welcome,
  isSidecarState,
} from './types';

// Session and control messages: the handshake, state, acks, heartbeats, errors and the CLI's status/control.

export function encodeHello(m: Hello): Buffer {
  return json(MessageType.Hello, m);
}

export function decodeHello(p: Buffer): Hello {
  const o = parseJson(p, 'hello');
  const v = nonNegInt(o, 'v', 'hello');
  if (v !== PROTOCOL_VERSION) throw new ProtocolVersionError(v, PROTOCOL_VERSION);
  const instanceId = str(o, 'instanceId', 'hello', 128);
  if (instanceId.length === 0) throw new MalformedMessageError('hello.instanceId is empty');
  const secret = str(o, 'secret', 'hello', HELLO_SECRET_MAX);
  if (secret.length < HELLO_SECRET_MIN) throw new MalformedMessageError(`hello.secret shorter than ${HELLO_SECRET_MIN}`);
  const seq = nonNegInt(o, 'seq', 'hello');
  if (seq > MAX_SEQ) throw new MalformedMessageError('hello.seq beyond u48');
  const m: Hello = {
    v,
    app: str(o, 'app', 'hello', 256),
    pid: nonNegInt(o, 'pid', 'hello'),
    shimVersion: str(o, 'shimVersion', 'hello', 64),
    instanceId,
    secret,
    seq,
  };
  const host = optStr(o, 'host', 'hello');
  if (host !== undefined) m.host = host;
  const runtime = optStr(o, 'runtime', 'hello');
  if (runtime !== undefined) m.runtime = runtime;
  return m;
}

export function encodeWelcome(m: Welcome): Buffer {
  return json(MessageType.Welcome, m);
}

export function decodeWelcome(p: Buffer): Welcome {
  const o = parseJson(p, 'welcome');
  const state = o.state;
  if (!isSidecarState(state)) throw new MalformedMessageError('welcome.state is not a state');
  const s = o.settings;
  if (typeof s !== 'object' || s === null) throw new MalformedMessageError('welcome.settings must be an object');
  const so = s as Obj;
  return {
    state,
    settings: {
      flushMs: nonNegInt(so, 'flushMs', 'welcome.settings'),
      maxFrameBytes: nonNegInt(so, 'maxFrameBytes', 'welcome.settings'),
      ...(so.bufferBytes !== undefined && { bufferBytes: nonNegInt(so, 'bufferBytes', 'welcome.settings') }),
    },
    ackedSeq: nonNegInt(o, 'ackedSeq', 'welcome'),
    agentId: str(o, 'agentId', 'welcome', 256),
    sidecarVersion: str(o, 'sidecarVersion', 'welcome', 64),
  };
}

export function encodeStateChange(m: StateChange): Buffer {
  return json(MessageType.StateChange, m);
}

export function decodeStateChange(p: Buffer): StateChange {
  const o = parseJson(p, 'state');
  if (!isSidecarState(o.state)) throw new MalformedMessageError('state.state is not a state');
  return { state: o.state, cause: str(o, 'cause', 'state', 1024) };
}

export function encodeHeartbeat(ts: number): Buffer {
  return new Writer(16).f64(ts).frame(MessageType.Heartbeat);
}

export function decodeHeartbeat(p: Buffer): number {
  const r = new Reader(p);
  const ts = r.f64();
  r.expectEnd('heartbeat');
  return ts;
}

/** Cumulative: every durable frame with seq ≤ this one is committed. */
export function encodeAck(seq: number): Buffer {
  return new Writer(16).u48(seq).frame(MessageType.Ack);
}

export function decodeAck(p: Buffer): number {
  const r = new Reader(p);
  const seq = r.u48();
  r.expectEnd('ack');
  return seq;
}

export function encodeError(m: ErrorMessage): Buffer {
  return json(MessageType.Error, m);
}

export function decodeError(p: Buffer): ErrorMessage {
  const o = parseJson(p, 'error');
  return { code: str(o, 'code', 'error', 128), message: str(o, 'message', 'error', 4096) };
}

export function encodeStatusRequest(): Buffer {
  return json(MessageType.StatusRequest, {});
}

export function encodeStatusResponse(status: unknown): Buffer {
  return json(MessageType.StatusResponse, status);
}

export function decodeStatusResponse(p: Buffer): Obj {
  return parseJson(p, 'status');
}

export function encodeControl(m: ControlMessage): Buffer {
  return json(MessageType.Control, m);
}

export function decodeControl(p: Buffer): ControlMessage {
  return { command: str(parseJson(p, 'control'), 'command', 'control', 64) };
}

export function encodeControlResult(m: ControlResult): Buffer {
  return json(MessageType.ControlResult, m);
}

export function decodeControlResult(p: Buffer): ControlResult {
  const o = parseJson(p, 'controlResult');
  if (typeof o.ok !== 'boolean') throw new MalformedMessageError('controlResult.ok must be a boolean');
  return { ok: o.ok, message: str(o, 'message', 'controlResult', 4096) };
}
