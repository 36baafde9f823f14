/**
 * Several workers sharing one store, delivering to a real receiver on 127.0.0.1, one of them stopped
 * half-way: every task lands, none is sent twice while a lease on it is held.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { setTimeout as sleep } from 'node:timers/promises'
import { within } from '../support/waits.ts'
import { createCallbackTask, createHttpTransport, createMemoryStore, createWorker, deliver, generateSecret } from 'endpoint-callback'
import type { SenderOptions, WorkerOptions } from 'endpoint-callback'
import { answer, startReceiver } from '../support/callback-receiver.ts'
import { createTestClock } from '../support/sender.ts'

// Loopback over plain http is refused by default; the test opts in explicitly.
const urlPolicy = { allowHttp: true, allowHosts: ['127.0.0.1'] }

async function until(condition: () => boolean | Promise<boolean>, ms = 20_000): Promise<void> {
  const end = Date.now() + ms
  while (!(await condition())) {
    if (Date.now() > end) throw new Error(`not within ${ms} ms: ${String(condition)}`)
    await sleep(10)
  }
}

test('four workers on one store deliver 400 tasks exactly once each, one of them stopped half-way', async () => {
  const TASKS = 400
  let accepting = false
  const inFlight = new Set<string>()
  const overlapping: string[] = []
  const deliveredTimes = new Map<string, number>()
  const receiver = await startReceiver((request, response) => {
    const id = String(request.headers['webhook-id'])
    if (!accepting) return answer(response, 503)
    if (inFlight.has(id)) overlapping.push(id)
    inFlight.add(id)
    // A little work on the receiving side, so attempts of different workers overlap in time.
    setTimeout(() => {
      inFlight.delete(id)
      deliveredTimes.set(id, (deliveredTimes.get(id) ?? 0) + 1)
      answer(response, 204)
    }, 2 + Math.floor(Math.random() * 8))
  })
  const transport = createHttpTransport({ urlPolicy })
  const clock = createTestClock()
  const sender: SenderOptions = { store: createMemoryStore(), secret: generateSecret(), urlPolicy, transport, now: clock.now, retry: { jitter: 0 } }

  try {
    // Every task's first attempt meets a 503, so all of them wait in the store for a worker. The
    // 503s are staged: they are not to open the destination's breaker (five real ones in a row
    // would, and then the next tasks would wait for its probe without an inline attempt).
    const staged: WorkerOptions = { ...sender, breaker: false }
    const ids: string[] = []
    for (let i = 0; i < TASKS; i++) {
      const task = await createCallbackTask({ callbackUrl: receiver.url, event: 'job.done', idempotencyKey: `job-${i}` }, sender)
      assert.equal((await deliver(task.id, { job: i }, staged)).status, 'retrying')
      ids.push(task.id)
    }
    accepting = true
    clock.advance(5_000)

    const sentBy = [0, 0, 0, 0]
    const unexpected: string[] = []
    const workers = sentBy.map((_, n) =>
      createWorker({
        ...sender,
        pollIntervalMs: 20,
        concurrency: 8,
        batchSize: 4,
        onEvent: (event) => {
          if (event.type === 'attempt') sentBy[n]!++
          if (event.type === 'lease-lost' || event.type === 'error') unexpected.push(`worker ${n}: ${event.type}`)
        },
      })
    )
    for (const worker of workers) worker.start()

    await until(() => deliveredTimes.size >= TASKS / 4)
    await within(workers[0]!.stop(), 'stop() of the first worker did not resolve')
    const sentByStopped = sentBy[0]!
    assert.equal(workers[0]!.running, false)
    assert.equal(workers[0]!.active, 0)

    await until(async () => {
      for (const id of ids) if ((await sender.store.get(id))?.status !== 'delivered') return false
      return true
    })
    await within(Promise.all(workers.slice(1).map((worker) => worker.stop())), 'stop() of the other workers did not resolve')

    assert.deepEqual(unexpected, [])
    assert.equal(deliveredTimes.size, TASKS, 'every task landed')
    assert.deepEqual([...deliveredTimes.values()].filter((times) => times !== 1), [], 'none landed twice')
    assert.deepEqual(overlapping, [], 'no task was sent while another attempt on it was in flight')
    assert.equal(sentBy[0], sentByStopped, 'the stopped worker sent nothing after stop() resolved')
    assert.ok(sentByStopped > 0, 'the stopped worker had taken part')
    assert.equal(sentBy.reduce((a, b) => a + b, 0), TASKS)
    assert.ok(sentBy.filter((count) => count > 0).length >= 2, `work was shared: ${sentBy.join(', ')}`)
    for (const id of ids.slice(0, 20)) {
      const history = await sender.store.attempts(id)
      assert.deepEqual(history.map((attempt) => attempt.status), [503, 204])
    }
  } finally {
    await transport.close?.()
    await receiver.close()
  }
})
