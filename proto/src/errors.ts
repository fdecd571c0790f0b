/**
 * One error family for everything that crosses a boundary. `code` is stable and
 * is what programs (and tests) match on; `message` is for people.
 */
export class ApmError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.name = new.target.name;
    this.code = code;
  }
}

/** A frame header declared more bytes than the receiver accepts. Checked before buffering. */
export class FrameTooLargeError extends ApmError {
  readonly declared: number;
  readonly max: number;
  constructor(declared: number, max: number) {
    super('ERR_FRAME_TOO_LARGE', `frame declares ${declared} bytes, maximum is ${max}`);
    this.declared = declared;
    this.max = max;
  }
}

/**
 * The peer answered with text instead of apm-sidecar frames: the address is some other service,
 * most often the collector's HTTP port given to transport tcp.
 */
export class ForeignPeerError extends ApmError {
  /** What it looked like: an HTTP response, or other text (a banner). */
  readonly looksLike: 'http' | 'text';
  constructor(looksLike: 'http' | 'text', firstLine: string) {
    super(
      'ERR_NOT_APM_PEER',
      looksLike === 'http'
        ? `the peer does not speak the apm-sidecar protocol — is this the HTTP port? It answered "${firstLine}"`
        : `the peer does not speak the apm-sidecar protocol — is this the right port? It sent "${firstLine}"`,
    );
    this.looksLike = looksLike;
  }
}

/** A frame with length 0 has no type byte: never valid. */
export class EmptyFrameError extends ApmError {
  constructor() {
    super('ERR_FRAME_EMPTY', 'frame declares length 0 (no type byte)');
  }
}

/** The stream ended in the middle of a frame. */
export class TruncatedFrameError extends ApmError {
  readonly pendingBytes: number;
  constructor(pendingBytes: number) {
    super('ERR_FRAME_TRUNCATED', `stream ended with ${pendingBytes} bytes of an incomplete frame`);
    this.pendingBytes = pendingBytes;
  }
}

/** The type byte names no message this protocol knows. */
export class UnknownMessageTypeError extends ApmError {
  readonly type: number;
  constructor(type: number) {
    super('ERR_UNKNOWN_MESSAGE_TYPE', `unknown message type ${type}`);
    this.type = type;
  }
}

/** The payload of a known message type does not decode (truncated, bad JSON, wrong field types). */
export class MalformedMessageError extends ApmError {
  constructor(what: string) {
    super('ERR_MALFORMED_MESSAGE', `malformed message: ${what}`);
  }
}

/** A peer speaks a protocol version this side does not. */
export class ProtocolVersionError extends ApmError {
  readonly version: number;
  constructor(version: number, supported: number) {
    super('ERR_PROTOCOL_VERSION', `protocol version ${version} is not supported (this side speaks ${supported})`);
    this.version = version;
  }
}

/** A well-formed message that is not allowed here (data before hello, a sidecar-only message from a shim, ...). */
export class UnexpectedMessageError extends ApmError {
  constructor(what: string) {
    super('ERR_UNEXPECTED_MESSAGE', what);
  }
}

/** The receiver already serves as many connections as it allows. */
export class TooManyConnectionsError extends ApmError {
  constructor(max: number) {
    super('ERR_TOO_MANY_CONNECTIONS', `connection limit of ${max} reached`);
  }
}

/** A Hello for a known shim instance with a secret that is not the one it was bound to. */
export class InstanceSecretError extends ApmError {
  constructor() {
    super('ERR_INSTANCE_SECRET', 'this instance id is bound to another secret (or reserved)');
  }
}

/** A durable seq further ahead than the shim could have assigned since its Hello. */
export class SeqJumpError extends ApmError {
  constructor(seq: number, ceiling: number, maxJump: number) {
    super('ERR_SEQ_JUMP', `seq ${seq} is more than ${maxJump} past the highest seq this shim could have sent (${ceiling})`);
  }
}

/** The peer left more than the allowed bytes of replies unread. */
export class PeerNotReadingError extends ApmError {
  constructor(unread: number, max: number) {
    super('ERR_PEER_NOT_READING', `peer left ${unread} bytes unread (maximum ${max})`);
  }
}

/** The peer sent no Hello within the deadline. */
export class HelloTimeoutError extends ApmError {
  constructor(ms: number) {
    super('ERR_HELLO_TIMEOUT', `no Hello within ${ms} ms`);
  }
}

/** A failure this side did not anticipate (a bug, not bad input); the message says what failed. */
export class InternalError extends ApmError {
  constructor(what: string) {
    super('ERR_INTERNAL', what);
  }
}

/**
 * An error the other side reported in an Error message (the sidecar to `apm-sidecar status`, the
 * collector to the sidecar). It carries that side's code unchanged, so the code is one of this catalog's.
 */
export class RemoteError extends ApmError {
  constructor(code: string, message: string) {
    super(code, message);
  }
}
