/**
 * The receiver the peer benchmarks send to, in its own process: it verifies every request's
 * Standard Webhooks signature (HMAC-SHA256) over the raw body, counts deliveries per `webhook-id`
 * (so lost and duplicated callbacks both show), notes when each one arrived, and answers 500 to the
 * first attempt of a chosen share of the ids (picked by a hash of the id, so every contender meets
 * the same share). It is driven over its own HTTP API: `POST /_reset` with `{ failPercent }`,
 * `GET /_stats`, `GET /_arrivals`.
 */
import { spawn } from 'node:child_process'

const source = `
const { createServer } = require('node:http')
const { createHmac, timingSafeEqual } = require('node:crypto')
const key = Buffer.from(process.argv[1].slice('whsec_'.length), 'base64')
let failPercent = 0
let counts = new Map()
let arrivals = new Map()
let invalid = 0
let requests = 0
function hash(id) {
  let h = 2166136261
  for (let i = 0; i < id.length; i++) h = Math.imul(h ^ id.charCodeAt(i), 16777619)
  return (h >>> 0) % 100
}
function verified(headers, body) {
  const id = headers['webhook-id'], ts = headers['webhook-timestamp'], sig = headers['webhook-signature']
  if (!id || !ts || !sig) return false
  const expected = createHmac('sha256', key).update(id + '.' + ts + '.').update(body).digest()
  for (const entry of String(sig).split(' ')) {
    const [version, value] = entry.split(',')
    if (version !== 'v1' || !value) continue
    const given = Buffer.from(value, 'base64')
    if (given.length === expected.length && timingSafeEqual(given, expected)) return true
  }
  return false
}
const server = createServer((req, res) => {
  const chunks = []
  req.on('data', (c) => chunks.push(c))
  req.on('end', () => {
    if (req.url === '/_reset') {
      const options = JSON.parse(Buffer.concat(chunks).toString() || '{}')
      failPercent = options.failPercent ?? 0
      counts = new Map(); arrivals = new Map(); invalid = 0; requests = 0
      res.end('{}')
      return
    }
    if (req.url === '/_stats') {
      let delivered = 0, duplicated = 0
      for (const n of counts.values()) { delivered++; if (n > 1) duplicated += n - 1 }
      const cpu = process.cpuUsage()
      res.end(JSON.stringify({ requests, delivered, duplicated, invalid, cpuMicros: cpu.user + cpu.system }))
      return
    }
    if (req.url === '/_arrivals') {
      res.end(JSON.stringify(Object.fromEntries(arrivals)))
      return
    }
    requests++
    const body = Buffer.concat(chunks)
    if (!verified(req.headers, body)) { invalid++; res.statusCode = 401; res.end(); return }
    const id = String(req.headers['webhook-id'])
    const list = arrivals.get(id) ?? []
    list.push(Date.now())
    arrivals.set(id, list)
    if (list.length === 1 && hash(id) < failPercent) { res.statusCode = 500; res.end(); return }
    counts.set(id, (counts.get(id) ?? 0) + 1)
    res.statusCode = 204
    res.end()
  })
})
server.keepAliveTimeout = 60_000
server.listen(0, '127.0.0.1', () => console.log(server.address().port))
process.stdin.on('end', () => process.exit(0)).resume()
`

export interface ReceiverStats {
  /** Every request received, verified or not. */
  requests: number
  /** Distinct ids answered 2xx. */
  delivered: number
  /** Extra 2xx answers to ids already delivered. */
  duplicated: number
  /** Requests whose signature did not verify. */
  invalid: number
  /** CPU the receiver's process has used since it started, µs. */
  cpuMicros: number
}

export interface CountingReceiver {
  url: string
  reset(failPercent?: number): Promise<void>
  stats(): Promise<ReceiverStats>
  /** Arrival instants (ms) of every request, by id. */
  arrivals(): Promise<Record<string, number[]>>
  /** Resolves once `count` distinct ids were delivered; rejects after `timeoutMs`. */
  delivered(count: number, timeoutMs?: number): Promise<void>
  stop(): Promise<void>
}

export async function startCountingReceiver(secret: string): Promise<CountingReceiver> {
  const child = spawn(process.execPath, ['-e', source, secret], { stdio: ['pipe', 'pipe', 'inherit'] })
  const port = await new Promise<number>((resolve) => child.stdout.once('data', (chunk: Buffer) => resolve(Number(chunk.toString().trim()))))
  const origin = `http://127.0.0.1:${port}`
  const call = async <T>(path: string, body?: unknown): Promise<T> => {
    const response = await fetch(`${origin}${path}`, body === undefined ? {} : { method: 'POST', body: JSON.stringify(body) })
    return (await response.json()) as T
  }
  const receiver: CountingReceiver = {
    url: `${origin}/callbacks`,
    reset: (failPercent = 0) => call('/_reset', { failPercent }),
    stats: () => call<ReceiverStats>('/_stats'),
    arrivals: () => call<Record<string, number[]>>('/_arrivals'),
    async delivered(count, timeoutMs = 120_000) {
      const end = Date.now() + timeoutMs
      for (;;) {
        const { delivered } = await receiver.stats()
        if (delivered >= count) return
        if (Date.now() > end) throw new Error(`only ${delivered} of ${count} callbacks delivered within ${timeoutMs} ms`)
        await new Promise((resolve) => setTimeout(resolve, 10))
      }
    },
    async stop() {
      child.stdin.end()
      await new Promise((resolve) => child.once('exit', resolve))
    }
  }
  return receiver
}
