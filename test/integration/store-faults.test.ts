/**
 * Bad conditions for the durable stores: the database goes away under a running worker (a TCP proxy
 * between them is cut and restored; the shared servers themselves are never touched), and a
 * poisoned task that can never be sent.
 */
import assert from 'node:assert/strict'
import { createCallbackTask, createHttpTransport, createWorker, generateSecret } from 'endpoint-callback'
import type { CallbackStore, DeliveryEvent } from 'endpoint-callback'
import { inParallel, makeDue, openDurableStore, type DurableKind, type DurableStore } from '../support/durable-stores.ts'
import { startLoopbackReceiver, type LoopbackReceiver } from '../support/loopback-receiver.ts'
import { DATABASE_URL, REDIS_URL, serviceSkip, serviceTests } from '../support/services.ts'
import { startTcpProxy, type TcpProxy } from '../support/tcp-proxy.ts'

const LEASE_MS = 2000
const urlPolicy = { allowHttp: true, allowHosts: ['127.0.0.1'] }

async function until(condition: () => boolean | Promise<boolean>, what: string, timeoutMs = 60_000) {
  const deadline = Date.now() + timeoutMs
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 25))
  }
}

async function statuses(store: CallbackStore, ids: string[]): Promise<Record<string, number>> {
  const counts: Record<string, number> = {}
  for (const task of await Promise.all(ids.map((id) => store.get(id)))) {
    const status = task?.status ?? 'missing'
    counts[status] = (counts[status] ?? 0) + 1
  }
  return counts
}

for (const kind of ['postgres', 'redis'] as const satisfies DurableKind[]) {
  const skip = await serviceSkip(kind)
  const { after, before, describe, it } = serviceTests(skip)

  describe(`${kind} store under bad conditions`, { timeout: 120_000 }, () => {
    let direct: DurableStore
    let receiver: LoopbackReceiver
    const secret = generateSecret()
    const poisonStatus = new Map<string, number>()

    before(async () => {
      direct = await openDurableStore(kind)
      receiver = await startLoopbackReceiver({ delayMs: 10, status: (id) => poisonStatus.get(id) ?? 200 })
    })
    after(async () => {
      await receiver?.close()
      await direct?.drop()
    })

    async function enqueue(count: number): Promise<string[]> {
      const sender = { store: direct.store, secret, urlPolicy }
      const ids: string[] = []
      await inParallel(Array.from({ length: count }, (_, i) => i), 10, async (i) => {
        const task = await createCallbackTask({ callbackUrl: receiver.url, event: 'report.ready', metadata: { i } }, sender)
        ids.push(task.id)
        await makeDue(direct.store, task)
      })
      return ids
    }

    it('carries on without losing a task when the connection to the database is cut mid-run and restored', async (t) => {
      const target = new URL(kind === 'postgres' ? DATABASE_URL : REDIS_URL)
      const proxy: TcpProxy = await startTcpProxy({ host: target.hostname, port: Number(target.port || (kind === 'postgres' ? 5432 : 6379)) })
      const proxied = new URL(target)
      proxied.hostname = '127.0.0.1'
      proxied.port = String(proxy.port)
      const throughProxy = await openDurableStore(kind, { name: direct.name, url: proxied.href, max: 4 })

      const ids = await enqueue(400)
      const errors: unknown[] = []
      const transport = createHttpTransport({ timeoutMs: 1000, urlPolicy })
      const worker = createWorker({
        store: throughProxy.store,
        transport,
        secret,
        urlPolicy,
        leaseMs: LEASE_MS,
        concurrency: 8,
        pollIntervalMs: 100,
        onEvent: (event: DeliveryEvent) => {
          if (event.type === 'error') errors.push(event.error)
        }
      })
      worker.start()
      try {
        await until(() => receiver.seen.size >= 100, '100 callbacks arrived')
        proxy.cut()
        const seenAtCut = receiver.seen.size
        await new Promise((resolve) => setTimeout(resolve, 2500))
        // Only what was claimed before the cut can still arrive: nothing new is claimed meanwhile.
        assert.ok(receiver.seen.size - seenAtCut <= 8, `${receiver.seen.size - seenAtCut} arrived during the outage`)
        assert.ok(receiver.seen.size < ids.length, 'the outage came while tasks were still waiting')
        proxy.restore()
        await until(() => ids.every((id) => receiver.seen.has(id)), 'every callback arrived after the restore')
        await until(async () => (await statuses(direct.store, ids)).delivered === ids.length, 'every task is delivered', LEASE_MS * 5)
        // (ioredis queues commands while it reconnects, so the Redis worker may see no error at all)
        t.diagnostic(`${kind}: ${errors.length} store errors during the outage, ${seenAtCut} delivered before it, ${receiver.requests} requests for ${ids.length} tasks`)
      } finally {
        proxy.restore()
        await worker.stop()
        await transport.close()
        await throughProxy.close()
        await proxy.close()
      }
      assert.deepEqual(await statuses(direct.store, ids), { delivered: ids.length })
    })

    it('ends poisoned tasks as failed instead of retrying them forever, and delivers the rest', async () => {
      const ids = await enqueue(20)
      const [refused, unsignable] = ids as [string, string]
      // the receiver refuses this one's payload outright, with a status the sender fails at once
      poisonStatus.set(refused, 422)
      // this one's stored secret cannot be decoded, so no attempt can ever be signed
      if (kind === 'postgres') {
        await direct.sql!(`UPDATE "${direct.name}".tasks SET secret = '"whsec_%%%not-base64"' WHERE id = $1`, [unsignable])
      } else {
        await direct.redis!.hset(`${direct.name}:task:${unsignable}`, 'secret', '"whsec_%%%not-base64"')
      }
      const transport = createHttpTransport({ timeoutMs: 1000, urlPolicy })
      const worker = createWorker({
        store: direct.store,
        transport,
        secret,
        urlPolicy,
        leaseMs: LEASE_MS,
        concurrency: 4,
        pollIntervalMs: 50,
        retry: { schedule: [50, 50], failStatuses: [422] }
      })
      worker.start()
      try {
        await until(
          async () => {
            const counts = await statuses(direct.store, ids)
            return counts.delivered === ids.length - 2 && counts.failed === 2
          },
          'the poisoned tasks failed and the others were delivered',
          20_000
        )
      } finally {
        await worker.stop()
        await transport.close()
      }
      const refusedTask = await direct.store.get(refused)
      assert.equal(refusedTask?.attempts, 1, 'a refused payload is not sent again')
      assert.match(refusedTask?.lastError ?? '', /422/)
      assert.equal(receiver.seen.get(refused), 1)
      const unsignableTask = await direct.store.get(unsignable)
      // A secret that cannot sign never will: no retry could help, so the first attempt ends it.
      assert.equal(unsignableTask?.attempts, 1, 'an unsignable task is not retried')
      assert.match(unsignableTask?.lastError ?? '', /^ERR_CALLBACK_TASK_STATE: the task's secret cannot sign .*base64/)
      assert.doesNotMatch(unsignableTask?.lastError ?? '', /%%%not-base64/, 'the secret is not in the reason')
      assert.equal(receiver.seen.has(unsignable), false)
      const history = await direct.store.attempts(unsignable)
      assert.deepEqual(history.map((attempt) => attempt.outcome), ['failed'])
    })
  })
}
