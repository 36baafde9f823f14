/**
 * Deliveries per second at concurrency 64 against one loopback receiver, beside bare undici
 * `request` POSTs of the same body to the same receiver at the same concurrency, in one run.
 *
 * - bare:    `request(url, { method: 'POST', body, dispatcher })` on its own `Agent`, body drained.
 * - deliver: `createCallbackTask` + `deliver` on the memory store: validate the URL, store the task,
 *            build the body, attach, sign, POST through the default transport (its URL policy and
 *            vetted connect included), classify, record the attempt.
 * - worker:  tasks already scheduled in the memory store, drained by one worker with
 *            `concurrency: 64`: claim in batches, sign, POST, classify, record.
 *
 * The receiver runs in its own process, so its work is the same for all three and does not sit on
 * the sender's event loop. Rounds alternate between the contenders so that noise from other
 * processes on the machine hits all of them alike; the median round is reported. Beside
 * deliveries per second, the sender's CPU time per delivery (process.cpuUsage) is printed: on a
 * shared machine it moves much less than throughput does. About 40 s.
 *
 *   node --conditions=endpoint-callback-source --import tsx --expose-gc bench/deliver.ts
 */
import { spawn } from 'node:child_process'
import { Agent, request } from 'undici'
import {
  createCallbackTask,
  createHttpTransport,
  createMemoryStore,
  createSigner,
  createWorker,
  deliver,
  generateSecret,
} from 'endpoint-callback'
import type { CallbackStore, SenderOptions } from 'endpoint-callback'

const CONCURRENCY = 64
const ROUNDS = 5
const ROUND_MS = 1_500
const WORKER_TASKS = 6_000

const payload = { reportId: 12345, status: 'ready', url: 'https://reports.example.com/r/12345', pages: 17, tags: ['q3', 'finance'] }
const body = JSON.stringify({ type: 'report.ready', timestamp: new Date().toISOString(), data: payload })

// ---- the receiver, in its own process ---------------------------------------------------------
// A separate process, so that process.cpuUsage() below counts the sending side only.
const receiverSource = `
const { createServer } = require('node:http')
const server = createServer((req, res) => {
  req.on('data', () => {})
  req.on('end', () => { res.statusCode = 204; res.end() })
})
server.keepAliveTimeout = 60_000
server.listen(0, '127.0.0.1', () => console.log(server.address().port))
process.stdin.on('end', () => process.exit(0)).resume()
`
const receiver = spawn(process.execPath, ['-e', receiverSource], { stdio: ['pipe', 'pipe', 'inherit'] })
const port = await new Promise<number>((resolve) => receiver.stdout.once('data', (chunk: Buffer) => resolve(Number(chunk.toString().trim()))))
const url = `http://127.0.0.1:${port}/callbacks`

// ---- contenders -------------------------------------------------------------------------------
const bareAgent = new Agent()
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
const sender: SenderOptions = { store: createMemoryStore(), secret, urlPolicy, transport }
const sign = createSigner({ secret })
/** For attribution only: the default transport's send with signed headers, no store, no task. */
async function transportOne(): Promise<void> {
  const headers = { ...sign({ id: 'msg_bench', timestamp: new Date(), body }), 'content-type': 'application/json' }
  const response = await transport.send({ url, headers, body })
  if (response.status !== 204) throw new Error(`transport: HTTP ${response.status}`)
}

async function deliverOne(): Promise<void> {
  const task = await createCallbackTask({ callbackUrl: url, event: 'report.ready' }, sender)
  const report = await deliver(task, payload, sender)
  if (report.status !== 'delivered') throw new Error(`deliver: ${report.status} ${report.error ?? ''}`)
}

/** One measured round: deliveries per second and the sender's CPU µs per delivery. */
interface Sample {
  rate: number
  cpu: number
}

/** Runs `one` with `CONCURRENCY` loops for `ms`. */
async function closedLoop(one: () => Promise<void>, ms: number): Promise<Sample> {
  let done = 0
  const cpu = process.cpuUsage()
  const start = performance.now()
  const end = start + ms
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (performance.now() < end) {
        await one()
        done++
      }
    })
  )
  const { user, system } = process.cpuUsage(cpu)
  return { rate: (done / (performance.now() - start)) * 1000, cpu: (user + system) / done }
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
const contenders: Array<{ name: string; round: () => Promise<Sample> }> = [
  { name: 'bare undici request', round: () => closedLoop(bareOne, ROUND_MS) },
  { name: '(default transport alone)', round: () => closedLoop(transportOne, ROUND_MS) },
  { name: 'createCallbackTask + deliver', round: () => closedLoop(deliverOne, ROUND_MS) },
  { name: 'worker draining due tasks', round: workerRound },
]

// Warm up sockets and JIT on every path before measuring.
await closedLoop(bareOne, 500)
await closedLoop(transportOne, 500)
await closedLoop(deliverOne, 500)
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
const bare = median(samples.get('bare undici request')!)
const bareCpu = median(cpuSamples.get('bare undici request')!)
console.log(`deliveries per second, concurrency ${CONCURRENCY}, ${Buffer.byteLength(body)} B body, loopback receiver in its own process`)
console.log(`median of ${ROUNDS} alternating rounds (min–max in brackets); sender CPU µs per delivery\n`)
for (const [name, values] of samples) {
  const value = median(values)
  const cpu = median(cpuSamples.get(name)!)
  const range = `[${Math.round(Math.min(...values))}–${Math.round(Math.max(...values))}]`
  console.log(
    `${name.padEnd(30)} ${String(Math.round(value)).padStart(7)}/s ${range.padEnd(14)} ${(value / bare).toFixed(2)}× bare   ` +
      `${cpu.toFixed(1).padStart(6)} µs CPU  (bare/ours ${(bareCpu / cpu).toFixed(2)})`
  )
}
const ours = Math.min(median(samples.get('createCallbackTask + deliver')!), median(samples.get('worker draining due tasks')!))
console.log(`\ntarget ≥ 0.80× bare: ${ours / bare >= 0.8 ? 'met' : 'NOT met'} (${(ours / bare).toFixed(2)}× for the slower of ours)`)

await transport.close?.()
await bareAgent.close()
receiver.stdin.end()
await new Promise((resolve) => receiver.once('exit', resolve))
