/**
 * A Redis task whose stored fields no longer parse (hand-edited, corrupted): errors never quote a
 * stored field (its secret, say), and listing skips the unreadable record, says which it was, and
 * lists the others, in the library and in the real `endpoint-callback tasks` binary.
 */
import assert from 'node:assert/strict'
import { Redis } from 'ioredis'
import { createCallbackTask, deliver, generateSecret, listFailedTasks } from 'endpoint-callback'
import { createRedisStore } from 'endpoint-callback/redis'
import { buildCli, runCli, type BuiltCli } from '../support/cli-binary.ts'
import { createTestTransport } from '../support/sender.ts'
import { REDIS_URL, serviceSkip, serviceTests, uniqueName } from '../support/services.ts'

const skip = await serviceSkip('redis')
const { after, before, describe, it } = serviceTests(skip)
const CORRUPT_SECRET = 'whsec_yLR1notjson'

describe('unreadable Redis records', { timeout: 120_000 }, () => {
  // lazy: with Redis down and skipping asked for, the suite still registers its (skipped) tests
  const client = new Redis(REDIS_URL, { lazyConnect: true })
  const prefix = uniqueName('ec_unreadable')
  const store = createRedisStore({ client, prefix, subscribe: false })
  const ids = { corrupt: '', readable: '' }
  let cli: BuiltCli

  before(async () => {
    const built = buildCli()
    // 422: the receiver refuses, so both tasks fail on their first attempt
    const sender = { store, secret: generateSecret(), transport: createTestTransport(() => ({ status: 422 })), retry: { failStatuses: [422] } }
    for (const which of ['corrupt', 'readable'] as const) {
      const task = await createCallbackTask({ callbackUrl: `https://client.example/${which}`, event: 'report.ready', secret: generateSecret() }, sender)
      assert.equal((await deliver(task, { which }, sender)).status, 'failed')
      ids[which] = task.id
    }
    // a hand edit leaves a secret that is not JSON
    await client.hset(`${prefix}:task:${ids.corrupt}`, 'secret', CORRUPT_SECRET)
    cli = await built
  })
  after(async () => {
    await cli?.remove()
    const keys = await client.keys(`${prefix}:*`)
    if (keys.length > 0) await client.del(...keys)
    await client.quit()
  })

  it('never quotes the stored field in the error', async () => {
    const error: unknown = await store.get(ids.corrupt).then(
      () => assert.fail('an unreadable task was read'),
      (rejected: unknown) => rejected
    )
    assert.equal((error as { code?: string }).code, 'ERR_CALLBACK_STORE')
    let text = ''
    for (let current: unknown = error; current instanceof Error; current = current.cause) text += `${current.message}\n${current.stack}\n`
    assert.match(text, /secret/)
    assert.doesNotMatch(text, /yLR1/, 'no part of the stored secret')
  })

  it('lists the readable tasks and reports the unreadable one', async () => {
    const page = await listFailedTasks({}, { store })
    assert.deepEqual(page.tasks.map((task) => task.id), [ids.readable])
    assert.deepEqual(page.unreadable?.map((each) => each.id), [ids.corrupt])
    assert.doesNotMatch(JSON.stringify(page), /yLR1/)
  })

  it('lists the others from the command line, naming the record it skipped', async () => {
    const { code, stdout, stderr } = await runCli(cli.bin, ['tasks', '--status', 'failed', '--store', REDIS_URL, '--prefix', prefix])
    assert.equal(code, 0, stderr)
    assert.match(stdout, new RegExp(`^${ids.readable}  failed`, 'm'))
    assert.doesNotMatch(stdout, new RegExp(ids.corrupt))
    assert.match(stderr, new RegExp(`${ids.corrupt}.*cannot be read`))
    assert.doesNotMatch(`${stdout}${stderr}`, /yLR1/)
  })
})
