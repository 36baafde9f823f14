/**
 * createCallbackTasks: many tasks in one store round trip, each checked as createCallbackTask checks
 * one, answered in input order. On PostgreSQL and Redis: test/integration/create-tasks.test.ts.
 */
import { describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { createCallbackTask, createCallbackTasks, createMemoryStore, createWorker, generateSecret, StoreError, UrlPolicyError } from 'endpoint-callback'
import type { CallbackStore, CallbackTaskResult, CreatedCallbackTask, SenderOptions } from 'endpoint-callback'
import { createTestTransport } from '../support/sender.ts'
import { eventually } from '../support/waits.ts'

const callbackUrl = 'https://client.example.com/callbacks'

/** A memory store that counts the round trips createCallbackTasks makes. */
function countingStore(withInsertMany = true) {
  const inner = createMemoryStore()
  const calls = { insert: 0, insertMany: 0 }
  const store: CallbackStore = {
    ...inner,
    insert(task, options) {
      calls.insert++
      return inner.insert(task, options)
    },
    insertMany(tasks, options) {
      calls.insertMany++
      return inner.insertMany!(tasks, options)
    },
  }
  if (!withInsertMany) delete store.insertMany
  return { store, calls }
}

function setup(withInsertMany = true) {
  const { store, calls } = countingStore(withInsertMany)
  const transport = createTestTransport(() => ({ status: 204 }))
  const sender: SenderOptions = { store, secret: generateSecret(), transport }
  return { store, calls, sender, transport }
}

function task(result: CallbackTaskResult | undefined): CreatedCallbackTask {
  assert.ok(result?.ok, `expected a stored task, got ${result?.ok === false ? result.error.message : 'nothing'}`)
  return result.task
}

function refused(result: CallbackTaskResult | undefined): Error {
  assert.ok(result !== undefined && !result.ok, 'expected a refused item')
  return result.error
}

async function storedCount(store: CallbackStore): Promise<number> {
  return (await store.list!({ limit: 100 })).tasks.length
}

for (const withInsertMany of [true, false]) {
  describe(withInsertMany ? 'createCallbackTasks' : 'createCallbackTasks on a store without insertMany (one insert per item)', () => {
    test('answers each item at its index: bad items refused as createCallbackTask would, the good ones stored', async () => {
      const { store, sender, calls } = setup(withInsertMany)
      const results = await createCallbackTasks(
        [
          { callbackUrl, event: 'report.ready', metadata: { n: 0 } },
          { callbackUrl: 'http://client.example.com/callbacks', event: 'report.ready' },
          { callbackUrl, event: '' },
          { callbackUrl: 'https://10.0.0.7/callbacks', event: 'report.ready' },
          { callbackUrl, event: 'report.ready', payload: { n: 4 } },
          { callbackUrl, event: 'report.ready', payload: { big: 1n } },
          { callbackUrl, event: 'report.ready', idempotencyKey: 'job-6', secret: 'not-a-secret' },
          null as never,
          { callbackUrl, event: 'report.ready', colour: 'blue' } as never,
        ],
        sender
      )
      assert.equal(results.length, 9)
      const first = task(results[0])
      assert.equal(first.status, 'pending')
      assert.equal(first.created, true)
      assert.deepEqual(first.metadata, { n: 0 })
      assert.ok(refused(results[1]) instanceof UrlPolicyError, 'plain http refused by the URL policy')
      assert.ok(refused(results[2]) instanceof TypeError)
      assert.match(refused(results[2]).message, /event/)
      assert.ok(refused(results[3]) instanceof UrlPolicyError, 'a private address refused by the URL policy')
      const outbox = task(results[4])
      assert.equal(outbox.status, 'scheduled')
      assert.deepEqual(JSON.parse(outbox.body!).data, { n: 4 })
      assert.equal((refused(results[5]) as Error & { code?: string }).code, 'ERR_CALLBACK_PAYLOAD_INVALID')
      assert.ok(refused(results[6]) instanceof TypeError, 'a malformed secret')
      assert.match(refused(results[7]).message, /createCallbackTasks input 7 must be an object/)
      assert.match(refused(results[8]).message, /unknown option `colour`/)
      assert.equal(await storedCount(store), 2, 'only the good items are stored')
      assert.deepEqual(await store.get(first.id), (({ created: _created, ...stored }) => stored)(first))
      if (withInsertMany) assert.deepEqual(calls, { insert: 0, insertMany: 1 }, 'one round trip for the batch')
      else assert.deepEqual(calls, { insert: 2, insertMany: 0 })
    })

    test('idempotency per item: a key stored before, a key twice in the batch, and a conflict among good items', async () => {
      const { store, sender } = setup(withInsertMany)
      const before = await createCallbackTask({ callbackUrl, event: 'report.ready', idempotencyKey: 'job-1' }, sender)
      const results = await createCallbackTasks(
        [
          { callbackUrl, event: 'report.ready', idempotencyKey: 'job-1' },
          { callbackUrl, event: 'report.ready', idempotencyKey: 'job-2', payload: 2 },
          { callbackUrl, event: 'report.ready', idempotencyKey: 'job-2', payload: 'replayed' },
          { callbackUrl: 'https://elsewhere.example.com/callbacks', event: 'report.ready', idempotencyKey: 'job-1' },
          { callbackUrl, event: 'report.other', idempotencyKey: 'job-2' },
          { callbackUrl, event: 'report.ready', idempotencyKey: 'job-3' },
        ],
        sender
      )
      assert.deepEqual([task(results[0]).id, task(results[0]).created], [before.id, false], 'the task stored before')
      const second = task(results[1])
      assert.equal(second.created, true)
      assert.deepEqual([task(results[2]).id, task(results[2]).created], [second.id, false], "the first item's task")
      assert.equal(JSON.parse(task(results[2]).body!).data, 2, 'with its body, not the replay’s')
      for (const [index, field] of [[3, 'callbackUrl'], [4, 'event']] as const) {
        const error = refused(results[index]) as Error & { code?: string }
        assert.equal(error.code, 'ERR_CALLBACK_IDEMPOTENCY_CONFLICT')
        assert.match(error.message, new RegExp(`different ${field}`))
      }
      assert.equal(task(results[5]).created, true, 'the item after the conflicts is stored')
      assert.equal(await storedCount(store), 3)
    })

    test('never hands out a task’s own secret', async () => {
      const { sender } = setup(withInsertMany)
      const secret = generateSecret()
      const results = await createCallbackTasks([{ callbackUrl, event: 'e', secret, payload: 1 }], sender)
      assert.equal('secret' in task(results[0]), false)
      assert.equal((await sender.store.get(task(results[0]).id))?.secret, secret)
    })

    test('refuses a transaction the store cannot join, storing nothing', async () => {
      const { store, sender } = setup(withInsertMany)
      await assert.rejects(createCallbackTasks([{ callbackUrl, event: 'e' }], { ...sender, transaction: {} }), {
        name: 'TypeError',
        message: /`transaction`/,
      })
      assert.equal(await storedCount(store), 0)
    })
  })
}

test('a worker delivers every task recorded with its payload, once', async () => {
  const { sender, transport } = setup()
  const results = await createCallbackTasks(
    Array.from({ length: 50 }, (_, n) => ({ callbackUrl, event: 'report.ready', payload: { n } })),
    sender
  )
  const worker = createWorker({ ...sender, pollIntervalMs: 60_000 }) // woken by the store, not by its poll
  worker.start()
  try {
    await eventually(() => transport.requests.length >= 50, 'all 50 callbacks sent', { describe: () => `${transport.requests.length} sent` })
  } finally {
    await worker.stop()
  }
  const sent = transport.requests.map((request) => request.headers['webhook-id'])
  assert.deepEqual(new Set(sent), new Set(results.map((result) => task(result).id)))
  assert.equal(sent.length, 50, 'each once')
})

test('bad calls are refused before anything is stored: not an array, or more than 10,000 items', async () => {
  const { store, sender, calls } = setup()
  await assert.rejects(createCallbackTasks({ callbackUrl, event: 'e' } as never, sender), { name: 'TypeError', message: /inputs must be an array/ })
  const many = Array.from({ length: 10_001 }, () => ({ callbackUrl, event: 'e' }))
  await assert.rejects(createCallbackTasks(many, sender), { name: 'TypeError', message: /at most 10000 inputs per call \(got 10001\)/ })
  assert.deepEqual(calls, { insert: 0, insertMany: 0 })
  assert.deepEqual(await createCallbackTasks([], sender), [], 'an empty array answers an empty array')
  assert.deepEqual(calls, { insert: 0, insertMany: 0 }, 'without calling the store')
  const results = await createCallbackTasks(many.slice(1), sender)
  assert.equal(results.filter((result) => result.ok).length, 10_000, 'exactly the maximum is taken')
  assert.deepEqual(calls, { insert: 0, insertMany: 1 })
  await assert.rejects(createCallbackTasks([{ callbackUrl, event: 'e' }], null as never), { name: 'TypeError' })
})

test('a store failure rejects the whole call', async () => {
  const { sender } = setup()
  const failing: SenderOptions = {
    ...sender,
    store: { ...sender.store, insertMany: async () => Promise.reject(new StoreError('ERR_CALLBACK_STORE', 'the database is gone')) },
  }
  await assert.rejects(createCallbackTasks([{ callbackUrl, event: 'e' }], failing), { code: 'ERR_CALLBACK_STORE', message: /the database is gone/ })
  const short: SenderOptions = { ...sender, store: { ...sender.store, insertMany: async () => [] } }
  await assert.rejects(createCallbackTasks([{ callbackUrl, event: 'e' }], short), { code: 'ERR_CALLBACK_STORE', message: /0 results for 1 tasks/ })
})
