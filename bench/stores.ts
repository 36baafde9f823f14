/**
 * The durable stores beside the memory store, in one run, with the same loopback receiver and the
 * same worker settings:
 *
 * - enqueue:    `createCallbackTask` calls per second, 32 at a time (validate the URL, insert).
 * - bulk:       tasks per second recorded by `createCallbackTasks`, 1,000 per call, each with its
 *               payload (stored due), after the drain.
 * - deliveries: tasks already due in the store, drained by one worker with `concurrency: 64`
 *               (claim in batches, sign, POST, classify, record the attempt), per second.
 *
 * Each durable store is reported as a ratio of the memory store. Targets: PostgreSQL >= 0.25x and
 * Redis >= 0.4x the memory store's deliveries per second. The receiver runs in its own process;
 * rounds alternate between the stores so that noise from other processes hits all alike, and the
 * median round is reported. PostgreSQL and Redis are skipped (and said so) when unreachable. About
 * 40 s.
 *
 *   node --conditions=endpoint-callback-source --import tsx --expose-gc bench/stores.ts
 */
import { createCallbackTask, createCallbackTasks, createMemoryStore, createWorker, generateSecret } from 'endpoint-callback'
import type { CallbackStore, SenderOptions } from 'endpoint-callback'
import { inParallel, makeDue, openDurableStore, type DurableStore } from '../test/support/durable-stores.ts'
import { serviceSkip } from '../test/support/services.ts'
import { startLoopbackReceiver } from './support/loopback-receiver.ts'

const TASKS = 4_000
const ROUNDS = 3
const CONCURRENCY = 64
const ENQUEUE_WIDTH = 32
const BULK = 1_000

const receiver = await startLoopbackReceiver()
const callbackUrl = receiver.url
const urlPolicy = { allowHttp: true, allowHosts: ['127.0.0.1'] }
const secret = generateSecret()
const payload = { reportId: 12345, status: 'ready', url: 'https://reports.example.com/r/12345', pages: 17 }

interface Contender {
  name: 'memory' | 'postgres' | 'redis'
  open(): Promise<{ store: CallbackStore; done(): Promise<void> }>
}

const contenders: Contender[] = [
  { name: 'memory', open: async () => ({ store: createMemoryStore(), done: async () => {} }) }
]
for (const kind of ['postgres', 'redis'] as const) {
  const skip = await serviceSkip(kind).catch((error: Error) => error.message)
  if (skip) {
    console.log(`${kind}: skipped (${skip})`)
    continue
  }
  contenders.push({
    name: kind,
    open: async () => {
      const durable: DurableStore = await openDurableStore(kind, { max: 20 })
      return { store: durable.store, done: () => durable.drop() }
    }
  })
}

async function round(contender: Contender): Promise<{ enqueue: number; deliveries: number; bulk: number }> {
  const { store, done } = await contender.open()
  try {
    const sender: SenderOptions = { store, secret, urlPolicy }
    const tasks: Array<{ id: string; event: string }> = []
    globalThis.gc?.()
    let started = performance.now()
    await inParallel(Array.from({ length: TASKS }, (_, i) => i), ENQUEUE_WIDTH, async (i) => {
      tasks.push(await createCallbackTask({ callbackUrl, event: 'report.ready', metadata: { i } }, sender))
    })
    const enqueue = TASKS / ((performance.now() - started) / 1000)

    await inParallel(tasks, ENQUEUE_WIDTH, (task) => makeDue(store, task, payload))
    globalThis.gc?.()
    let delivered = 0
    let finish!: () => void
    const finished = new Promise<void>((resolve) => (finish = resolve))
    const worker = createWorker({
      ...sender,
      concurrency: CONCURRENCY,
      leaseMs: 30_000,
      pollIntervalMs: 50,
      onEvent: (event) => {
        if (event.type === 'delivered' && ++delivered === TASKS) finish()
        if (event.type === 'error') console.error(event.error)
      }
    })
    started = performance.now()
    worker.start()
    await finished
    const deliveries = TASKS / ((performance.now() - started) / 1000)
    await worker.stop()

    globalThis.gc?.()
    started = performance.now()
    for (let from = 0; from < TASKS; from += BULK) {
      await createCallbackTasks(Array.from({ length: BULK }, (_, i) => ({ callbackUrl, event: 'report.ready', payload: { ...payload, i: from + i } })), sender)
    }
    const bulk = TASKS / ((performance.now() - started) / 1000)
    return { enqueue, deliveries, bulk }
  } finally {
    await done()
  }
}

const results = new Map<string, Array<{ enqueue: number; deliveries: number; bulk: number }>>()
for (let r = 0; r < ROUNDS; r++) {
  const order = r % 2 === 0 ? contenders : [...contenders].reverse()
  for (const contender of order) {
    const result = await round(contender)
    results.set(contender.name, [...(results.get(contender.name) ?? []), result])
  }
}
await receiver.stop()

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!
const summary = new Map(
  [...results].map(([name, rounds]) => [
    name,
    { enqueue: median(rounds.map((x) => x.enqueue)), deliveries: median(rounds.map((x) => x.deliveries)), bulk: median(rounds.map((x) => x.bulk)) }
  ])
)
const memory = summary.get('memory')!
const targets: Record<string, number> = { postgres: 0.25, redis: 0.4 }
console.log(`\n${TASKS} tasks per round, ${ROUNDS} rounds, worker concurrency ${CONCURRENCY}, median round`)
console.log('store     enqueue/s     bulk/s  deliveries/s  deliveries vs memory  target')
for (const [name, { enqueue, deliveries, bulk }] of summary) {
  const ratio = deliveries / memory.deliveries
  const target = targets[name]
  const verdict = target === undefined ? '' : `>= ${target}x ${ratio >= target ? 'met' : 'NOT met'}`
  console.log(
    `${name.padEnd(9)} ${enqueue.toFixed(0).padStart(9)}  ${bulk.toFixed(0).padStart(9)}  ${deliveries.toFixed(0).padStart(12)}  ${`${ratio.toFixed(2)}x`.padStart(20)}  ${verdict}`
  )
}
process.exit(0)
