/**
 * This checkout against another version of the library, in one process: `createCallbackTask` +
 * `deliver` and a worker's drain on the memory store, alternating rounds (and which goes first in
 * each), so that a change's cost shows apart from the machine's noise (on a shared two-core machine
 * two runs of bench/deliver.ts a minute apart differ by more than most changes do). Prints each
 * round and the median of the per-round ratios, of rates and of CPU per delivery.
 *
 * The other version is a checkout of this repository with its dependencies installed:
 *
 *   git worktree add --detach /tmp/baseline fa71c57 && (cd /tmp/baseline && npm ci)
 *   VERSUS_BASELINE=/tmp/baseline node --conditions=endpoint-callback-source --import tsx --expose-gc bench/versus.ts
 *
 * Without VERSUS_BASELINE it says so and exits (so `npm run bench` passes over it).
 */
import { resolve } from 'node:path'
import { pathToFileURL } from 'node:url'
import * as ours from 'endpoint-callback'
import { closedLoop, type Sample } from './support/closed-loop.ts'
import { startLoopbackReceiver } from './support/loopback-receiver.ts'

const baselineDir = process.env.VERSUS_BASELINE
if (baselineDir === undefined || baselineDir === '') {
  console.log('versus: skipped (set VERSUS_BASELINE to another checkout of this repository, see the top of bench/versus.ts)')
  process.exit(0)
}
const baseline = (await import(pathToFileURL(resolve(baselineDir, 'src/index.ts')).href)) as typeof ours

const CONCURRENCY = 64
const ROUNDS = 10
const ROUND_MS = 1_200
const WORKER_TASKS = 10_000
const payload = { reportId: 12345, status: 'ready', url: 'https://reports.example.com/r/12345', pages: 17, tags: ['q3', 'finance'] }
const receiver = await startLoopbackReceiver()
const url = receiver.url
const urlPolicy = { allowHttp: true, allowHosts: ['127.0.0.1'] }
const secret = ours.generateSecret()

function contender(lib: typeof ours) {
  const transport = lib.createHttpTransport({ urlPolicy })
  return {
    transport,
    /** createCallbackTask + deliver in `CONCURRENCY` closed loops for `ms`, on a fresh memory store. */
    async deliver(ms: number): Promise<Sample> {
      const sender = { store: lib.createMemoryStore(), secret, urlPolicy, transport }
      return closedLoop(
        async () => {
          const task = await lib.createCallbackTask({ callbackUrl: url, event: 'report.ready' }, sender)
          const report = await lib.deliver(task, payload, sender)
          if (report.status !== 'delivered') throw new Error(`deliver: ${report.status} ${report.error ?? ''}`)
        },
        ms,
        CONCURRENCY
      )
    },
    /** One worker (`concurrency` 64) drains `WORKER_TASKS` tasks recorded with their payload. */
    async drain(): Promise<Sample> {
      const store = lib.createMemoryStore()
      const sender = { store, secret, urlPolicy, transport }
      // recorded with their payload: due at once, as the outbox records them
      for (let i = 0; i < WORKER_TASKS; i++) await lib.createCallbackTask({ callbackUrl: url, event: 'report.ready', payload }, sender)
      globalThis.gc?.()
      let delivered = 0
      let finish: () => void = () => {}
      const finished = new Promise<void>((resolve) => (finish = resolve))
      const worker = lib.createWorker({
        ...sender,
        concurrency: CONCURRENCY,
        onEvent: (event) => {
          if (event.type === 'delivered' && ++delivered === WORKER_TASKS) finish()
        },
      })
      const cpu = process.cpuUsage()
      const start = performance.now()
      worker.start()
      await finished
      const elapsed = performance.now() - start
      const used = process.cpuUsage(cpu)
      await worker.stop()
      return { rate: (WORKER_TASKS / elapsed) * 1000, cpu: (used.user + used.system) / WORKER_TASKS }
    },
  }
}

const sides = { baseline: contender(baseline), ours: contender(ours) }
const median = (values: number[]) => [...values].sort((a, b) => a - b)[values.length >> 1]!

for (const figure of ['deliver', 'drain'] as const) {
  const run = (side: ReturnType<typeof contender>) => (figure === 'deliver' ? side.deliver(ROUND_MS) : side.drain())
  // warm-up, not counted: sockets and JIT on both paths
  await run(sides.baseline)
  await run(sides.ours)
  const rates: number[] = []
  const cpus: number[] = []
  console.log(`\n${figure === 'deliver' ? 'createCallbackTask + deliver' : `worker draining ${WORKER_TASKS} due tasks`} (memory store, ${CONCURRENCY} in flight)`)
  for (let round = 0; round < ROUNDS; round++) {
    const order = round % 2 === 0 ? (['ours', 'baseline'] as const) : (['baseline', 'ours'] as const)
    const samples: Partial<Record<'ours' | 'baseline', Sample>> = {}
    for (const name of order) {
      globalThis.gc?.()
      samples[name] = await run(sides[name])
    }
    const { ours: mine, baseline: theirs } = samples as Record<'ours' | 'baseline', Sample>
    rates.push(mine.rate / theirs.rate)
    cpus.push(theirs.cpu / mine.cpu)
    console.log(
      `  round ${round + 1}: baseline ${theirs.rate.toFixed(0)}/s ${theirs.cpu.toFixed(1)} µs CPU, this checkout ${mine.rate.toFixed(0)}/s ${mine.cpu.toFixed(1)} µs CPU`
    )
  }
  console.log(`  this checkout ÷ baseline: rate ${median(rates).toFixed(2)}×, CPU per delivery ${(1 / median(cpus)).toFixed(2)}× (median of the rounds)`)
}

await Promise.all([sides.baseline.transport.close?.(), sides.ours.transport.close?.()])
await receiver.stop()
