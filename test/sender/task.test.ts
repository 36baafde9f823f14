import { test } from 'node:test'
import assert from 'node:assert/strict'
import { CallbackError, createCallbackTask, createMemoryStore, createWorker, generateEncryptionKey, generateSecret, UrlPolicyError } from 'endpoint-callback'
import type { CallbackStore, NewCallbackTask, SenderOptions, WorkerOptions } from 'endpoint-callback'
import { SENDER_OPTION_NAMES } from '../../src/sender.ts'
import { createTestClock, createTestTransport } from '../support/sender.ts'
import { createPostgresStore } from 'endpoint-callback/postgres'
import { createRedisStore } from 'endpoint-callback/redis'

const callbackUrl = 'https://client.example.com/callbacks'

function setup(extra: Partial<SenderOptions> = {}) {
  const store = createMemoryStore()
  const sender: SenderOptions = { store, secret: generateSecret(), transport: createTestTransport(() => ({ status: 204 })), ...extra }
  return { store, sender }
}

test('a task is stored pending with a header-safe msg_ id and returned as stored, with created: true', async () => {
  const { store, sender } = setup()
  const task = await createCallbackTask({ callbackUrl, event: 'report.ready', metadata: { job: 7 } }, sender)
  assert.match(task.id, /^msg_[0-9a-z]{10}[A-Za-z0-9_-]{16}$/)
  assert.equal(task.status, 'pending')
  assert.equal(task.attempts, 0)
  assert.equal(task.callbackUrl, callbackUrl)
  assert.deepEqual(task.metadata, { job: 7 })
  const { created, ...stored } = task
  assert.equal(created, true)
  assert.deepEqual(await store.get(task.id), stored)
})

test('a replayed request can tell its task already existed: created is false', async () => {
  const { sender } = setup()
  const first = await createCallbackTask({ callbackUrl, event: 'e', idempotencyKey: 'req-9' }, sender)
  const replay = await createCallbackTask({ callbackUrl, event: 'e', idempotencyKey: 'req-9' }, sender)
  assert.equal(first.created, true)
  assert.equal(replay.created, false)
  assert.equal(replay.id, first.id)
})

test('the task returned never holds its own secret, so res.json(task) cannot leak it', async () => {
  const { sender } = setup()
  const secret = generateSecret()
  const task = await createCallbackTask({ callbackUrl, event: 'e', secret, idempotencyKey: 'k' }, sender)
  assert.equal('secret' in task, false)
  assert.ok(!JSON.stringify(task).includes(secret))
  const replay = await createCallbackTask({ callbackUrl, event: 'e', secret, idempotencyKey: 'k' }, sender)
  assert.equal('secret' in replay, false)
  assert.equal((await sender.store.get(task.id))?.secret, secret, 'the store keeps it for the attempts')
})

test('an idempotency key reused with another secret, encryptionKey or callbackUrl is a conflict, never the first caller\'s task', async () => {
  const { sender } = setup()
  const { publicJwk } = await generateEncryptionKey()
  const { publicJwk: otherJwk } = await generateEncryptionKey()
  const secret = generateSecret()
  const other = generateSecret()
  await createCallbackTask({ callbackUrl, event: 'e', idempotencyKey: 'k1', secret, encryptionKey: publicJwk }, sender)
  const cases: Array<[Record<string, unknown>, string]> = [
    [{ secret: other, encryptionKey: publicJwk }, 'secret'],
    [{ encryptionKey: publicJwk }, 'secret'],
    [{ secret, encryptionKey: otherJwk }, 'encryptionKey'],
    [{ secret }, 'encryptionKey'],
    [{ secret, encryptionKey: publicJwk, callbackUrl: 'https://other.example.com/cb' }, 'callbackUrl'],
  ]
  for (const [changed, field] of cases) {
    await assert.rejects(createCallbackTask({ callbackUrl, event: 'e', idempotencyKey: 'k1', ...changed }, sender), (error: unknown) => {
      assert.ok(error instanceof CallbackError)
      assert.equal(error.code, 'ERR_CALLBACK_IDEMPOTENCY_CONFLICT')
      assert.match(error.message, new RegExp(`with a different ${field}$`))
      assert.ok(!error.message.includes(secret) && !error.message.includes(other))
      return true
    })
  }
  // the same parameters, keys in another order: the same task
  const reordered = Object.fromEntries(Object.entries(publicJwk).reverse())
  assert.equal((await createCallbackTask({ callbackUrl, event: 'e', idempotencyKey: 'k1', secret, encryptionKey: reordered }, sender)).created, false)
})

test('unknown option keys are TypeErrors naming the nearest known option', async () => {
  const { sender } = setup()
  const cases: Array<[Record<string, unknown>, RegExp]> = [
    [{ concurency: 4 }, /unknown option `concurency` \(did you mean `concurrency`\?\)/],
    [{ urlpolicy: { allowHttp: true } }, /unknown option `urlpolicy` \(did you mean `urlPolicy`\?\)/],
    [{ pollInterval: 50 }, /unknown option `pollInterval` \(did you mean `pollIntervalMs`\?\)/],
    [{ urlPolicy: { allowHost: ['127.0.0.1'] } }, /urlPolicy: unknown option `allowHost` \(did you mean `allowHosts`\?\)/],
  ]
  for (const [extra, message] of cases) {
    // built at run time, as a config object would be: no excess-property check at compile time
    const options = Object.assign({}, sender, extra)
    await assert.rejects(createCallbackTask({ callbackUrl, event: 'e' }, options), (error: unknown) => error instanceof TypeError && message.test(error.message))
  }
  await assert.rejects(createCallbackTask({ callbackUrl, event: 'e', idempotencykey: 'x' } as never, sender), /unknown option `idempotencykey` \(did you mean `idempotencyKey`\?\)/)
  assert.throws(() => createMemoryStore({ retentionSecond: 1 } as never), /createMemoryStore: unknown option `retentionSecond` \(did you mean `retentionSeconds`\?\)/)
  assert.throws(() => createWorker(Object.assign({}, sender, { pollInterval: 50 })), /unknown option `pollInterval` \(did you mean `pollIntervalMs`\?\)/)
  const pool = { query: async () => ({ rows: [] }) }
  assert.throws(() => createPostgresStore({ pool, shema: 'callbacks' } as never), /createPostgresStore: unknown option `shema` \(did you mean `schema`\?\)/)
  const client = { eval: async () => null, evalsha: async () => null }
  assert.throws(() => createRedisStore({ client, prefx: 'callbacks' } as never), /createRedisStore: unknown option `prefx` \(did you mean `prefix`\?\)/)
})

test('every option of WorkerOptions (sender, worker, destinations) is a known option; misspelt ones name it', async () => {
  // Record<keyof ...>: adding an option to the interfaces without listing it here fails typecheck,
  // and the set must then list it too, or the option would be refused as unknown.
  const workerOptions: Record<keyof WorkerOptions, true> = {
    store: true, transport: true, secret: true, signingKey: true, keyRing: true, verifyIntent: true, intentSubscriber: true,
    urlPolicy: true, retry: true, leaseMs: true, now: true, onEvent: true, instrumentation: true, destination: true,
    transaction: true, pendingTimeoutMs: true, requireTaskSecret: true, pollIntervalMs: true, concurrency: true,
    batchSize: true, perDestination: true, breaker: true,
  }
  assert.deepEqual(new Set(Object.keys(workerOptions)), SENDER_OPTION_NAMES)
  const { sender } = setup()
  const worker = createWorker({ ...sender, destination: (task) => new URL(task.callbackUrl).host, perDestination: 3, breaker: { failures: 3 } })
  assert.equal(worker.running, false)
  await createCallbackTask({ callbackUrl, event: 'e' }, { ...sender, destination: () => 'tenant-1' })
  assert.throws(() => createWorker(Object.assign({}, sender, { perDestinaton: 3 })), /unknown option `perDestinaton` \(did you mean `perDestination`\?\)/)
  assert.throws(() => createWorker(Object.assign({}, sender, { breaker: { windowMS: 1000 } as never })), /breaker: unknown option `windowMS` \(did you mean `windowMs`\?\)/)
})

test('the memory store refuses a transaction it cannot join, storing nothing', async () => {
  const store = createMemoryStore()
  const sender = { store, secret: generateSecret() }
  await assert.rejects(createCallbackTask({ callbackUrl, event: 'e', idempotencyKey: 'tx' }, { ...sender, transaction: {} }), {
    name: 'TypeError',
    message: /`transaction`: the memory store cannot join a database transaction/,
  })
  assert.equal((await createCallbackTask({ callbackUrl, event: 'e', idempotencyKey: 'tx' }, sender)).created, true)
})

test('ids are unique and sort by creation time', async () => {
  const clock = createTestClock()
  const { sender } = setup({ now: clock.now })
  const ids: string[] = []
  for (let i = 0; i < 50; i++) {
    ids.push((await createCallbackTask({ callbackUrl, event: 'e' }, sender)).id)
    clock.advance(1)
  }
  assert.equal(new Set(ids).size, 50)
  assert.deepEqual([...ids].sort(), ids)
})

test('the same idempotency key returns the same task, also when the calls race', async () => {
  const { sender } = setup()
  const tasks = await Promise.all(
    Array.from({ length: 20 }, () => createCallbackTask({ callbackUrl, event: 'report.ready', idempotencyKey: 'req-1' }, sender))
  )
  assert.equal(new Set(tasks.map((task) => task.id)).size, 1)
})

test('reusing an idempotency key for another URL or event is a conflict, not a silent mix-up', async () => {
  const { sender } = setup()
  await createCallbackTask({ callbackUrl, event: 'report.ready', idempotencyKey: 'req-2' }, sender)
  await assert.rejects(
    createCallbackTask({ callbackUrl: 'https://other.example.com/cb', event: 'report.ready', idempotencyKey: 'req-2' }, sender),
    (error: unknown) => error instanceof CallbackError && error.code === 'ERR_CALLBACK_IDEMPOTENCY_CONFLICT'
  )
})

/** A store that records inserts, to show that refused input stores nothing. */
function recordingStore(): { store: CallbackStore; inserts: { task: NewCallbackTask; options: unknown }[] } {
  const inner = createMemoryStore()
  const inserts: { task: NewCallbackTask; options: unknown }[] = []
  const store: CallbackStore = {
    ...inner,
    insert(task, options) {
      inserts.push({ task, options })
      // the memory store itself refuses a transaction: this one only records what it was given
      return inner.insert(task)
    },
  }
  return { store, inserts }
}

test('URLs refused by the default policy are rejected before anything is stored', async () => {
  const { store, inserts } = recordingStore()
  const sender = { store, secret: generateSecret() }
  for (const url of [
    'http://client.example.com/cb',
    'https://127.0.0.1/cb',
    'https://10.1.2.3/cb',
    'https://169.254.169.254/latest/meta-data',
    'https://[::1]/cb',
    'https://localhost/cb',
    'https://2130706433/cb',
    'ftp://client.example.com/cb',
  ]) {
    await assert.rejects(createCallbackTask({ callbackUrl: url, event: 'e' }, sender), UrlPolicyError, url)
  }
  assert.equal(inserts.length, 0)
})

test('loopback over plain http is accepted once the policy opts in', async () => {
  const { sender } = setup({ urlPolicy: { allowHttp: true, allowHosts: ['127.0.0.1'] } })
  const task = await createCallbackTask({ callbackUrl: 'http://127.0.0.1:8080/cb', event: 'e' }, sender)
  assert.equal(task.callbackUrl, 'http://127.0.0.1:8080/cb')
})

test('bad input is a TypeError naming the field, and nothing is stored', async () => {
  const { store, inserts } = recordingStore()
  const sender = { store, secret: generateSecret() }
  const cases: [unknown, RegExp][] = [
    [{ event: 'e' }, /callbackUrl/],
    [{ callbackUrl, event: '' }, /event/],
    [{ callbackUrl, event: 'x'.repeat(201) }, /event/],
    [{ callbackUrl, event: 'e', idempotencyKey: 42 }, /idempotencyKey/],
    [{ callbackUrl, event: 'e', secret: 'not-a-secret' }, /secret/],
    [{ callbackUrl, event: 'e', metadata: [1, 2] }, /metadata/],
    [{ callbackUrl, event: 'e', metadata: { n: 1n } }, /metadata/],
    [{ callbackUrl, event: 'e', deadline: 'tomorrow' }, /deadline/],
    [{ callbackUrl, event: 'e', deadline: new Date(Date.now() - 1000) }, /deadline/],
    [null, /input/],
  ]
  for (const [input, message] of cases) {
    await assert.rejects(createCallbackTask(input as never, sender), (error: unknown) => error instanceof TypeError && message.test(error.message), String(message))
  }
  assert.equal(inserts.length, 0)
})

test('a sender with no key is refused when its options are first resolved, naming the options', async () => {
  const store = createMemoryStore()
  const inserts: NewCallbackTask[] = []
  const spy: CallbackStore = { ...store, insert: (task, options) => (inserts.push(task), store.insert(task, options)) }
  const keyless = { store: spy }
  for (const input of [{ callbackUrl, event: 'e' }, { callbackUrl, event: 'e', secret: generateSecret() }]) {
    await assert.rejects(createCallbackTask(input, keyless), {
      name: 'TypeError',
      message: /secret, signingKey or keyRing is required.*requireTaskSecret: true/,
    })
  }
  assert.equal(inserts.length, 0)
})

test('requireTaskSecret: every task brings its own secret, and one without is refused before anything is stored', async () => {
  const store = createMemoryStore()
  const sender = { store, requireTaskSecret: true }
  const task = await createCallbackTask({ callbackUrl, event: 'e', secret: generateSecret() }, sender)
  assert.equal(task.status, 'pending')
  await assert.rejects(createCallbackTask({ callbackUrl, event: 'e', idempotencyKey: 'none' }, sender), {
    name: 'TypeError',
    message: /secret is required: the sender sets requireTaskSecret/,
  })
  assert.equal((await store.list!({ status: 'pending' })).tasks.length, 1)
})

test('the deadline is the one given, or creation plus retry.deadlineMs', async () => {
  const clock = createTestClock()
  const { sender } = setup({ now: clock.now, retry: { deadlineMs: 3_600_000 } })
  const byDefault = await createCallbackTask({ callbackUrl, event: 'e' }, sender)
  assert.deepEqual(byDefault.deadline, new Date(clock.now().getTime() + 3_600_000))
  const given = new Date(clock.now().getTime() + 60_000)
  assert.deepEqual((await createCallbackTask({ callbackUrl, event: 'e', deadline: given }, sender)).deadline, given)
  const { sender: plain } = setup()
  assert.equal((await createCallbackTask({ callbackUrl, event: 'e' }, plain)).deadline, undefined)
})

test('the caller\'s transaction is passed to store.insert (outbox)', async () => {
  const { store, inserts } = recordingStore()
  const transaction = { query: async () => ({ rows: [] }) }
  const sender = { store, secret: generateSecret() }
  await createCallbackTask({ callbackUrl, event: 'e' }, { ...sender, transaction })
  await createCallbackTask({ callbackUrl, event: 'e' }, sender)
  assert.equal((inserts[0]!.options as { transaction: unknown }).transaction, transaction)
  assert.equal(inserts[1]!.options, undefined)
})

test("an encryptionKey is stored with the task as a copy, and verifyIntent as asked", async () => {
  const { store, sender } = setup()
  const { publicJwk } = await generateEncryptionKey()
  const given = { ...publicJwk }
  const byJwk = await createCallbackTask({ callbackUrl, event: 'report.ready', encryptionKey: given, verifyIntent: true }, sender)
  given.x = 'changed-after-the-fact'
  assert.deepEqual((await store.get(byJwk.id))?.encryptionKey, publicJwk)
  assert.equal((await store.get(byJwk.id))?.verifyIntent, true)
  const byUrl = await createCallbackTask({ callbackUrl, event: 'report.ready', encryptionKey: 'https://client.example.com/.well-known/jwks.json' }, sender)
  assert.equal((await store.get(byUrl.id))?.encryptionKey, 'https://client.example.com/.well-known/jwks.json')
  assert.equal((await store.get(byUrl.id))?.verifyIntent, undefined)
})

test('an encryptionKey that could never be used is refused before anything is stored, without echoing the key', async () => {
  const { sender } = setup()
  const inserted: NewCallbackTask[] = []
  const store = sender.store
  const spy: CallbackStore = { ...store, insert: (task, options) => (inserted.push(task), store.insert(task, options)) }
  const spied = { ...sender, store: spy }
  const { privateJwk, publicJwk } = await generateEncryptionKey()
  const cases: Array<[unknown, RegExp]> = [
    [privateJwk, /^encryptionKey must be a public key$/],
    [{ kty: 'OKP', crv: 'Ed25519', x: publicJwk.x }, /^encryptionKey must be an EC \(P-256\/384\/521\) or OKP X25519 JWK$/],
    [{ ...publicJwk, use: 'sig' }, /^encryptionKey is not an encryption key/],
    [{ ...publicJwk, alg: 'ECDH-ES+A256KW' }, /^encryptionKey\.alg must be "ECDH-ES"/],
    ['http://client.example.com/jwks.json', /^encryptionKey must be an https: JWKS URL$/],
    ['not a url', /^encryptionKey must be a public JWK or the absolute URL of a JWKS$/],
  ]
  for (const [encryptionKey, message] of cases) {
    await assert.rejects(createCallbackTask({ callbackUrl, event: 'e', encryptionKey: encryptionKey as string }, spied), (error: unknown) => {
      assert.ok(error instanceof TypeError, String(error))
      assert.match(error.message, message)
      assert.ok(!error.message.includes(String(privateJwk.d)))
      return true
    })
  }
  await assert.rejects(createCallbackTask({ callbackUrl, event: 'e', encryptionKey: 'https://169.254.169.254/jwks.json' }, spied), (error: unknown) => {
    assert.ok(error instanceof UrlPolicyError)
    assert.equal(error.code, 'ERR_CALLBACK_URL_FORBIDDEN_ADDRESS')
    assert.match(error.message, /^encryptionKey is refused by the URL policy/)
    return true
  })
  await assert.rejects(createCallbackTask({ callbackUrl, event: 'e', verifyIntent: 'yes' as unknown as boolean }, spied), {
    name: 'TypeError',
    message: 'verifyIntent must be a boolean',
  })
  assert.equal(inserted.length, 0)
})
