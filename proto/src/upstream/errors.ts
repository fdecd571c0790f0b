import { ApmError } from '../errors';

/** The access key is unknown, or a peer could not prove it holds it. Counted as rejected.badKey. */
export class BadKeyError extends ApmError {
  constructor(message: string) {
    super('ERR_BAD_KEY', message);
  }
}

/** The collector failed to prove it holds the access key: the agent does not talk to it. */
export class ServerProofError extends ApmError {
  constructor() {
    super('ERR_SERVER_PROOF', 'the collector could not prove it holds the access key');
  }
}

/** A sealed frame failed authentication (modified in transit, or sealed under another key). */
export class TamperedFrameError extends ApmError {
  constructor(kind: string) {
    super('ERR_TAMPERED', `${kind} frame failed authentication`);
  }
}

/** A sealed frame's counter is not greater than the last one accepted (replayed or reordered). */
export class ReplayError extends ApmError {
  constructor(counter: number, last: number) {
    super('ERR_REPLAY', `frame counter ${counter} is not greater than the last accepted ${last}`);
  }
}

/**
 * A sealed frame's counter is greater than the next one: frames in between were lost (dropped on the
 * way). Acks are per frame, so a session that lost a frame cannot go on; it ends and the agent resends
 * everything unacked on the next one.
 */
export class FrameGapError extends ApmError {
  constructor(counter: number, expected: number) {
    super('ERR_FRAME_GAP', `frame counter ${counter} is not the next one (${expected}): ${counter - expected} frame(s) lost`);
  }
}

/**
 * An ack that is not for the oldest unacked data frame. The collector acks every data frame it
 * stored, in order; an ack that skips one means that frame was not stored, so the session ends and
 * everything unacked is sent again.
 */
export class AckGapError extends ApmError {
  constructor(acked: number, oldest: number | null) {
    super('ERR_ACK_GAP', `ack for frame ${acked}, but the oldest unacked data frame is ${oldest ?? 'none'}`);
  }
}

/** A handshake message out of order or malformed. */
export class HandshakeError extends ApmError {
  constructor(message: string) {
    super('ERR_HANDSHAKE', message);
  }
}

/** An access key string that does not parse. The message never contains the key. */
export class AccessKeyFormatError extends ApmError {
  constructor(why: string) {
    super('ERR_ACCESS_KEY_FORMAT', `access key is malformed: ${why}`);
  }
}
