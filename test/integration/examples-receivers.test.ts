import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { generateSecret } from 'endpoint-callback'
import { post } from '../support/http-harness.ts'
import { envelope, signed } from '../support/receiver-cases.ts'

const root = fileURLToPath(new URL('../../', import.meta.url))

/** Runs an example as a user would and resolves with the URL it prints once it listens. */
function run(
  example: string,
  overrides: Record<string, string | undefined>
): Promise<{ child: ChildProcess; url: string; output: () => string }> {
  const env = { ...process.env, ...overrides }
  for (const [name, value] of Object.entries(overrides)) if (value === undefined) delete env[name]
  const child = spawn(
    process.execPath,
    ['--conditions=endpoint-callback-source', '--import', 'tsx', `examples/${example}`],
    { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] }
  )
  let output = ''
  let errors = ''
  child.stdout!.setEncoding('utf8').on('data', (text: string) => (output += text))
  child.stderr!.setEncoding('utf8').on('data', (text: string) => (errors += text))
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${example} printed no address within 20 s: ${output}${errors}`)), 20_000)
    child.stdout!.on('data', () => {
      const match = /listening on (http:\/\/127\.0\.0\.1:\d+\/callbacks)/.exec(output)
      if (match === null) return
      clearTimeout(timer)
      resolve({ child, url: match[1]!, output: () => output })
    })
    child.once('exit', (code) => {
      clearTimeout(timer)
      reject(new Error(`${example} exited with ${code}: ${output}${errors}`))
    })
  })
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return
  const exited = new Promise((resolve) => child.once('exit', resolve))
  child.kill('SIGTERM')
  const killer = setTimeout(() => child.kill('SIGKILL'), 10_000)
  await exited
  clearTimeout(killer)
}

for (const [example, framework] of [
  ['express-receiver.ts', 'Express'],
  ['koa-receiver.ts', 'Koa'],
  ['hono-receiver.ts', 'Hono'],
] as const) {
  test(`the ${framework} example starts, prints its address, handles a verified callback once and refuses a forged one`, async () => {
    const secret = generateSecret()
    const { child, url, output } = await run(example, { CALLBACK_SECRET: secret, PORT: '0' })
    try {
      assert.match(output(), new RegExp(`${framework} receiver listening on`))
      const callback = signed('signPayload', { secret, id: `msg_${framework}`, body: envelope({ reportId: 42 }) })
      assert.equal((await post(url, callback)).status, 204)
      const redelivery = signed('standardwebhooks', { secret, id: `msg_${framework}`, body: envelope({ reportId: 42 }) })
      assert.equal((await post(url, redelivery)).status, 200, 'a redelivery is acknowledged')
      const forged = signed('standardwebhooks', { secret: generateSecret(), body: envelope({ reportId: 43 }) })
      assert.equal((await post(url, forged)).status, 401)
      await new Promise((resolve) => setTimeout(resolve, 50)) // let the child's log line arrive
      const received = output().split('\n').filter((line) => line.startsWith('received '))
      assert.deepEqual(received, [`received report.ready msg_${framework} {"reportId":42}`])
    } finally {
      await stop(child)
    }
  })
}

test('an example without CALLBACK_SECRET makes a throwaway secret that verifies what is signed with it', async () => {
  const child = await run('express-receiver.ts', { PORT: '0', CALLBACK_SECRET: undefined })
  try {
    const secret = /throwaway secret for this run: (whsec_\S+)/.exec(child.output())?.[1]
    assert.ok(secret !== undefined, child.output())
    assert.equal((await post(child.url, signed('signPayload', { secret }))).status, 204)
  } finally {
    await stop(child.child)
  }
})
