import assert from 'node:assert/strict';
import { ApmError } from '@apm-sidecar/proto';

/** Run fn, assert it throws an instance of cls (an ApmError) with `code`; return the error. */
export function throwsCode<E extends ApmError>(fn: () => unknown, cls: new (...args: never[]) => E, code: string, what = ''): E {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  assert.ok(caught !== undefined, `expected ${code} ${what}`);
  assert.ok(caught instanceof ApmError, `not an ApmError ${what}: ${String(caught)}`);
  assert.ok(caught instanceof cls, `expected ${cls.name}, got ${(caught as Error).constructor.name} ${what}: ${(caught as Error).message}`);
  assert.equal((caught as ApmError).code, code, what);
  return caught as E;
}
