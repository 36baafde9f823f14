import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'

test('npm run demo shows a callback failing twice, then landing, and exits 0', () => {
  const root = fileURLToPath(new URL('../../', import.meta.url))
  const run = spawnSync(process.execPath, ['--conditions=endpoint-callback-source', '--import', 'tsx', 'examples/demo.ts'], {
    cwd: root,
    encoding: 'utf8',
    timeout: 40_000,
  })
  assert.equal(run.status, 0, run.stderr)
  assert.match(run.stdout, /POST \/jobs → 202 \{"id":"msg_/)
  assert.equal(run.stdout.match(/pretends to be down: 503/g)?.length, 2)
  assert.match(run.stdout, /attempt 3 of msg_\S+: HTTP 204/)
  assert.match(run.stdout, /is delivered after 3 attempts; the receiver processed it once/)
})
