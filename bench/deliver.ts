/**
 * Deliveries per second at concurrency 64 against one loopback receiver, beside bare undici
 * `request` POSTs of the same body to the same receiver at the same concurrency, in one run.
 *
 * - bare:    `request(url, { method: 'POST', body, dispatcher })` on its own `Agent` (the same
 *            10 s header and body timeouts as the default transport's), body drained; a second
 *            bare contender sends the same headers as ours (signed once), for attribution.
 * - deliver: `createCallbackTask` + `deliver` on a memory store per round: validate the URL, store the task,
 *            build the body, attach, sign, POST through the default transport (its URL policy and
 *            vetted connect included), classify, record the attempt.
 * - worker:  tasks already scheduled in the memory store, drained by one worker with
 *            `concurrency: 64`: claim in batches, sign, POST, classify, record.
 *
 * The receiver runs in its own process, so its work is the same for all three and does not sit on
 * the sender's event loop. Rounds alternate between the contenders so that noise from other
 * processes on the machine hits all of them alike; the ratio reported is the median of each
 * round's ratio to the bare round just before it, and the rate the median round. Beside
 * deliveries per second, the sender's CPU time per delivery (process.cpuUsage) is printed: on a
 * shared machine it moves much less than throughput does. About 45 s.
 *
 *   node --conditions=endpoint-callback-source --import tsx --expose-gc bench/deliver.ts
 */
import { Agent, request } from 'undici'
import {
  createCallbackTask,
  createHttpTransport,
  createMemoryStore,
  createSigner,
  createWorker,
  deliver,
  generateSecret,
  VERSION,
} from 'endpoint-callback'
import type { CallbackStore, SenderOptions } from 'endpoint-callback'
import { closedLoop as loopFor, type Sample } from './support/closed-loop.ts'
import { startLoopbackReceiver } from './support/loopback-receiver.ts'

const CONCURRENCY = 64
/** `one` in `CONCURRENCY` closed loops for `ms`. */
const closedLoop = (one: () => Promise<void>, ms: number): Promise<Sample> => loopFor(one, ms, CONCURRENCY)
const ROUNDS = 7
const ROUND_MS = 1_200
const WORKER_TASKS = 20_000

const payload = { reportId: 12345, status: 'ready', url: 'https://reports.example.com/r/12345', pages: 17, tags: ['q3', 'finance'] }
const body = JSON.stringify({ type: 'report.ready', timestamp: new Date().toISOString(), data: payload })

// ---- the receiver, in its own process ---------------------------------------------------------
// A separate process, so that process.cpuUsage() below counts the sending side only.
const receiver = await startLoopbackReceiver()
const url = receiver.url

// ---- contenders -------------------------------------------------------------------------------
// The same timeouts as the default transport's Agent (10 s), so both pools run the same timers.
const bareAgent = new Agent({ headersTimeout: 10_000, bodyTimeout: 10_000 })
async function bareOne(): Promise<void> {
  const response = await request(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body,
    dispatcher: bareAgent,
  })
  await response.body.dump()
  if (response.statusCode !== 204) throw new Error(`bare: HTTP ${response.statusCode}`)
}

// Loopback over plain http is refused by default; the benchmark opts in explicitly.
const urlPolicy = { allowHttp: true, allowHosts: ['127.0.0.1'] }
const transport = createHttpTransport({ urlPolicy })
const secret = generateSecret()
const sign = createSigner({ secret })

/**
 * For attribution only: bare undici sending the very bytes ours sends — the same three signature
 * headers (signed once, up front), content-type and user-agent — so that the receiver and the
 * kernel do the same work as for ours. The sender does no signing.
 */
const sameHeaders = { ...sign({ id: 'msg_01jbenchmark0000000000000', timestamp: new Date(), body }), 'content-type': 'application/json', 'user-agent': `endpoint-callback/${VERSION}` }
async function bareSameHeadersOne(): Promise<void> {
  const response = await request(url, { method: 'POST', headers: sameHeaders, body, dispatcher: bareAgent })
  await response.body.dump()
  if (response.statusCode !== 204) throw new Error(`bare: HTTP ${response.statusCode}`)
}

/** For attribution only: the default transport's send with signed headers, no store, no task. */
async function transportOne(): Promise<void> {
  const headers = { ...sign({ id: 'msg_bench', timestamp: new Date(), body }), 'content-type': 'application/json' }
  const response = await transport.send({ url, headers, body })
  if (response.status !== 204) throw new Error(`transport: HTTP ${response.status}`)
}

/**
 * createCallbackTask + deliver on a memory store of the round's own: the store fills up during
 * the round as a service's would, and is dropped after it, so that the tasks of earlier rounds
 * (hundreds of thousands by the end) do not weigh on the garbage collector in every later round,
 * the baseline's included.
 */
function deliverRound(ms: number): Promise<Sample> {
  const sender: SenderOptions = { store: createMemoryStore(), secret, urlPolicy, transport }
  return closedLoop(async () => {
    const task = await createCallbackTask({ callbackUrl: url, event: 'report.ready' }, sender)
    const report = await deliver(task, payload, sender)
    if (report.status !== 'delivered') throw new Error(`deliver: ${report.status} ${report.error ?? ''}`)
  }, ms)
}

/** Puts `count` tasks in the store as scheduled and due (as after a failed first attempt). */
async function scheduleTasks(store: CallbackStore, count: number, at: Date): Promise<void> {
  for (let i = 0; i < count; i++) {
    const { task } = await store.insert({ id: `msg_bench_${i}_${Math.random().toString(36).slice(2)}`, callbackUrl: url, event: 'report.ready', createdAt: at })
    const lease = await store.attach(task.id, { body }, { now: at, leaseMs: 60_000 })
    await store.complete(lease!, { attempt: 1, startedAt: at, durationMs: 1, status: 503, outcome: 'retry' }, { status: 'scheduled', nextAttemptAt: at })
  }
}

/** One worker with concurrency 64 drains `WORKER_TASKS` due tasks (setup not measured). */
async function workerRound(): Promise<Sample> {
  const store = createMemoryStore()
  await scheduleTasks(store, WORKER_TASKS, new Date(Date.now() - 1_000))
  // The setup's garbage is collected now, not during the measured drain.
  globalThis.gc?.()
  let delivered = 0
  let finish: () => void = () => {}
  const finished = new Promise<void>((resolve) => (finish = resolve))
  const worker = createWorker({
    store,
    secret,
    urlPolicy,
    transport,
    concurrency: CONCURRENCY,
    pollIntervalMs: 50,
    onEvent: (event) => {
      if (event.type === 'delivered' && ++delivered === WORKER_TASKS) finish()
      else if (event.type === 'failed' || event.type === 'error') throw new Error(`worker: ${event.type}`)
    },
  })
  const cpu = process.cpuUsage()
  const start = performance.now()
  worker.start()
  await finished
  const elapsed = performance.now() - start
  const { user, system } = process.cpuUsage(cpu)
  await worker.stop()
  return { rate: (WORKER_TASKS / elapsed) * 1000, cpu: (user + system) / WORKER_TASKS }
}

// ---- run --------------------------------------------------------------------------------------
const BARE = 'bare undici request'
const BARE_SAME = '(bare, same headers as ours)'
const contenders: Array<{ name: string; round: () => Promise<Sample> }> = [
  { name: BARE, round: () => closedLoop(bareOne, ROUND_MS) },
  { name: BARE_SAME, round: () => closedLoop(bareSameHeadersOne, ROUND_MS) },
  { name: '(default transport alone)', round: () => closedLoop(transportOne, ROUND_MS) },
  { name: 'createCallbackTask + deliver', round: () => deliverRound(ROUND_MS) },
  { name: 'worker draining due tasks', round: workerRound },
]

// Warm up sockets and JIT on every path before measuring.
await closedLoop(bareOne, 500)
await closedLoop(bareSameHeadersOne, 500)
await closedLoop(transportOne, 500)
await deliverRound(500)
await workerRound()

const samples = new Map<string, number[]>(contenders.map((c) => [c.name, []]))
const cpuSamples = new Map<string, number[]>(contenders.map((c) => [c.name, []]))
for (let round = 0; round < ROUNDS; round++) {
  for (const contender of contenders) {
    globalThis.gc?.()
    const { rate, cpu } = await contender.round()
    samples.get(contender.name)!.push(rate)
    cpuSamples.get(contender.name)!.push(cpu)
  }
}

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!
/** Per round, the contender's rate over the baseline's in the same round: slow drifts in the machine's load cancel. */
const pairedRatio = (name: string, baseline: string) => median(samples.get(name)!.map((rate, round) => rate / samples.get(baseline)![round]!))
const bareCpu = median(cpuSamples.get(BARE)!)
console.log(`deliveries per second, concurrency ${CONCURRENCY}, ${Buffer.byteLength(body)} B body, loopback receiver in its own process`)
console.log(`${ROUNDS} alternating rounds: median rate (min–max), median of the per-round ratios to bare; sender CPU µs per delivery (median)\n`)
for (const [name, values] of samples) {
  const cpu = median(cpuSamples.get(name)!)
  const range = `(${Math.round(Math.min(...values))}–${Math.round(Math.max(...values))})`
  console.log(
    `${name.padEnd(30)} ${String(Math.round(median(values))).padStart(6)}/s ${range.padEnd(14)} ${pairedRatio(name, BARE).toFixed(2)}× bare ` +
      `${pairedRatio(name, BARE_SAME).toFixed(2)}× same-headers  ${cpu.toFixed(1).padStart(5)} µs CPU (bare/ours ${(bareCpu / cpu).toFixed(2)})`
  )
}
const slower = (baseline: string) => Math.min(pairedRatio('createCallbackTask + deliver', baseline), pairedRatio('worker draining due tasks', baseline))
console.log(
  `\ntarget ≥ 0.80× bare: ${slower(BARE) >= 0.8 ? 'met' : 'NOT met'} (${slower(BARE).toFixed(2)}× for the slower of ours; ` +
    `${slower(BARE_SAME).toFixed(2)}× against bare sending the same headers)`
)

await transport.close?.()
await bareAgent.close()
await receiver.stop()
