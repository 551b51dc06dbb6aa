import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseStatus, presentStatus } from '../src/statusPresentation';
import { matchedLines, tracedSourceTitle } from '../src/tracedSourceDoc';

test('loading shows the progress, ready shows the device, errors are marked', () => {
  assert.equal(presentStatus({ state: 'loading', progress: 41.6 }).text, '$(loading~spin) whence: loading model 42%');
  assert.equal(presentStatus({ state: 'loading', progress: 250 }).text, '$(loading~spin) whence: loading model 100%');
  assert.equal(presentStatus({ state: 'loading' }).text, '$(loading~spin) whence: loading model');
  const ready = presentStatus({ state: 'ready', device: 'cuda', model: 'SmolLM2-135M-Instruct' });
  assert.equal(ready.text, '$(check) whence: cuda');
  assert.match(ready.tooltip, /Model: SmolLM2-135M-Instruct/);
  const error = presentStatus({ state: 'error', message: 'model file is corrupt' });
  assert.equal(error.isError, true);
  assert.match(error.tooltip, /model file is corrupt\nClick to open the whence server log/);
  assert.equal(presentStatus({ state: 'stopped' }).isError, true);
  const withStats = presentStatus({ state: 'ready', device: 'cpu', stats: { records: 3, attributionPending: 12, completionCacheHits: 1 } });
  assert.match(withStats.tooltip, /Records: 3 · attribution rows pending: 12 · completion cache hits: 1/);
});

test('work in progress replaces the device, and the last completion time is in the tooltip', () => {
  const generating = presentStatus({ state: 'ready', device: 'cpu', activity: 'generating…', lastCompletionMs: 642.4 });
  assert.equal(generating.text, '$(sync~spin) whence: generating…');
  assert.match(generating.tooltip, /Last completion: 642 ms/);
  assert.equal(presentStatus({ state: 'ready', device: 'cpu', activity: 'explaining 3/8' }).text, '$(sync~spin) whence: explaining 3/8');
  assert.equal(presentStatus({ state: 'ready', device: 'cpu', activity: null }).text, '$(check) whence: cpu');
});

test('unknown status payloads become an error that quotes them', () => {
  assert.deepEqual(parseStatus({ state: 'ready', device: 'cpu' }), { state: 'ready', device: 'cpu' });
  assert.equal(parseStatus({ state: 'warming' }).state, 'error');
  assert.match(parseStatus(null).message ?? '', /null/);
});

test('traced sources: license in the title, matched lines clamped to the content', () => {
  const source = {
    uri: 'file:///usr/lib/python3.11/posixpath.py',
    path: '/usr/lib/python3.11/posixpath.py',
    content: 'a\nb\nc\nd',
    languageId: 'python',
    license: 'PSF-2.0',
    startLine: 2,
    endLine: 3,
  };
  assert.equal(tracedSourceTitle(source), 'posixpath.py [PSF-2.0] L2-3');
  assert.equal(tracedSourceTitle({ ...source, license: '', endLine: 2 }), 'posixpath.py [NOASSERTION] L2');
  assert.equal(tracedSourceTitle({ ...source, license: 'MIT/X11' }), 'posixpath.py [MIT∕X11] L2-3');
  assert.deepEqual(matchedLines(source), { first: 1, last: 2 });
  assert.deepEqual(matchedLines({ ...source, startLine: 3, endLine: 99 }), { first: 2, last: 3 });
  assert.deepEqual(matchedLines({ ...source, startLine: 0, endLine: -4 }), { first: 0, last: 0 });
});
