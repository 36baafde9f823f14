/**
 * A worker process for the crash test: opens the durable store the parent names in its
 * environment, delivers until SIGTERM (or until it is killed), and says `ready` on stdout.
 */
import { createHttpTransport, createWorker } from 'endpoint-callback'
import { openDurableStore, type DurableKind } from './durable-stores.ts'

const kind = process.env.EC_STORE as DurableKind
const name = process.env.EC_STORE_NAME
const secret = process.env.EC_SECRET
if ((kind !== 'postgres' && kind !== 'redis') || !name || !secret) {
  throw new Error('crash-worker needs EC_STORE (postgres|redis), EC_STORE_NAME and EC_SECRET')
}
const leaseMs = Number(process.env.EC_LEASE_MS ?? 2000)
const concurrency = Number(process.env.EC_CONCURRENCY ?? 10)

const handle = await openDurableStore(kind, { name, max: 4 })
const urlPolicy = { allowHttp: true, allowHosts: ['127.0.0.1'] }
const transport = createHttpTransport({ timeoutMs: Math.floor(leaseMs / 2), urlPolicy })
// Every request names this process, so the parent can tell which worker sent a callback first.
const sentBy = String(process.pid)
const worker = createWorker({
  store: handle.store,
  transport: {
    timeoutMs: transport.timeoutMs,
    send: (request) => transport.send({ ...request, headers: { ...request.headers, 'x-sent-by': sentBy } })
  },
  secret,
  urlPolicy,
  leaseMs,
  concurrency,
  pollIntervalMs: 100,
  retry: { schedule: [200, 200, 200, 200, 200] },
  onEvent: (event) => {
    if (event.type === 'error') console.error(`worker ${process.pid}: ${String((event.error as Error)?.message ?? event.error)}`)
  }
})
worker.start()
console.log('ready')

process.once('SIGTERM', () => {
  void (async () => {
    await worker.stop()
    await transport.close()
    await handle.close()
    process.exit(0)
  })()
})
