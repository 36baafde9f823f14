/**
 * This library against what a Node developer would hand-roll instead: a BullMQ (Redis) or pg-boss
 * (PostgreSQL) job that signs the callback and POSTs it. Every contender sends the same 500 B
 * envelope, signed the Standard Webhooks way, to one receiver in a child process that verifies every
 * request and counts deliveries per `webhook-id` (lost and duplicated callbacks are both reported and
 * must be 0). Rounds alternate between contenders in this one process, after a warm-up round that
 * counts for nobody; the median round is reported (each round is printed as it ends, with the CPU
 * this process spent per callback).
 *
 * Figures:
 * - drain:     5,000 callbacks already due, then the workers start; callbacks per second until the
 *              receiver has all 5,000. 64 requests in flight for everyone.
 * - failures:  the same drain where 20 % of the ids are answered 500 on their first attempt and are
 *              retried 100 ms later (pg-boss: `retryDelay: 0`, its smallest; its next fetch decides).
 * - enqueue:   5,000 due callbacks recorded 1,000 per call, one call after the other: ours
 *              `createCallbackTasks` (each with its payload, so stored due at once), BullMQ
 *              `addBulk`, pg-boss `insert`. Five calls rather than one per round: on a store just
 *              opened, the first call also pays for its statement's first plan and for loading
 *              the new tables and indexes into the connection's caches, which a running service
 *              has paid long before.
 * - retry:     default worker settings, ours with the circuit breaker off (the peers have none, and
 *              this receiver fails every first attempt); pg-boss: the drain's, as its defaults fetch one job every
 *              2 s and never catch up); 100 callbacks whose first attempt is answered 500 and whose
 *              retry is due 200 ms later (pg-boss: 1 s, its smallest delay that is not "at once");
 *              lateness = arrival of the retry − its due time, p50 and p99.
 *
 * Settings, each from the contender's docs for throughput: ours `createWorker({ concurrency: 64 })`;
 * BullMQ `new Worker(q, fn, { concurrency: 64 })` with `removeOnComplete`, the connection with
 * `maxRetriesPerRequest: null`; pg-boss one `work()` with `batchSize: 500`, the batch sent 64 at a
 * time, `pollingIntervalSeconds: 0.5` (its minimum). The peers POST with undici's `request` over one
 * Agent. Several minutes.
 *
 *   node --conditions=endpoint-callback-source --import tsx --expose-gc bench/peers.ts [drain|failures|enqueue|retry ...]
 */
import { createHmac } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import { Queue, Worker as BullWorker } from 'bullmq'
import { Redis } from 'ioredis'
import PgBoss from 'pg-boss'
import { Agent, request } from 'undici'
import { createCallbackTask, createCallbackTasks, createWorker, deliver, generateSecret } from 'endpoint-callback'
import type { SenderOptions, Worker } from 'endpoint-callback'
import { inParallel, openDurableStore } from '../test/support/durable-stores.ts'
import type { DurableKind, DurableStore } from '../test/support/durable-stores.ts'
import { DATABASE_URL, REDIS_URL, serviceSkip, uniqueName } from '../test/support/services.ts'
import { startCountingReceiver } from './support/counting-receiver.ts'

const DRAIN = 5_000
const BULK = 1_000
/** Callbacks recorded per enqueue round: five calls of `BULK`, so a store's first statement is not all it measures. */
const ENQUEUE = 5_000
const RETRIES = 100
const ROUNDS = 7
const IN_FLIGHT = 64
const RETRY_DELAY_MS = 200
const FAILURE_RETRY_MS = 100
const EVENT = 'report.ready'
/** About 500 bytes of envelope, as the issue's figures were taken with. */
const payload = { reportId: 12345, status: 'ready', url: 'https://reports.example.com/r/12345', note: 'x'.repeat(380) }

const secret = generateSecret()
const key = Buffer.from(secret.slice('whsec_'.length), 'base64')
const receiver = await startCountingReceiver(secret)
const urlPolicy = { allowHttp: true, allowHosts: ['127.0.0.1'] }
const agent = new Agent({ connections: IN_FLIGHT, keepAliveTimeout: 60_000 })
const wanted = new Set(process.argv.slice(2))
const runs = (figure: string) => wanted.size === 0 || wanted.has(figure)

/** What a hand-rolled job does: build the envelope, sign it, POST it, throw on anything but 2xx. */
async function handRolledSend(id: string, data: unknown): Promise<void> {
  const body = JSON.stringify({ type: EVENT, timestamp: new Date().toISOString(), data })
  const timestamp = Math.floor(Date.now() / 1000).toString()
  const signature = createHmac('sha256', key).update(`${id}.${timestamp}.`).update(body).digest('base64')
  const response = await request(receiver.url, {
    method: 'POST',
    dispatcher: agent,
    headers: { 'content-type': 'application/json', 'webhook-id': id, 'webhook-timestamp': timestamp, 'webhook-signature': `v1,${signature}` },
    body
  })
  await response.body.dump()
  if (response.statusCode < 200 || response.statusCode > 299) throw new Error(`receiver answered ${response.statusCode}`)
}

/** One contender on one store: records due callbacks, and runs workers that send them. */
interface Session {
  /** Records `count` callbacks, due now; `retryDelayMs` is the delay before a failed one's retry. */
  enqueue(count: number, retryDelayMs: number): Promise<void>
  /** Starts the workers with the throughput settings. */
  start(retryDelayMs: number): Promise<void>
  close(): Promise<void>
}

interface Contender {
  name: string
  store: DurableKind
  open(): Promise<Session>
}

function ours(kind: DurableKind): Contender {
  return {
    name: `endpoint-callback (${kind})`,
    store: kind,
    async open() {
      const durable: DurableStore = await openDurableStore(kind, { max: 20 })
      let worker: Worker | undefined
      const sender = (retryDelayMs: number): SenderOptions => ({ store: durable.store, secret, urlPolicy, retry: { schedule: [retryDelayMs], jitter: 0 } })
      return {
        async enqueue(count, retryDelayMs) {
          const options = sender(retryDelayMs)
          for (let from = 0; from < count; from += BULK) {
            const inputs = Array.from({ length: Math.min(BULK, count - from) }, () => ({ callbackUrl: receiver.url, event: EVENT, payload }))
            const results = await createCallbackTasks(inputs, options)
            const refused = results.find((result) => !result.ok)
            if (refused !== undefined && !refused.ok) throw refused.error
          }
        },
        async start(retryDelayMs) {
          worker = createWorker({ ...sender(retryDelayMs), concurrency: IN_FLIGHT })
          worker.start()
        },
        async close() {
          await worker?.stop()
          await durable.drop()
        }
      }
    }
  }
}

function bullmq(): Contender {
  return {
    name: 'BullMQ',
    store: 'redis',
    async open() {
      const name = uniqueName('bench_bullmq')
      const connection = new Redis(REDIS_URL, { maxRetriesPerRequest: null })
      const queue = new Queue(name, { connection })
      let worker: BullWorker | undefined
      return {
        async enqueue(count, retryDelayMs) {
          for (let from = 0; from < count; from += BULK) {
            const jobs = Array.from({ length: Math.min(BULK, count - from) }, () => ({
              name: EVENT,
              data: payload,
              opts: { attempts: 2, backoff: { type: 'fixed', delay: retryDelayMs }, removeOnComplete: true, removeOnFail: true }
            }))
            await queue.addBulk(jobs)
          }
        },
        async start() {
          worker = new BullWorker(name, async (job) => handRolledSend(`bull_${name}_${job.id}`, job.data), {
            connection: new Redis(REDIS_URL, { maxRetriesPerRequest: null }),
            concurrency: IN_FLIGHT
          })
          worker.on('error', () => {})
        },
        async close() {
          await worker?.close()
          await queue.obliterate({ force: true })
          await queue.close()
          connection.disconnect()
        }
      }
    }
  }
}

function pgBoss(): Contender {
  return {
    name: 'pg-boss',
    store: 'postgres',
    async open() {
      const schema = uniqueName('bench_pgboss')
      const boss = new PgBoss({ connectionString: DATABASE_URL, schema, max: 20, supervise: false, schedule: false })
      boss.on('error', () => {})
      await boss.start()
      const queue = 'callbacks'
      await boss.createQueue(queue)
      return {
        async enqueue(count, retryDelayMs) {
          for (let from = 0; from < count; from += BULK) {
            const jobs = Array.from({ length: Math.min(BULK, count - from) }, () => ({
              name: queue,
              data: payload,
              retryLimit: 1,
              retryDelay: Math.floor(retryDelayMs / 1000)
            }))
            await boss.insert(jobs)
          }
        },
        async start() {
          await boss.work<typeof payload>(queue, { batchSize: 500, pollingIntervalSeconds: 0.5 }, async (jobs) => {
            const failed: string[] = []
            await inParallel(jobs, IN_FLIGHT, async (job) => {
              try {
                await handRolledSend(`boss_${schema}_${job.id}`, job.data)
              } catch {
                failed.push(job.id)
              }
            })
            // the batch's other jobs complete when this handler returns
            if (failed.length > 0) await boss.fail(queue, failed)
          })
        },
        async close() {
          await boss.stop({ graceful: false, wait: true })
          const cleanup = new (await import('pg')).default.Pool({ connectionString: DATABASE_URL })
          await cleanup.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`)
          await cleanup.end()
        }
      }
    }
  }
}

const contenders: Contender[] = []
// PEERS_STORES=redis (or postgres) runs one store's contenders only
const stores = (process.env.PEERS_STORES ?? 'redis,postgres').split(',')
for (const kind of ['redis', 'postgres'] as const) {
  if (!stores.includes(kind)) continue
  const skip = await serviceSkip(kind).catch((error: Error) => error.message)
  if (skip) {
    console.log(`${kind}: skipped (${skip})`)
    continue
  }
  contenders.push(ours(kind), kind === 'redis' ? bullmq() : pgBoss())
  // PEERS_ONLY=ours (for a profile of our side alone; no ratios then)
  if (process.env.PEERS_ONLY === 'ours') contenders.splice(contenders.length - 1, 1)
}

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!
const percentile = (values: number[], p: number) => [...values].sort((a, b) => a - b)[Math.min(values.length - 1, Math.floor((values.length * p) / 100))]!
let lostOrDuplicated = 0

async function checkExactlyOnce(name: string, expected: number): Promise<void> {
  // a duplicate would show up a little later than the last first delivery
  await sleep(300)
  const stats = await receiver.stats()
  const lost = expected - stats.delivered
  if (lost !== 0 || stats.duplicated !== 0 || stats.invalid !== 0) {
    lostOrDuplicated++
    console.log(`  ${name}: ${lost} lost, ${stats.duplicated} duplicated, ${stats.invalid} unverified`)
  }
}

const infoClient = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 1 })
/** The CPU the store's server has used (µs): Redis tells it; for Postgres, NaN (one process per connection). */
async function serverCpuMicros(store: DurableKind): Promise<number> {
  if (store !== 'redis') return Number.NaN
  const info = await infoClient.info('cpu')
  const field = (name: string) => Number(new RegExp(`${name}:([0-9.]+)`).exec(info)?.[1] ?? Number.NaN)
  return (field('used_cpu_sys') + field('used_cpu_user')) * 1e6
}

/** Callbacks per second until the receiver has all `count`, `failPercent` of them failing once. */
async function drain(contender: Contender, count: number, failPercent: number, retryDelayMs: number): Promise<number> {
  const session = await contender.open()
  try {
    await session.enqueue(count, retryDelayMs)
    await receiver.reset(failPercent)
    globalThis.gc?.()
    const started = performance.now()
    const cpuBefore = process.cpuUsage()
    const serverBefore = await serverCpuMicros(contender.store)
    const receiverBefore = (await receiver.stats()).cpuMicros
    await session.start(retryDelayMs)
    try {
      await receiver.delivered(count)
    } catch (error) {
      throw new Error(`${contender.name}: ${(error as Error).message}`, { cause: error })
    }
    const rate = count / ((performance.now() - started) / 1000)
    const cpu = process.cpuUsage(cpuBefore)
    const receiverCpu = (await receiver.stats()).cpuMicros - receiverBefore
    const serverCpu = (await serverCpuMicros(contender.store)) - serverBefore
    const perCallback = (micros: number) => (micros / count).toFixed(0)
    console.log(
      `  ${contender.name}: ${rate.toFixed(0)} callbacks/s; CPU µs per callback: ${perCallback(cpu.user + cpu.system)} this process, ` +
        `${perCallback(receiverCpu)} receiver${Number.isNaN(serverCpu) ? '' : `, ${perCallback(serverCpu)} ${contender.store} server`}`
    )
    await checkExactlyOnce(contender.name, count)
    return rate
  } finally {
    await session.close()
  }
}

/** Due callbacks recorded per second, `BULK` per call, `ENQUEUE` in all. */
async function enqueue(contender: Contender): Promise<number> {
  const session = await contender.open()
  try {
    globalThis.gc?.()
    const started = performance.now()
    const cpuBefore = process.cpuUsage()
    await session.enqueue(ENQUEUE, RETRY_DELAY_MS)
    const rate = ENQUEUE / ((performance.now() - started) / 1000)
    const cpu = process.cpuUsage(cpuBefore)
    console.log(`  ${contender.name}: ${rate.toFixed(0)} callbacks/s; CPU µs per callback: ${((cpu.user + cpu.system) / ENQUEUE).toFixed(1)} this process`)
    return rate
  } finally {
    await session.close()
  }
}

/** How late retries arrive after they fell due, ms: every first attempt is answered 500. */
async function retryLateness(contender: Contender): Promise<number[]> {
  await receiver.reset(100)
  const due = new Map<string, number>()
  const late: number[] = []
  if (contender.name.startsWith('endpoint-callback')) {
    const durable = await openDurableStore(contender.store)
    // Default settings but the circuit breaker, which the peers do not have: this receiver fails
    // every first attempt, which is what a breaker stops (it would hold the retries for 30 s).
    // `deliver` takes the same options, so its inline attempts count toward no breaker either.
    const sender: SenderOptions & { breaker: false } = { store: durable.store, secret, urlPolicy, retry: { schedule: [RETRY_DELAY_MS], jitter: 0 }, breaker: false }
    const worker = createWorker(sender)
    worker.start()
    try {
      await sleep(300)
      for (let i = 0; i < RETRIES; i++) {
        const task = await createCallbackTask({ callbackUrl: receiver.url, event: EVENT }, sender)
        const report = await deliver(task, payload, sender)
        due.set(task.id, report.nextAttemptAt!.getTime())
        await sleep(10)
      }
      await receiver.delivered(RETRIES, 30_000)
    } finally {
      await worker.stop()
      await durable.drop()
    }
  } else if (contender.name === 'BullMQ') {
    const name = uniqueName('bench_bullmq_retry')
    const connection = new Redis(REDIS_URL, { maxRetriesPerRequest: null })
    const queue = new Queue(name, { connection })
    const worker = new BullWorker(
      name,
      async (job) => {
        const id = `bull_${name}_${job.id}`
        try {
          await handRolledSend(id, job.data)
        } catch (error) {
          due.set(id, Date.now() + RETRY_DELAY_MS)
          throw error
        }
      },
      { connection: new Redis(REDIS_URL, { maxRetriesPerRequest: null }) } // default settings
    )
    worker.on('error', () => {})
    try {
      for (let i = 0; i < RETRIES; i++) {
        await queue.add(EVENT, payload, { attempts: 2, backoff: { type: 'fixed', delay: RETRY_DELAY_MS }, removeOnComplete: true })
        await sleep(10)
      }
      await receiver.delivered(RETRIES, 30_000)
    } finally {
      await worker.close()
      await queue.obliterate({ force: true })
      await queue.close()
      connection.disconnect()
    }
  } else {
    const schema = uniqueName('bench_pgboss_retry')
    const boss = new PgBoss({ connectionString: DATABASE_URL, schema, supervise: false, schedule: false })
    boss.on('error', () => {})
    await boss.start()
    await boss.createQueue('callbacks')
    // pg-boss's defaults (one job per fetch, a fetch every 2 s) cannot keep up with 100 retries at
    // all; it gets the drain's settings instead
    await boss.work<typeof payload>('callbacks', { batchSize: 100, pollingIntervalSeconds: 0.5 }, async (jobs) => {
      const failed: string[] = []
      await inParallel(jobs, IN_FLIGHT, async (job) => {
        const id = `boss_${schema}_${job.id}`
        try {
          await handRolledSend(id, job.data)
        } catch {
          due.set(id, Date.now() + 1000)
          failed.push(job.id)
        }
      })
      if (failed.length > 0) await boss.fail('callbacks', failed)
    })
    try {
      for (let i = 0; i < RETRIES; i++) {
        await boss.send('callbacks', payload, { retryLimit: 1, retryDelay: 1 })
        await sleep(10)
      }
      await receiver.delivered(RETRIES, 60_000)
    } finally {
      await boss.stop({ graceful: false, wait: true })
      const cleanup = new (await import('pg')).default.Pool({ connectionString: DATABASE_URL })
      await cleanup.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`)
      await cleanup.end()
    }
  }
  const arrivals = await receiver.arrivals()
  for (const [id, at] of due) {
    const second = arrivals[id]?.[1]
    if (second !== undefined) late.push(second - at)
  }
  await checkExactlyOnce(contender.name, RETRIES)
  return late
}

const results: Array<{ figure: string; name: string; store: DurableKind; value: string; number: number; rounds?: number[] }> = []

async function alternate(figure: string, measure: (contender: Contender) => Promise<number>, unit: string): Promise<void> {
  const samples = new Map<Contender, number[]>(contenders.map((contender) => [contender, []]))
  // One round first that counts for nobody: whoever went first would otherwise run on code the
  // JIT has not compiled yet (the first round of a drain ran 30–40 % slower than the next).
  for (let round = -1; round < ROUNDS; round++) {
    const order = round % 2 === 0 ? contenders : [...contenders].reverse()
    if (round < 0) console.log(`  (${figure}: a warm-up round, not counted)`)
    for (const contender of order) {
      const value = await measure(contender)
      if (round >= 0) samples.get(contender)!.push(value)
    }
  }
  for (const [contender, values] of samples) {
    const value = median(values)
    results.push({ figure, name: contender.name, store: contender.store, value: `${value.toFixed(0)} ${unit}`, number: value, rounds: values })
  }
}

if (runs('drain')) await alternate('drain', (contender) => drain(contender, DRAIN, 0, FAILURE_RETRY_MS), 'callbacks/s')
if (runs('failures')) await alternate('failures', (contender) => drain(contender, DRAIN, 20, FAILURE_RETRY_MS), 'callbacks/s')
if (runs('enqueue')) await alternate('enqueue', enqueue, 'callbacks/s')
if (runs('retry')) {
  for (const contender of contenders) {
    const late = await retryLateness(contender)
    const p50 = percentile(late, 50)
    results.push({
      figure: 'retry',
      name: contender.name,
      store: contender.store,
      value: `p50 ${p50.toFixed(0)} ms, p99 ${percentile(late, 99).toFixed(0)} ms late (${late.length} retries)`,
      number: p50
    })
  }
}

await receiver.stop()
await agent.close()
infoClient.disconnect()

console.log(`\n${ROUNDS} alternating rounds, median; ${IN_FLIGHT} requests in flight; a receiver that verifies every request`)
for (const figure of ['drain', 'failures', 'enqueue', 'retry']) {
  const rows = results.filter((row) => row.figure === figure)
  if (rows.length === 0) continue
  console.log(`\n${figure}`)
  for (const store of ['redis', 'postgres'] as const) {
    const [mine, peer] = [rows.find((row) => row.store === store && row.name.startsWith('endpoint')), rows.find((row) => row.store === store && !row.name.startsWith('endpoint'))]
    if (mine === undefined || peer === undefined) continue
    // Also each round's ratio (the two ran next to each other in it), whose median the machine's
    // drifts over a run move less than a ratio of medians.
    const paired = mine.rounds === undefined || peer.rounds === undefined ? [] : mine.rounds.map((value, round) => value / peer.rounds![round]!)
    const ratio =
      figure === 'retry' ? '' : `  ours ÷ peer ${(mine.number / peer.number).toFixed(2)}x (round by round: median ${median(paired).toFixed(2)}x, ${Math.min(...paired).toFixed(2)}–${Math.max(...paired).toFixed(2)})`
    console.log(`  ${mine.name.padEnd(30)} ${mine.value}`)
    console.log(`  ${peer.name.padEnd(30)} ${peer.value}${ratio}`)
  }
}
console.log(lostOrDuplicated === 0 ? '\nlost 0, duplicated 0' : `\n${lostOrDuplicated} runs lost or duplicated callbacks (see above)`)
process.exit(lostOrDuplicated === 0 ? 0 : 1)
