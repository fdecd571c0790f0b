import { ApmError } from '@apm-sidecar/proto';

/**
 * Snapshot data that JSON cannot represent (a function, a symbol, a toJSON returning undefined):
 * the snapshot is dropped and counted as invalid, never sent without data.
 */
export class SnapshotDataError extends ApmError {
  constructor() {
    super('ERR_SNAPSHOT_DATA', 'snapshot data is not serializable');
  }
}
