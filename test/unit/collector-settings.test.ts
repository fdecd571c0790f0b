import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { SETTINGS, SettingError, defaultSettings, parseSettings } from '@apm-sidecar/collector';

function settingError(pairs: string[]): SettingError {
  try {
    parseSettings(pairs);
  } catch (err) {
    assert.ok(err instanceof SettingError, `not a SettingError: ${String(err)}`);
    return err;
  }
  assert.fail(`accepted ${pairs.join(' ')}`);
}

describe('collector settings: retention and scale-out keys', () => {
  it('has the documented defaults', () => {
    const d = defaultSettings();
    assert.equal(d.store_retention_days, 15);
    assert.equal(d.store_prune_interval_ms, 60_000);
    assert.equal(d.store_prune_batch_rows, 5_000);
    assert.equal(d.collector_heartbeat_ms, 5_000);
    assert.equal(d.collector_dead_after_ms, 15_000);
    assert.ok(d.collector_dead_after_ms > d.collector_heartbeat_ms);
  });

  it('takes store_retention_days from 1 to 3650 and refuses others, naming the key', () => {
    assert.equal(parseSettings(['store_retention_days=1']).store_retention_days, 1);
    assert.equal(parseSettings(['store_retention_days=3650']).store_retention_days, 3650);
    for (const v of ['0', '3651', '1.5', '-1', 'x']) {
      const e = settingError([`store_retention_days=${v}`]);
      assert.equal(e.code, 'ERR_SETTING');
      assert.equal(e.key, 'store_retention_days');
    }
  });

  it('refuses a collector_dead_after_ms that is not more than collector_heartbeat_ms, naming the key', () => {
    for (const pairs of [['collector_dead_after_ms=5000'], ['collector_heartbeat_ms=20000'], ['collector_heartbeat_ms=100', 'collector_dead_after_ms=99']]) {
      const e = settingError(pairs);
      assert.equal(e.code, 'ERR_SETTING');
      assert.equal(e.key, 'collector_dead_after_ms');
      assert.match(e.message, /collector_heartbeat_ms/);
    }
    const ok = parseSettings(['collector_heartbeat_ms=100', 'collector_dead_after_ms=101']);
    assert.equal(ok.collector_heartbeat_ms, 100);
    assert.equal(ok.collector_dead_after_ms, 101);
  });

  it('every setting has help text and a default within its range', () => {
    for (const [k, s] of Object.entries(SETTINGS)) {
      assert.ok(s.help.length > 10, k);
      assert.ok(s.def >= s.min && s.def <= s.max, k);
    }
  });
});
