export * from './errors';
export * from './http-api';
export { metricQueryFrom } from './api-query';
export * from './settings';
export * from './store/index';
export * from './types';
export * from './logger';
export * from './api-access';
export * from './prometheus';
