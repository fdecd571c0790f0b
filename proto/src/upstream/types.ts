/**
 * Upstream frame types (the outer frame's type byte; same framing as IPC:
 * u32le length | u8 type | payload).
 *
 *   clear:  ClientHello, ServerHello, ClientFinished, HandshakeRejected
 *   sealed: Text (secretbox, text key), Numeric (ChaCha20-Poly1305, numeric key)
 *
 * A sealed payload is `counter u64be | ciphertext`; its plaintext is
 * `inner type u8 | body` with the inner types below.
 */
export const UpstreamType = {
  ClientHello: 0x20,
  ServerHello: 0x21,
  ClientFinished: 0x22,
  /** Clear-text refusal during the handshake: JSON { code, message }. */
  HandshakeRejected: 0x23,
  Text: 0x30,
  Numeric: 0x31,
} as const;

/** Types of sealed messages. */
export const Inner = {
  /** agent → collector, text: JSON { agentId, host, version, apps } */
  AgentInfo: 1,
  /** collector → agent, text: JSON agent configuration */
  Config: 2,
  /** collector → agent, text: JSON { granted, reason } */
  License: 3,
  /** agent → collector, numeric: binary metric packs */
  MetricBatch: 4,
  /** agent → collector, text: JSON { items: [...] } traces, active stacks, events, snapshots, registrations */
  TextBatch: 5,
  /** collector → agent, text: u48 counter: every agent frame up to it is stored */
  Ack: 6,
  /** either way, text: f64 timestamp */
  Ping: 7,
  Pong: 8,
  /** collector → agent, text: JSON { code, message }; the collector closes after it */
  Error: 9,
} as const;
export type InnerType = (typeof Inner)[keyof typeof Inner];
