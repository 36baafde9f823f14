/**
 * One client's endpoint must never hold up another's callbacks. All due at once: 1,000 tasks to
 * an endpoint that accepts and never answers (tarpit), 1,000 to one that answers a byte a second
 * (trickle), then 100 to one that answers 204 at once — the bad ones first in line. Workers run
 * with default settings (concurrency 10, transport timeout 10 s, perDestination 2, the default
 * breaker): one worker in this process on the memory store, then three worker processes on
 * PostgreSQL and on Redis.
 *
 * Figures: the healthy callbacks' lateness (first arrival at the receiver − the instant the
 * workers were up, every task being due by then) p50 / p99 / max, and the attempts the tarpit and
 * the trickling endpoint received in the first minute. Target: healthy p99 <= 1 s on every store.
 * The receivers run in a process of their own. About 3.5 minutes.
 *
 *   node --conditions=endpoint-callback-source --import tsx bench/fairness.ts
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { createCallbackTask, createMemoryStore, createWorker, generateSecret, listDestinations } from 'endpoint-callback'
import type { CallbackStore, SenderOptions } from 'endpoint-callback'
import { inParallel, openDurableStore, type DurableKind } from '../test/support/durable-stores.ts'
import { serviceSkip } from '../test/support/services.ts'
import { startHostileReceivers } from './support/hostile-receivers.ts'

const DEAD_TASKS = 1_000
const HEALTHY_TASKS = 100
const WINDOW_MS = 60_000
const urlPolicy = { allowHttp: true, allowHosts: ['127.0.0.1'] }
const secret = generateSecret()
const workerScript = fileURLToPath(new URL('./support/fairness-worker.ts', import.meta.url))
const receivers = await startHostileReceivers()

/** Records the tasks and makes them all due at `dueAt`: tarpit, then trickle, then healthy. */
async function enqueue(store: CallbackStore, dueAt: Date): Promise<void> {
  const sender: SenderOptions = { store, secret, urlPolicy }
  const urls = [
    ...Array<string>(DEAD_TASKS).fill(receivers.tarpitUrl),
    ...Array<string>(DEAD_TASKS).fill(receivers.trickleUrl),
    ...Array<string>(HEALTHY_TASKS).fill(receivers.healthyUrl),
  ]
  // in order, in batches, so the bad tasks come first in line even at equal due instants
  for (let i = 0; i < urls.length; i += 50) {
    await inParallel(urls.slice(i, i + 50), 50, async (callbackUrl) => {
      const task = await createCallbackTask({ callbackUrl, event: 'report.ready' }, sender)
      const body = JSON.stringify({ type: 'report.ready', timestamp: dueAt.toISOString(), data: { id: task.id } })
      const lease = await store.attach(task.id, { body }, { now: dueAt, leaseMs: 1 })
      await store.release(lease!, dueAt)
    })
  }
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!
}

async function startWorkerProcess(kind: DurableKind, name: string): Promise<ChildProcess> {
  const child = spawn(process.execPath, ['--conditions=endpoint-callback-source', '--import', 'tsx', workerScript], {
    env: { ...process.env, EC_STORE: kind, EC_STORE_NAME: name, EC_SECRET: secret },
    stdio: ['pipe', 'pipe', 'inherit'],
  })
  await new Promise<void>((resolve, reject) => {
    child.stdout!.on('data', (chunk: Buffer) => {
      if (chunk.toString().includes('ready')) resolve()
    })
    child.once('exit', (code) => reject(new Error(`worker exited with ${code}`)))
  })
  return child
}

interface Row {
  store: string
  workers: number
  p50: number
  p99: number
  max: number
  delivered: number
  tarpit: number
  trickle: number
  states: string
}

async function phase(label: string, store: CallbackStore, start: () => Promise<() => void>): Promise<Row> {
  await enqueue(store, new Date())
  receivers.reset()
  const spawnedAt = Date.now()
  const stop = await start()
  // Lateness counts from when the workers were told to start, together: loading three processes
  // under tsx takes seconds, and none starts before the others are loaded.
  const startedAt = Date.now()
  await new Promise((resolve) => setTimeout(resolve, WINDOW_MS))
  const report = await receivers.report()
  const states = await listDestinations({ store })
  stop()
  const lateness = report.arrivals.map((at) => at - startedAt).sort((a, b) => a - b)
  const inWindow = (times: number[]) => times.filter((at) => at - startedAt <= WINDOW_MS).length
  const row: Row = {
    store: label,
    workers: label === 'memory' ? 1 : 3,
    p50: percentile(lateness, 50),
    p99: percentile(lateness, 99),
    max: lateness[lateness.length - 1]!,
    delivered: lateness.length,
    tarpit: inWindow(report.tarpit),
    trickle: inWindow(report.trickle),
    states: states
      .filter((one) => one.state !== 'closed')
      .map((one) => `${new URL(one.destination).port}:${one.state}${one.openings > 1 ? `×${one.openings}` : ''}`)
      .join(' '),
  }
  console.log(
    `${label.padEnd(8)} workers up after ${startedAt - spawnedAt} ms; healthy ${row.delivered}/${HEALTHY_TASKS}, ` +
      `lateness p50 ${row.p50} ms, p99 ${row.p99} ms, max ${row.max} ms; attempts in ${WINDOW_MS / 1000} s: ` +
      `tarpit ${row.tarpit}, trickle ${row.trickle}; held: ${row.states || 'none'}`
  )
  return row
}

const rows: Row[] = []
// FAIRNESS_STORES=postgres,redis runs only those (while working on one store).
const only = process.env.FAIRNESS_STORES?.split(',')
const wanted = (name: string) => only === undefined || only.includes(name)
if (wanted('memory')) {
  const store = createMemoryStore()
  let worker: ReturnType<typeof createWorker> | undefined
  rows.push(
    await phase('memory', store, async () => {
      worker = createWorker({ store, secret, urlPolicy })
      worker.start()
      return () => void worker!.stop()
    })
  )
}
for (const kind of ['postgres', 'redis'] as const) {
  if (!wanted(kind)) continue
  const skip = await serviceSkip(kind).catch((error: Error) => error.message)
  if (skip) {
    console.log(`${kind}: skipped (${skip})`)
    continue
  }
  const durable = await openDurableStore(kind, { max: 20 })
  const children: ChildProcess[] = []
  rows.push(
    await phase(kind, durable.store, async () => {
      children.push(...(await Promise.all([0, 1, 2].map(() => startWorkerProcess(kind, durable.name)))))
      // all loaded: now they start together
      for (const child of children) child.stdin!.write('go\n')
      return () => {
        for (const child of children) child.kill('SIGKILL')
      }
    })
  )
  await durable.drop()
}
await receivers.stop()

console.log(`\n${DEAD_TASKS} tarpit + ${DEAD_TASKS} trickle + ${HEALTHY_TASKS} healthy tasks, all due, bad ones first; default worker settings`)
console.log('| store | workers | healthy lateness p50 / p99 / max | delivered | tarpit attempts / min | trickle attempts / min | held at the end |')
console.log('| --- | ---: | --- | ---: | ---: | ---: | --- |')
for (const row of rows) {
  console.log(
    `| ${row.store} | ${row.workers} | ${row.p50} / ${row.p99} / ${row.max} ms | ${row.delivered} | ${row.tarpit} | ${row.trickle} | ${row.states || '—'} |`
  )
}
process.exit(0)
