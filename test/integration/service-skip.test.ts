/**
 * A service-backed test file run against a PostgreSQL that is not there: it fails, saying how to
 * skip, unless CALLBACK_TEST_SKIP_SERVICES=1 asks for skipping — and then every one of its tests is
 * counted as skipped. Never a silent green with nothing run.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { createServer } from 'node:net'
import type { AddressInfo } from 'node:net'
import { fileURLToPath } from 'node:url'

const root = fileURLToPath(new URL('../../', import.meta.url))

/** A loopback port nothing listens on. */
async function closedPort(): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  await new Promise((resolve) => server.close(resolve))
  return port
}

function runTestFile(file: string, env: Record<string, string>): Promise<{ code: number | null; output: string }> {
  const childEnv: NodeJS.ProcessEnv = { ...process.env }
  // the runner marks its own children; a nested run must report as a top-level one
  delete childEnv.NODE_TEST_CONTEXT
  delete childEnv.CALLBACK_TEST_SKIP_SERVICES
  Object.assign(childEnv, env)
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['--conditions=endpoint-callback-source', '--import', 'tsx', '--test', '--test-reporter=tap', file],
      { cwd: root, env: childEnv, timeout: 60_000 },
      (error, stdout, stderr) => resolve({ code: error === null ? 0 : typeof error.code === 'number' ? error.code : null, output: stdout + stderr })
    )
  })
}

test('with PostgreSQL unreachable, its tests fail and say how to skip them', async () => {
  const port = await closedPort()
  const { code, output } = await runTestFile('test/integration/outbox.test.ts', { DATABASE_URL: `postgres://postgres@127.0.0.1:${port}/test`, CI: '1' })
  assert.notEqual(code, 0, output)
  assert.match(output, /postgres is not reachable/)
  assert.match(output, /CALLBACK_TEST_SKIP_SERVICES=1/)
  assert.match(output, /^# fail [1-9]/m)
})

test('with PostgreSQL unreachable and CALLBACK_TEST_SKIP_SERVICES=1, each of its tests is counted as skipped', async () => {
  const port = await closedPort()
  const { code, output } = await runTestFile('test/integration/outbox.test.ts', {
    DATABASE_URL: `postgres://postgres@127.0.0.1:${port}/test`,
    CALLBACK_TEST_SKIP_SERVICES: '1',
  })
  assert.equal(code, 0, output)
  const tests = Number(/^# tests (\d+)/m.exec(output)?.[1])
  assert.ok(tests >= 4, `only ${tests} tests were reported:\n${output}`)
  assert.match(output, new RegExp(`^# skipped ${tests}$`, 'm'), output)
  assert.match(output, /^# pass 0$/m)
})
