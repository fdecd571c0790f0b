import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Prng } from '../helpers/prng';
import { finalModel, plan, settingsFor } from '../helpers/scenario';
import { STEP_KINDS } from '../helpers/scenario-steps';

test('a scenario plan is a function of the seed alone: the same seed replays the same steps and settings', () => {
  assert.deepEqual(plan(12345, 60_000, 3), plan(12345, 60_000, 3));
  assert.deepEqual(settingsFor(12345), settingsFor(12345));
  assert.notDeepEqual(plan(12345, 60_000, 3), plan(54321, 60_000, 3));
  assert.deepEqual(new Prng(7).next(), new Prng(7).next());
});

test('every planned step applies to the state the plan is in when it comes', () => {
  for (let s = 1; s <= 50; s++) {
    const steps = plan(s, 60_000, 3);
    assert.ok(steps.length > 20, `seed ${s}: ${steps.length} steps`);
    for (let i = 0; i < steps.length; i++) {
      const step = steps[i] as (typeof steps)[number];
      const before = finalModel(steps.slice(0, i), 3);
      assert.ok((STEP_KINDS[step.kind]?.weight(before) ?? 0) > 0, `seed ${s} step ${i} ${step.kind} in ${JSON.stringify(before)}`);
      assert.ok(step.at < 60_000);
    }
  }
});
