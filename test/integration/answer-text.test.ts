/**
 * A receiver's answer is untrusted text that ends up in every store: a NUL byte (which PostgreSQL's
 * `text` refuses) or half a surrogate pair must never keep an attempt from being recorded, and a
 * store that refuses the answer's text anyway must still count the attempt.
 */
import assert from 'node:assert/strict'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { createCallbackTask, createHttpTransport, createMemoryStore, deliver, generateSecret, StoreError } from 'endpoint-callback'
import type { CallbackStore, DeliveryEvent, HttpTransport } from 'endpoint-callback'
import { openDurableStore, type DurableStore } from '../support/durable-stores.ts'
import { serviceSkip, serviceTests } from '../support/services.ts'

const urlPolicy = { allowHttp: true, allowHosts: ['127.0.0.1'] }

/** A receiver on 127.0.0.1 that answers each path with the status and the raw bytes it names. */
async function startHostileReceiver() {
  const answers: Record<string, { status: number; body: Buffer }> = {
    '/nul-ok': { status: 200, body: Buffer.from('ok\u0000', 'utf8') },
    '/nul-busy': { status: 503, body: Buffer.from('busy\u0000 try later', 'utf8') },
    // 1023 ASCII characters then an emoji: cut at 1024 UTF-16 units, half a surrogate pair is left
    '/split-pair': { status: 200, body: Buffer.from(`${'a'.repeat(1023)}\u{1F600}tail`, 'utf8') },
  }
  const server = createServer((req, res) => {
    req.resume()
    req.on('end', () => {
      const answer = answers[req.url ?? ''] ?? { status: 404, body: Buffer.alloc(0) }
      res.writeHead(answer.status, { 'content-type': 'text/plain' })
      res.end(answer.body)
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  return {
    url: (path: string) => `http://127.0.0.1:${port}${path}`,
    close: () => new Promise<void>((resolve) => {
      server.closeAllConnections()
      server.close(() => resolve())
    }),
  }
}

const kinds = [
  ['memory', false],
  ['postgres', await serviceSkip('postgres')],
  ['redis', await serviceSkip('redis')],
] as const

for (const [kind, skip] of kinds) {
  const { after, before, describe, it } = serviceTests(skip)
  describe(`answers with NUL bytes on the ${kind} store`, { timeout: 60_000 }, () => {
    let durable: DurableStore | undefined
    let store: CallbackStore
    let receiver: Awaited<ReturnType<typeof startHostileReceiver>>
    let transport: HttpTransport
    const secret = generateSecret()

    before(async () => {
      if (kind === 'memory') store = createMemoryStore()
      else {
        durable = await openDurableStore(kind)
        store = durable.store
      }
      receiver = await startHostileReceiver()
      transport = createHttpTransport({ timeoutMs: 2_000, urlPolicy })
    })
    after(async () => {
      await transport?.close()
      await receiver?.close()
      await durable?.drop()
    })

    it('counts a 2xx whose body holds a NUL byte as delivered, and records the answer without it', async () => {
      const sender = { store, secret, urlPolicy, transport }
      const task = await createCallbackTask({ callbackUrl: receiver.url('/nul-ok'), event: 'report.ready' }, sender)
      const report = await deliver(task, { ok: true }, sender)
      assert.equal(report.status, 'delivered')
      assert.equal(report.attempts, 1)
      const stored = await store.get(task.id)
      assert.equal(stored?.status, 'delivered')
      assert.equal(stored?.attempts, 1)
      const [attempt, ...more] = await store.attempts(task.id)
      assert.equal(more.length, 0)
      assert.equal(attempt?.status, 200)
      assert.equal(attempt?.responseBody, 'ok\uFFFD', 'a NUL is stored as U+FFFD')
    })

    it('keeps the backoff for a 5xx whose body holds a NUL byte', async () => {
      const sender = { store, secret, urlPolicy, transport, retry: { schedule: [60_000], jitter: 0 } }
      const task = await createCallbackTask({ callbackUrl: receiver.url('/nul-busy'), event: 'report.ready' }, sender)
      const before = Date.now()
      const report = await deliver(task, { ok: true }, sender)
      assert.equal(report.status, 'retrying')
      assert.equal(report.attempts, 1)
      assert.ok(report.nextAttemptAt !== undefined && report.nextAttemptAt.getTime() >= before + 60_000, 'the next attempt waits for the schedule')
      const stored = await store.get(task.id)
      assert.equal(stored?.status, 'scheduled')
      assert.equal(stored?.attempts, 1)
      assert.equal(stored?.nextAttemptAt?.getTime(), report.nextAttemptAt?.getTime())
      const [attempt] = await store.attempts(task.id)
      assert.equal(attempt?.responseBody, 'busy\uFFFD try later')
      assert.equal(attempt?.outcome, 'retry')
    })

    it('never stores half a surrogate pair when the recorded answer is cut', async () => {
      const sender = { store, secret, urlPolicy, transport }
      const task = await createCallbackTask({ callbackUrl: receiver.url('/split-pair'), event: 'report.ready' }, sender)
      const report = await deliver(task, { ok: true }, sender)
      assert.equal(report.status, 'delivered')
      const [attempt] = await store.attempts(task.id)
      assert.equal(attempt?.responseBody, 'a'.repeat(1023), 'cut before the pair, not inside it')
      assert.doesNotMatch(attempt?.responseBody ?? '', /[\uD800-\uDFFF]/)
    })

    it('still counts the attempt when the store refuses the answer text', async () => {
      // A store of the user's own that refuses some text: the attempt is recorded without it.
      const refusing: CallbackStore = Object.create(store) as CallbackStore
      let refused = 0
      refusing.complete = async (lease, attempt, resolution) => {
        if (attempt.responseBody !== undefined) {
          refused++
          throw new StoreError('ERR_CALLBACK_STORE', 'invalid byte sequence for encoding "UTF8"')
        }
        return store.complete(lease, attempt, resolution)
      }
      const events: DeliveryEvent[] = []
      const sender = { store: refusing, secret, urlPolicy, transport, onEvent: (event: DeliveryEvent) => events.push(event) }
      const task = await createCallbackTask({ callbackUrl: receiver.url('/nul-ok'), event: 'report.ready' }, sender)
      const report = await deliver(task, { ok: true }, sender)
      assert.equal(refused, 1)
      assert.equal(report.status, 'delivered')
      assert.equal((await store.get(task.id))?.status, 'delivered')
      const [attempt] = await store.attempts(task.id)
      assert.equal(attempt?.status, 200)
      assert.equal(attempt?.responseBody, undefined)
      assert.match(attempt?.error ?? '', /^ERR_CALLBACK_STORE: the answer's text could not be stored/)
      assert.deepEqual(events.map((event) => event.type), ['error', 'attempt', 'delivered'], 'the refusal is reported, then the attempt')
    })
  })
}
