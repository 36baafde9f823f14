/**
 * What the README promises about duplicates must be what at-least-once delivery can keep: the
 * replay guard narrows duplicates, it cannot rule them out.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFile } from 'node:fs/promises'

test('the README states the limits of the replay guard instead of promising a handler never runs twice', async () => {
  const readme = await readFile(new URL('../../README.md', import.meta.url), 'utf8')
  const paragraph = readme.slice(readme.indexOf('With `replayGuard: true`'), readme.indexOf('Runnable examples'))
  assert.match(paragraph, /cannot rule them out: delivery is at least once/)
  assert.match(paragraph, /idempotent\s+on `webhook-id`/)
})
