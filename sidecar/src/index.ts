export * from './config';
export * from './reconnect-schedule';
