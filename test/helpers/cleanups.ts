import { afterEach } from 'node:test';

/**
 * Run and empty a list of cleanups (kill a process, close a client, ...): newest first, each one
 * even when an earlier one threw, so one failed cleanup never leaves the others' processes running.
 */
export async function runCleanups(cleanups: (() => unknown)[]): Promise<void> {
  for (const c of cleanups.splice(0).reverse()) {
    try {
      await c();
    } catch {
      // best effort: the next cleanup still runs
    }
  }
}

/** A list the tests of a file push their cleanups to; they run (runCleanups) after each test. */
export function cleanupsAfterEach(): (() => unknown)[] {
  const cleanups: (() => unknown)[] = [];
  afterEach(() => runCleanups(cleanups));
  return cleanups;
}
