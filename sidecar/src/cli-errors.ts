import { ApmError } from '@apm-sidecar/proto';

/** `apm-sidecar status` (or a control command) got no answer from the sidecar in time. */
export class StatusTimeoutError extends ApmError {
  constructor(path: string, ms: number) {
    super('ERR_TIMEOUT', `no answer from the sidecar on ${path} within ${ms} ms`);
  }
}

/** No sidecar is listening on the socket a command asked, or it closed the connection without answering. */
export class NotRunningError extends ApmError {
  constructor(message: string) {
    super('ERR_NOT_RUNNING', message);
  }
}
