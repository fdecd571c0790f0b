import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { defaultRoute } from '@apm-sidecar/shim';

describe('default route of an incoming request', () => {
  const cases: [string, string][] = [
    ['/', '/'],
    ['', '/'],
    ['/health', '/health'],
    ['/users/42', '/users/:id'],
    ['/users/42/orders/7?expand=1', '/users/:id/orders/:id'],
    ['/o/3fa85f64-5717-4562-b3fc-2c963f66afa6', '/o/:id'],
    ['/o/3fa85f6457174562b3fc2c963f66afa6/x', '/o/:id/x'],
    ['/blob/9f86d081884c7d65', '/blob/:id'],
    ['/t/eyJhbGciOiJIUzI1NiJ9x1', '/t/:id'],
    ['/words/deadbeef', '/words/deadbeef'],
    ['/v2/items', '/v2/items'],
    ['/a//b/', '/a/b'],
    ['/search#frag', '/search'],
    ['/1/2/3/4/5/6/7/8/9/10', '/:id/:id/:id/:id/:id/:id/:id/:id/…'],
  ];
  for (const [url, route] of cases) {
    it(`${JSON.stringify(url)} → ${route}`, () => assert.equal(defaultRoute(url), route));
  }

  it('is capped at 128 characters however long the path', () => {
    assert.equal(defaultRoute(`/${'seg/'.repeat(5)}${'x'.repeat(500)}`).length, 128);
  });

  it('answers / for what is not a string', () => {
    assert.equal(defaultRoute(undefined), '/');
    assert.equal(defaultRoute(42), '/');
  });
});
