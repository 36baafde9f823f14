/**
 * Secret hygiene across a whole flow, on every store that can run here: tasks created with the
 * client's own secret and the receiver's encryption key, delivered through failures (503, a reset
 * connection) to success by `deliver` and the worker, plus a task whose stored secret cannot sign.
 * No secret, signing key, private JWK or decryption key may appear in any error message, event,
 * attempt record or `lastError`. The task itself keeps its own secret (the store needs it to sign
 * later attempts); every other field of it is checked too.
 */
import { describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { createServer } from 'node:http'
import { setTimeout as sleep } from 'node:timers/promises'
import express from 'express'
import {
  createCallbackTask,
  createHttpTransport,
  createKeyRing,
  createMemoryStore,
  createVerifier,
  createWorker,
  deliver,
  generateEncryptionKey,
  generateSecret,
  generateSigningKey,
  signingKeyToJwk,
} from 'endpoint-callback'
import type { CallbackStore, DeliveryEvent, SenderOptions } from 'endpoint-callback'
import { callbackReceiver } from 'endpoint-callback/express'
import { openDurableStore } from '../support/durable-stores.ts'
import type { DurableStore } from '../support/durable-stores.ts'
import { listening } from '../support/http-harness.ts'
import { serviceSkip } from '../support/services.ts'

const urlPolicy = { allowHttp: true, allowHosts: ['127.0.0.1'] }

interface StoreUnderTest {
  store: CallbackStore
  close(): Promise<void>
}

const stores: Array<{ name: string; skip: () => Promise<string | false>; open: () => Promise<StoreUnderTest> }> = [
  { name: 'memory', skip: async () => false, open: async () => ({ store: createMemoryStore(), close: async () => {} }) },
  {
    name: 'postgres',
    skip: () => serviceSkip('postgres'),
    open: async () => {
      const durable: DurableStore = await openDurableStore('postgres')
      return { store: durable.store, close: () => durable.drop() }
    },
  },
  {
    name: 'redis',
    skip: () => serviceSkip('redis'),
    open: async () => {
      const durable: DurableStore = await openDurableStore('redis')
      return { store: durable.store, close: () => durable.drop() }
    },
  },
]

/** Every spelling of a key that must never leak: the whole string, and the key bytes on their own. */
function spellings(secretMaterial: string[]): string[] {
  const out = new Set<string>()
  for (const value of secretMaterial) {
    out.add(value)
    const underscore = value.indexOf('_')
    if (underscore > 0 && underscore < 8) out.add(value.slice(underscore + 1))
  }
  return [...out].filter((value) => value.length >= 16)
}

async function until(condition: () => Promise<boolean>, ms = 10_000): Promise<void> {
  const end = Date.now() + ms
  while (!(await condition())) {
    if (Date.now() > end) throw new Error(`not within ${ms} ms: ${String(condition)}`)
    await sleep(10)
  }
}

for (const { name, skip, open } of stores) {
  describe(`secret hygiene with the ${name} store`, async () => {
    const reason = await skip()
    test('no secret, signing key, private JWK or decryption key reaches an error, event, attempt record or lastError', { skip: reason }, async (t) => {
      const senderSecret = generateSecret()
      const taskSecret = generateSecret()
      const ringKey = generateSigningKey()
      const { privateJwk, publicJwk } = await generateEncryptionKey()
      const unusableSecret = 'whsec_c2VjcmV0LWJ1dC10b28tc2hvcnQ=' // 21 bytes: too short to sign with
      const secrets = spellings([
        senderSecret,
        taskSecret,
        ringKey.signingKey,
        signingKeyToJwk(ringKey.signingKey).d!,
        privateJwk.d!,
        unusableSecret,
      ])
      secrets.push(JSON.stringify(privateJwk))

      // The receiver: 503 with a chatty body first, then a reset connection, then it takes the callback.
      const answers = new Map<string, number>()
      const app = express()
      app.post(
        '/callbacks',
        (req, res, next) => {
          const id = String(req.headers['webhook-id'])
          const seen = (answers.get(id) ?? 0) + 1
          answers.set(id, seen)
          if (seen === 1) return void res.status(503).send('busy, try later')
          // Reset three times: the attempt's quick retries of a refused connection fail too.
          if (seen <= 4) return void req.socket.destroy()
          next()
        },
        callbackReceiver({ secret: taskSecret, decryptionKey: privateJwk }),
        (_req, res) => void res.sendStatus(204)
      )
      const receiver = await listening(createServer(app))
      t.after(() => receiver.close())

      const { store, close } = await open()
      t.after(close)
      const transport = createHttpTransport({ urlPolicy })
      t.after(() => transport.close())
      const events: DeliveryEvent[] = []
      const sender: SenderOptions = {
        store,
        transport,
        urlPolicy,
        secret: senderSecret,
        keyRing: createKeyRing([{ signingKey: ringKey.signingKey }]),
        retry: { schedule: [20, 20, 20], jitter: 0 },
        onEvent: (event) => events.push(event),
      }

      const messages: string[] = []
      const collect = async (attempt: () => unknown) => {
        try {
          await attempt()
        } catch (error) {
          for (let cause: unknown = error; cause instanceof Error; cause = cause.cause) messages.push(`${cause.name}: ${cause.message}`, String(cause.stack))
        }
      }

      const task = await createCallbackTask(
        { callbackUrl: receiver.url, event: 'report.ready', secret: taskSecret, encryptionKey: publicJwk },
        sender
      )
      const first = await deliver(task, { report: 'r-1' }, sender)
      assert.equal(first.status, 'retrying')
      // A stored secret that cannot sign (written past createCallbackTask's checks, as an old row might be).
      const { task: broken } = await store.insert({
        id: `msg_broken_${Date.now()}`,
        callbackUrl: receiver.url,
        event: 'report.ready',
        secret: unusableSecret,
        createdAt: new Date(),
      })
      const brokenReport = await deliver(broken, { report: 'r-2' }, sender)
      assert.equal(brokenReport.status, 'failed')

      const worker = createWorker({ ...sender, pollIntervalMs: 10 })
      worker.start()
      t.after(() => worker.stop())
      await until(async () => (await store.get(task.id))?.status === 'delivered')
      await worker.stop()

      // Errors a user can provoke with key material in hand.
      await collect(() => createCallbackTask({ callbackUrl: receiver.url, event: 'e', secret: unusableSecret }, sender))
      await collect(() => createCallbackTask({ callbackUrl: receiver.url, event: 'e', encryptionKey: privateJwk }, sender))
      await collect(() => createVerifier({ secret: `${taskSecret}!` }))
      await collect(() => createVerifier({ publicKey: ringKey.signingKey }))
      await collect(() => createKeyRing([{ signingKey: ringKey.signingKey }, { signingKey: ringKey.signingKey }]))
      assert.ok(messages.length >= 5, 'each provoked error was caught')

      const attempts = [...(await store.attempts(task.id)), ...(await store.attempts(broken.id))]
      assert.deepEqual(
        attempts.map((attempt) => attempt.outcome),
        ['retry', 'retry', 'delivered', 'failed']
      )
      assert.equal(attempts[0]!.responseBody, 'busy, try later')
      assert.match(attempts[1]!.error!, /^ERR_CALLBACK_CONNECTION: /)
      const tasks = [await store.get(task.id), await store.get(broken.id)].map((stored) => {
        assert.ok(stored)
        const { secret: _own, ...rest } = stored
        return rest
      })
      assert.match(tasks[1]!.lastError!, /^ERR_CALLBACK_TASK_STATE: the task's secret cannot sign/)
      assert.ok(events.length >= 6)

      const haystacks: Array<[string, string]> = [
        ...messages.map((message): [string, string] => ['error message', message]),
        ...events.map((event): [string, string] => [`${event.type} event`, JSON.stringify(event)]),
        ...attempts.map((attempt): [string, string] => ['attempt record', JSON.stringify(attempt)]),
        ...tasks.map((stored): [string, string] => ['task (besides its own secret)', JSON.stringify(stored)]),
        ['delivery reports', JSON.stringify([first, brokenReport])],
      ]
      for (const [where, text] of haystacks) {
        for (const secret of secrets) assert.ok(!text.includes(secret), `a secret appears in a ${where}: ${text.slice(0, 200)}`)
      }
      // The events' tasks leave the per-task secret out, and the delivered body on the wire was a JWE.
      assert.ok(events.every((event) => !('task' in event) || event.task.secret === undefined))
      assert.equal(tasks[0]!.contentType, 'application/jose')
    })
  })
}
