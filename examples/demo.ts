/**
 * The endpoint-callback pattern end to end, in one process, on this machine only:
 *
 *   client ── POST /jobs { callbackUrl } ──▶ service   (answers 202 and the task id at once)
 *   service ── does the work, then deliver() ──▶ receiver   (fails twice, then answers 204)
 *   worker ── retries on a short schedule until the callback lands
 *
 * Run it with `npm run demo`. Exits 0 once the receiver has verified the callback, 1 on a timeout.
 */
import { createServer } from 'node:http'
import type { IncomingMessage, Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import {
  createCallbackTask,
  createMemoryStore,
  createWorker,
  deliver,
  generateSecret,
  SignatureVerificationError,
  verifySignature,
} from 'endpoint-callback'
import type { DeliveryEvent, SenderOptions } from 'endpoint-callback'

const TIMEOUT_MS = 20_000
const secret = generateSecret() // shared with the receiver out of band (here: the same process)
const started = Date.now()
const log = (who: string, message: string) => console.log(`${String(Date.now() - started).padStart(6)} ms  ${who.padEnd(8)} ${message}`)

function readBody(request: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    request.on('data', (chunk: Buffer) => chunks.push(chunk))
    request.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')))
    request.on('error', reject)
  })
}

function listen(server: Server): Promise<string> {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(`http://127.0.0.1:${(server.address() as AddressInfo).port}`)))
}

// ---- the receiver: the client's own endpoint -----------------------------------------------------

let received = 0
const processed = new Set<string>()

const receiver = createServer(async (request, response) => {
  const body = await readBody(request) // the raw bytes: signatures are over exactly these
  try {
    const callback = await verifySignature<{ reportUrl: string }>({ headers: request.headers, body }, { secret })
    received++
    if (received <= 2) {
      log('receiver', `verified ${callback.id}, but pretends to be down: 503`)
      response.writeHead(503).end()
      return
    }
    if (!processed.has(callback.id)) {
      processed.add(callback.id) // webhook-id is the same on every attempt: dedupe on it
      log('receiver', `verified ${callback.id}: ${callback.type} ${JSON.stringify(callback.data)} → 204`)
    }
    response.writeHead(204).end()
  } catch (error) {
    if (!(error instanceof SignatureVerificationError)) throw error
    log('receiver', `refused: ${error.code}`)
    response.writeHead(401).end()
  }
})
const receiverUrl = `${await listen(receiver)}/callbacks`

// ---- the service: accepts jobs, calls back when done ---------------------------------------------

// Resolves once the sender has recorded the callback as delivered.
let landed: (id: string) => void
const callbackLanded = new Promise<string>((resolve) => (landed = resolve))

const sender: SenderOptions = {
  store: createMemoryStore(),
  secret,
  // The default policy refuses plain http and loopback addresses (no SSRF into the service's own
  // network). This demo calls a receiver on 127.0.0.1, so it opts in explicitly.
  urlPolicy: { allowHttp: true, allowHosts: ['127.0.0.1'] },
  // Short delays so the demo takes seconds; the default is 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
  retry: { schedule: [500, 1_000, 2_000], jitter: 0 },
  onEvent: printEvent,
}

function printEvent(event: DeliveryEvent): void {
  switch (event.type) {
    case 'attempt': {
      const { attempt } = event
      const result = attempt.status === undefined ? attempt.error : `HTTP ${attempt.status}`
      log('sender', `attempt ${attempt.attempt} of ${event.task.id}: ${result} in ${attempt.durationMs} ms`)
      break
    }
    case 'retry-scheduled':
      log('sender', `next attempt in ${event.nextAttemptAt.getTime() - Date.now()} ms`)
      break
    case 'delivered':
      log('sender', `delivered after ${event.attempt.attempt} attempts`)
      landed(event.task.id)
      break
    case 'failed':
      log('sender', `gave up: ${event.reason}`)
      break
    case 'cancelled':
    case 'lease-lost':
      log('sender', event.type)
      break
    case 'error':
      log('sender', `error: ${String(event.error)}`)
      break
  }
}

const service = createServer(async (request, response) => {
  if (request.method !== 'POST' || request.url !== '/jobs') return void response.writeHead(404).end()
  try {
    const { callbackUrl } = JSON.parse(await readBody(request)) as { callbackUrl: string }
    const task = await createCallbackTask({ callbackUrl, event: 'report.ready' }, sender)
    response.writeHead(202, { 'content-type': 'application/json' }).end(JSON.stringify({ id: task.id }))
    // The work happens after the answer; deliver() makes the first attempt, the worker the rest.
    setTimeout(() => {
      deliver(task.id, { reportUrl: `https://reports.example.com/${task.id}` }, sender).then(
        (report) => log('service', `deliver() → ${report.status}`),
        (error: unknown) => log('service', `deliver() failed: ${String(error)}`)
      )
    }, 300)
  } catch (error) {
    // createCallbackTask refuses a bad callbackUrl before storing anything
    response.writeHead(400, { 'content-type': 'application/json' }).end(JSON.stringify({ error: (error as Error).message }))
  }
})
const serviceUrl = await listen(service)

const worker = createWorker({ ...sender, pollIntervalMs: 100 })
worker.start()

// ---- the client ---------------------------------------------------------------------------------

const accepted = await fetch(`${serviceUrl}/jobs`, {
  method: 'POST',
  headers: { 'content-type': 'application/json' },
  body: JSON.stringify({ callbackUrl: receiverUrl }),
})
log('client', `POST /jobs → ${accepted.status} ${await accepted.text()}`)

let timer: NodeJS.Timeout | undefined
const timedOut = new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), TIMEOUT_MS)))
const id = await Promise.race([callbackLanded, timedOut])
clearTimeout(timer)

await worker.stop()
receiver.closeAllConnections()
service.closeAllConnections()
await Promise.all([receiver, service].map((server) => new Promise<void>((resolve) => server.close(() => resolve()))))

if (id === undefined) {
  console.error(`The callback did not land within ${TIMEOUT_MS / 1000} s.`)
  process.exit(1)
}
const task = await sender.store.get(id)
log('demo', `task ${id} is ${task?.status} after ${task?.attempts} attempts; the receiver processed it ${processed.has(id) ? 'once' : 'never'}`)
process.exit(task?.status === 'delivered' && processed.has(id) ? 0 : 1)
