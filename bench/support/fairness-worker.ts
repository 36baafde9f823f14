/**
 * A worker process for bench/fairness.ts: opens the durable store the parent names, runs one
 * worker with default settings (loopback allowed), says `ready`, starts it when a line comes on
 * stdin, and on SIGTERM stops and prints
 * its breaker events as one JSON line.
 */
import { createWorker } from 'endpoint-callback'
import { openDurableStore, type DurableKind } from '../../test/support/durable-stores.ts'

const kind = process.env.EC_STORE as DurableKind
const name = process.env.EC_STORE_NAME
const secret = process.env.EC_SECRET
if ((kind !== 'postgres' && kind !== 'redis') || !name || !secret) throw new Error('fairness-worker needs EC_STORE, EC_STORE_NAME, EC_SECRET')

const handle = await openDurableStore(kind, { name, max: 4 })
const events: string[] = []
const worker = createWorker({
  store: handle.store,
  secret,
  urlPolicy: { allowHttp: true, allowHosts: ['127.0.0.1'] },
  onEvent: (event) => {
    if (event.type.startsWith('destination-')) events.push(event.type)
    if (event.type === 'error') console.error(`worker ${process.pid}: ${String((event.error as Error)?.message ?? event.error)}`)
  },
})
console.log('ready')
// Every worker starts at the parent's word, so lateness counts from one instant for all of them:
// one that started while the others were still loading would deliver before the clock started.
process.stdin.once('data', () => worker.start())
process.once('SIGTERM', () => {
  void (async () => {
    await worker.stop()
    await handle.close()
    console.log(JSON.stringify(events))
    process.exit(0)
  })()
})
