/**
 * Claiming due tasks from the memory store: the time to lease a batch of 100 from 10 000 and from
 * 1 000 000 scheduled tasks (target: within 2× of each other, since the store keeps due tasks
 * sorted and a claim takes them off the front), and the memory each scheduled task takes, beside
 * the same tasks held as the plain objects the store hands out. The baseline for the claim is what a store without a due index
 * would do: scan those plain objects for the 100 earliest due.
 *
 * Tasks are filled the way they arrive in a service: input parsed from JSON, inserted with an
 * idempotency key, attached with a ~170-byte body, attempted once (503) and scheduled for a retry
 * at a random instant in the next hour, so each holds one attempt record. Every claimed batch is
 * released to new random instants in that hour, so the store keeps its size and shape from round
 * to round.
 *
 *   node --conditions=endpoint-callback-source --import tsx --expose-gc bench/claim.ts
 */
import { randomUUID } from 'node:crypto'
import { createMemoryStore } from 'endpoint-callback'
import type { AttemptRecord, CallbackStore, CallbackTask, NewCallbackTask } from 'endpoint-callback'

const gc = (globalThis as { gc?: () => void }).gc
if (gc === undefined) {
  console.error('run with --expose-gc (npm run bench -- claim does)')
  process.exit(1)
}

const start = Date.UTC(2030, 0, 1)
const windowMs = 3_600_000
const now = new Date(start + windowMs)
const batch = 100
const leaseMs = 60_000
const rounds = 400
const warmup = 100

let seed = 42
/** Deterministic, so both sizes see the same kind of due instants on every run. */
const random = () => (seed = (seed * 48271) % 2147483647) / 2147483647
const dueInWindow = () => new Date(start + Math.floor(random() * windowMs))

function arriving(i: number): NewCallbackTask {
  const id = randomUUID()
  // parsed, as a request body would be, so strings are flat and not shared with the id
  const input = JSON.parse(
    `{"callbackUrl":"https://client.example.com/callbacks/jobs/${id}","event":"report.ready","idempotencyKey":"job-${i}-${id.slice(0, 8)}"}`
  ) as { callbackUrl: string; event: string; idempotencyKey: string }
  return { id, ...input, createdAt: new Date(start) }
}

function bodyOf(id: string): string {
  return JSON.stringify({
    type: 'report.ready',
    timestamp: new Date(start).toISOString(),
    data: { reportUrl: `https://reports.example.com/r/${id}.pdf`, pages: 12, format: 'pdf' }
  })
}

function firstAttempt(): AttemptRecord {
  return { attempt: 1, startedAt: new Date(start), durationMs: 35.2, status: 503, responseBody: 'Service Unavailable', outcome: 'retry' }
}

async function fill(store: CallbackStore, n: number): Promise<void> {
  for (let i = 0; i < n; i++) {
    const { task } = await store.insert(arriving(i))
    const held = await store.attach(task.id, { body: bodyOf(task.id) }, { now: new Date(start), leaseMs })
    await store.complete(held!, firstAttempt(), { status: 'scheduled', nextAttemptAt: dueInWindow(), lastError: 'HTTP 503' })
  }
}

/** The JS heap plus array buffers (the store's due order and per-task rows live in them). */
function heapUsed(): number {
  gc!()
  gc!()
  const { heapUsed, arrayBuffers } = process.memoryUsage()
  return heapUsed + arrayBuffers
}

/** The same tasks as the plain objects `get` and `attempts` hand out, held in a Map by id. */
function plainTasks(n: number): Map<string, { task: CallbackTask; attempts: AttemptRecord[] }> {
  const held = new Map<string, { task: CallbackTask; attempts: AttemptRecord[] }>()
  for (let i = 0; i < n; i++) {
    const input = arriving(i)
    const task: CallbackTask = {
      id: input.id,
      status: 'scheduled',
      callbackUrl: input.callbackUrl,
      event: input.event,
      idempotencyKey: input.idempotencyKey!,
      body: bodyOf(input.id),
      attempts: 1,
      nextAttemptAt: dueInWindow(),
      createdAt: input.createdAt,
      updatedAt: new Date(start + 35),
      lastError: 'HTTP 503'
    }
    held.set(task.id, { task, attempts: [firstAttempt()] })
  }
  return held
}

/**
 * The baseline a store without a due index has: scan every task for the earliest due ones,
 * keeping the best `batch` in a sorted array. Only finds them; it leases nothing.
 */
function scanForDue(held: Map<string, { task: CallbackTask }>, at: number): CallbackTask[] {
  const best: CallbackTask[] = []
  let worst = Infinity
  for (const { task } of held.values()) {
    if (task.status !== 'scheduled') continue
    const due = task.nextAttemptAt!.getTime()
    if (due > at || (best.length === batch && due >= worst)) continue
    let i = best.length === batch ? batch - 1 : best.length
    while (i > 0 && best[i - 1]!.nextAttemptAt!.getTime() > due) {
      best[i] = best[i - 1]!
      i--
    }
    best[i] = task
    worst = best[best.length - 1]!.nextAttemptAt!.getTime()
  }
  return best
}

function quantile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!
}

interface Measured {
  n: number
  bytesPerTask: number
  plainBytesPerTask: number
  scanMs: number
  fillMs: number
  medianMs: number
  p90Ms: number
}

async function measure(n: number): Promise<Measured> {
  let before = heapUsed()
  let plain: ReturnType<typeof plainTasks> | undefined = plainTasks(n)
  const plainBytesPerTask = (heapUsed() - before) / n
  const scans: number[] = []
  for (let round = 0; round < Math.max(5, Math.min(200, 2e7 / n)); round++) {
    const t0 = performance.now()
    const found = scanForDue(plain, now.getTime())
    scans.push(performance.now() - t0)
    if (found.length !== batch) throw new Error(`scan found ${found.length} of ${batch}`)
  }
  plain = undefined
  scans.sort((a, b) => a - b)

  before = heapUsed()
  const store = createMemoryStore()
  const filling = performance.now()
  await fill(store, n)
  const fillMs = performance.now() - filling
  const bytesPerTask = (heapUsed() - before) / n

  const times: number[] = []
  for (let round = 0; round < warmup + rounds; round++) {
    const t0 = performance.now()
    const leases = await store.claim({ now, limit: batch, leaseMs })
    const elapsed = performance.now() - t0
    if (leases.length !== batch) throw new Error(`claimed ${leases.length} of ${batch}`)
    for (const held of leases) await store.release(held, dueInWindow())
    if (round >= warmup) times.push(elapsed)
  }
  times.sort((a, b) => a - b)
  return { n, bytesPerTask, plainBytesPerTask, scanMs: quantile(scans, 0.5), fillMs, medianMs: quantile(times, 0.5), p90Ms: quantile(times, 0.9) }
}

const began = performance.now()
const small = await measure(10_000)
const large = await measure(1_000_000)

const row = (m: Measured) =>
  `${m.n.toLocaleString('en-US').padStart(9)} tasks | claim ${batch}: median ${m.medianMs.toFixed(3)} ms, p90 ${m.p90Ms.toFixed(3)} ms` +
  ` | ${Math.round(m.bytesPerTask)} B/task in the store vs ${Math.round(m.plainBytesPerTask)} B/task as plain objects` +
  ` (${(m.bytesPerTask / m.plainBytesPerTask).toFixed(2)}×) | filled in ${(m.fillMs / 1000).toFixed(1)} s`
console.log(row(small))
console.log(row(large))
for (const m of [small, large]) {
  console.log(
    `${m.n.toLocaleString('en-US').padStart(9)} tasks | baseline, scanning plain objects for the ${batch} earliest due: ` +
      `median ${m.scanMs.toFixed(3)} ms (${(m.scanMs / m.medianMs).toFixed(0)}× the store's whole claim)`
  )
}
console.log(
  `claim time, 1,000,000 vs 10,000 tasks: median ${(large.medianMs / small.medianMs).toFixed(2)}×, ` +
    `p90 ${(large.p90Ms / small.p90Ms).toFixed(2)}× (target ≤ 2×)`
)
console.log(`peak RSS ${(process.resourceUsage().maxRSS / 2 ** 20).toFixed(2)} GiB; took ${((performance.now() - began) / 1000).toFixed(1)} s`)
