/**
 * Three worker processes share one durable store; one of them is killed with SIGKILL mid-flight,
 * twice, and restarted. Every callback must still arrive, nothing may stay leased, and the only
 * duplicates are the deliveries that were in flight when the worker died.
 */
import assert from 'node:assert/strict'
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { fileURLToPath } from 'node:url'
import { createCallbackTask, generateSecret } from 'endpoint-callback'
import { inParallel, makeDue, openDurableStore, type DurableKind, type DurableStore } from '../support/durable-stores.ts'
import { startLoopbackReceiver, type LoopbackReceiver } from '../support/loopback-receiver.ts'
import { serviceSkip, serviceTests } from '../support/services.ts'

const TASKS = 2000
const LEASE_MS = 2000
const CONCURRENCY = 10
const workerScript = fileURLToPath(new URL('../support/crash-worker.ts', import.meta.url))

for (const kind of ['postgres', 'redis'] as const satisfies DurableKind[]) {
  const skip = await serviceSkip(kind)
  const { after, before, describe, it } = serviceTests(skip)

  describe(`crash safety on ${kind}`, { timeout: 180_000 }, () => {
    let durable: DurableStore
    let receiver: LoopbackReceiver
    const workers = new Set<ChildProcess>()
    const secret = generateSecret()

    before(async () => {
      durable = await openDurableStore(kind)
      // answers after a moment, so every worker always has deliveries in flight
      receiver = await startLoopbackReceiver({ delayMs: 15 })
    })

    after(async () => {
      for (const child of workers) child.kill('SIGKILL')
      await receiver?.close()
      await durable?.drop()
    })

    async function startWorker(): Promise<ChildProcess> {
      const child = spawn(process.execPath, ['--conditions=endpoint-callback-source', '--import', 'tsx', workerScript], {
        env: {
          ...process.env,
          EC_STORE: kind,
          EC_STORE_NAME: durable.name,
          EC_SECRET: secret,
          EC_LEASE_MS: String(LEASE_MS),
          EC_CONCURRENCY: String(CONCURRENCY)
        },
        stdio: ['ignore', 'pipe', 'inherit']
      })
      workers.add(child)
      child.once('exit', () => workers.delete(child))
      let output = ''
      await new Promise<void>((resolve, reject) => {
        child.stdout!.on('data', (chunk: Buffer) => {
          output += chunk.toString()
          if (output.includes('ready')) resolve()
        })
        child.once('exit', (code) => reject(new Error(`worker exited with ${code} before it was ready`)))
      })
      return child
    }

    async function until(condition: () => boolean | Promise<boolean>, what: string, timeoutMs = 90_000) {
      const deadline = Date.now() + timeoutMs
      while (!(await condition())) {
        if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`)
        await new Promise((resolve) => setTimeout(resolve, 25))
      }
    }

    it(`delivers all ${TASKS} callbacks while one of three worker processes is SIGKILLed twice`, async (t) => {
      const sender = { store: durable.store, secret, urlPolicy: { allowHttp: true, allowHosts: ['127.0.0.1'] } }
      const ids: string[] = []
      const inputs = Array.from({ length: TASKS }, (_, i) => i)
      await inParallel(inputs, 20, async (i) => {
        const task = await createCallbackTask({ callbackUrl: receiver.url, event: 'report.ready', metadata: { i } }, sender)
        ids.push(task.id)
        await makeDue(durable.store, task, { report: i })
      })
      assert.equal(new Set(ids).size, TASKS)

      const pool = await Promise.all([startWorker(), startWorker(), startWorker()])
      let victim = pool[0]!
      const killedAt: number[] = []
      const killedPids = new Map<string, number>()
      let seenAtKill = 0
      for (const threshold of [TASKS * 0.25, TASKS * 0.6]) {
        // The replacement starts (seconds under tsx) while the others deliver, so the kills come at
        // their thresholds however fast the workers drain.
        const replacement = startWorker()
        replacement.catch(() => {}) // awaited below; a failure to start fails the test there
        await until(() => receiver.seen.size >= threshold, `${threshold} callbacks arrived`)
        // a kill while the victim has deliveries in flight: it never records their outcome
        victim.kill('SIGKILL')
        killedAt.push(Date.now())
        killedPids.set(String(victim.pid), killedAt.at(-1)!)
        seenAtKill = receiver.seen.size
        await once(victim, 'exit')
        victim = await replacement
      }
      assert.ok(seenAtKill < TASKS, `the second kill came before the last callback arrived (${seenAtKill} had)`)

      await until(() => ids.every((id) => receiver.seen.has(id)), 'every webhook-id arrived')
      await until(
        async () => (await Promise.all(ids.map((id) => durable.store.get(id)))).every((task) => task?.status === 'delivered'),
        'every task is delivered in the store',
        LEASE_MS * 5
      )

      // Once every lease has run out, nothing is left delivering and nothing is sent again.
      const requestsBefore = receiver.requests
      await new Promise((resolve) => setTimeout(resolve, LEASE_MS + 500))
      const tasks = await Promise.all(ids.map((id) => durable.store.get(id)))
      const byStatus = new Map<string, number>()
      for (const task of tasks) byStatus.set(task!.status, (byStatus.get(task!.status) ?? 0) + 1)
      assert.deepEqual(Object.fromEntries(byStatus), { delivered: TASKS })
      assert.equal(receiver.requests, requestsBefore, 'no delivery after all were recorded')
      assert.ok(ids.every((id) => receiver.seen.has(id)))

      // Duplicates: only tasks the killed worker had leased (per kill at most its concurrency in
      // flight plus as many answered whose records were still being written), each
      // first sent by a worker that was then killed, in the lease window before its kill. Who sent
      // it comes from the request itself: the receiver runs in this process, so a request the
      // victim wrote just before it died may only be read after the kill's instant.
      const duplicated = ids.filter((id) => receiver.seen.get(id)! > 1)
      const extraRequests = receiver.requests - TASKS
      t.diagnostic(`${kind}: ${receiver.requests} requests for ${TASKS} tasks, ${duplicated.length} duplicated ids`)
      assert.ok(extraRequests <= killedAt.length * 2 * CONCURRENCY, `${extraRequests} duplicate deliveries`)
      for (const id of duplicated) {
        assert.ok(receiver.seen.get(id)! <= 1 + killedAt.length)
        const by = receiver.firstSentBy.get(id)
        const killed = by === undefined ? undefined : killedPids.get(by)
        assert.ok(killed !== undefined, `duplicate ${id} was first sent by worker ${by}, which was never killed`)
        const first = receiver.firstSeenAt.get(id)!
        assert.ok(first > killed - LEASE_MS * 2, `duplicate ${id} was first sent ${killed - first} ms before its worker was killed`)
      }

      await Promise.all(
        [...workers].map(async (child) => {
          child.kill('SIGTERM')
          await once(child, 'exit')
        })
      )
    })
  })
}
