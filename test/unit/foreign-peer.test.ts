import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { encodeFrame, foreignPeer } from '@apm-sidecar/proto';

describe('foreignPeer: a first frame header that is really text', () => {
  it('an HTTP response is recognised as the HTTP port', () => {
    const e = foreignPeer(Buffer.from('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n'));
    assert.equal(e?.code, 'ERR_NOT_APM_PEER');
    assert.equal(e?.looksLike, 'http');
    assert.match(e?.message ?? '', /is this the HTTP port\? It answered "HTTP\/1\.1 400 Bad Request"$/);
  });

  it('other text is named by its first line, non-printable bytes replaced', () => {
    const e = foreignPeer(Buffer.from('220 mail ESMTP\x01\r\nmore'));
    assert.equal(e?.looksLike, 'text');
    assert.match(e?.message ?? '', /It sent "220 mail ESMTP\?"$/);
  });

  it('a real frame header is not mistaken for text', () => {
    assert.equal(foreignPeer(encodeFrame(1, Buffer.from('HTTP/1.1 pretend payload'))), null);
  });

  it('needs four bytes to decide', () => {
    assert.equal(foreignPeer(Buffer.from('HTT')), null);
  });
});
