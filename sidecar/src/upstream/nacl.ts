import nacl from 'tweetnacl';
import type { Nacl } from '@apm-sidecar/proto/upstream';

/** tweetnacl, as the handshake and sealing code in proto expect it. */
export const naclImpl: Nacl = nacl;
