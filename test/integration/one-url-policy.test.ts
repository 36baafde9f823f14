/**
 * One URL policy per sender: the README shows a sender-level `urlPolicy` beside a transport of the
 * user's own making; a URL the sender accepts at creation must never be refused by the transport
 * at delivery on policy grounds.
 */
import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { createCallbackTask, createHttpTransport, createMemoryStore, deliver, generateSecret } from 'endpoint-callback'
import { startLoopbackReceiver } from '../support/loopback-receiver.ts'
import type { LoopbackReceiver } from '../support/loopback-receiver.ts'

describe('one URL policy per sender', () => {
  let receiver: LoopbackReceiver
  before(async () => {
    receiver = await startLoopbackReceiver()
  })
  after(async () => {
    await receiver?.close()
  })

  it("lets the sender's urlPolicy govern a transport created without one", async () => {
    const transport = createHttpTransport({ timeoutMs: 5_000 })
    try {
      const sender = { store: createMemoryStore(), secret: generateSecret(), transport, urlPolicy: { allowHttp: true, allowHosts: ['127.0.0.1'] } }
      const task = await createCallbackTask({ callbackUrl: receiver.url, event: 'e' }, sender)
      const report = await deliver(task.id, {}, sender)
      assert.equal(report.status, 'delivered', report.error)
      assert.equal(receiver.seen.get(task.id), 1)
      // options spread per call ({ ...sender, transaction }) share one twin, never a pool each
      let twins = 0
      const withUrlPolicy = transport.withUrlPolicy.bind(transport)
      Object.assign(transport, { withUrlPolicy: (policy: Parameters<typeof withUrlPolicy>[0]) => (twins++, withUrlPolicy(policy)) })
      for (let i = 0; i < 3; i++) await createCallbackTask({ callbackUrl: receiver.url, event: 'e' }, { ...sender })
      assert.equal(twins, 0)
    } finally {
      await transport.close()
    }
  })

  it("takes the transport's own policy when the sender names none", async () => {
    const transport = createHttpTransport({ timeoutMs: 5_000, urlPolicy: { allowHttp: true, allowHosts: ['127.0.0.1'] } })
    try {
      const sender = { store: createMemoryStore(), secret: generateSecret(), transport }
      const task = await createCallbackTask({ callbackUrl: receiver.url, event: 'e' }, sender)
      assert.equal((await deliver(task.id, {}, sender)).status, 'delivered')
    } finally {
      await transport.close()
    }
  })

  it('refuses a sender whose policy disagrees with its transport, before anything is stored', async () => {
    const transport = createHttpTransport({ timeoutMs: 5_000, urlPolicy: { allowHttp: true } })
    try {
      const store = createMemoryStore()
      const sender = { store, secret: generateSecret(), transport, urlPolicy: { allowHttp: true, allowHosts: ['127.0.0.1'] } }
      await assert.rejects(createCallbackTask({ callbackUrl: receiver.url, event: 'e' }, sender), {
        name: 'TypeError',
        message: /urlPolicy: the transport was created with a different urlPolicy than the sender/,
      })
      assert.equal((await store.list!({ status: 'pending' })).tasks.length, 0)
      // the same policy, written in another order, agrees
      const same = { ...sender, transport: createHttpTransport({ timeoutMs: 5_000, urlPolicy: { allowHosts: ['127.0.0.1'], allowHttp: true } }) }
      await createCallbackTask({ callbackUrl: receiver.url, event: 'e' }, same)
      await same.transport.close()
    } finally {
      await transport.close()
    }
  })

  it('names the nearest option for a misspelt transport option', () => {
    assert.throws(() => createHttpTransport({ timeoutMS: 5 } as never), { name: 'TypeError', message: /createHttpTransport: unknown option `timeoutMS` \(did you mean `timeoutMs`\?\)/ })
  })
})
