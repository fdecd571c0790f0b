export * from './access-key';
export * from './errors';
export * from './handshake';
export * from './messages';
export * from './seal';
export * from './types';
export * from './x25519';
