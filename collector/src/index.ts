export * from './errors';
export * from './http-api';
export * from './settings';
export * from './store';
export * from './types';
export * from './logger';
export * from './api-access';
export * from './read-tokens';
