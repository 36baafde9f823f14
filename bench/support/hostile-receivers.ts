/**
 * Three receivers in a process of their own, for bench/fairness.ts: one that accepts and never
 * answers (tarpit), one that answers 200 and then a byte a second (trickle), and one that answers
 * 204 at once and notes when each callback first arrived. Writing `report` to its stdin prints a
 * JSON line with what each received.
 */
import { spawn } from 'node:child_process'
import { createInterface } from 'node:readline'

const source = `
const { createServer } = require('node:http')
const arrivals = new Map()
const received = { tarpit: [], trickle: [], healthy: 0 }
const held = new Set()
function listen(handler) {
  const server = createServer(handler)
  server.keepAliveTimeout = 60_000
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server.address().port)))
}
Promise.all([
  listen((req, res) => { received.tarpit.push(Date.now()); held.add(res); req.resume() }),
  listen((req, res) => {
    received.trickle.push(Date.now())
    req.resume()
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'text/plain' })
      const timer = setInterval(() => res.write('.'), 1000)
      res.on('close', () => clearInterval(timer))
    })
  }),
  listen((req, res) => {
    const at = Date.now()
    received.healthy++
    const id = String(req.headers['webhook-id'])
    if (!arrivals.has(id)) arrivals.set(id, at)
    req.resume()
    req.on('end', () => { res.statusCode = 204; res.end() })
  }),
]).then((ports) => console.log(JSON.stringify(ports)))
require('node:readline').createInterface({ input: process.stdin }).on('line', (line) => {
  if (line === 'report') console.log(JSON.stringify({ tarpit: received.tarpit, trickle: received.trickle, healthy: received.healthy, arrivals: [...arrivals.values()] }))
  if (line === 'reset') { arrivals.clear(); received.tarpit = []; received.trickle = []; received.healthy = 0 }
})
process.stdin.on('end', () => process.exit(0))
`

export interface HostileReport {
  /** When each attempt reached the tarpit and the trickling receiver (epoch ms). */
  tarpit: number[]
  trickle: number[]
  /** Requests the healthy receiver got, and when each webhook-id first arrived there. */
  healthy: number
  arrivals: number[]
}

export interface HostileReceivers {
  tarpitUrl: string
  trickleUrl: string
  healthyUrl: string
  report(): Promise<HostileReport>
  reset(): void
  stop(): Promise<void>
}

export async function startHostileReceivers(): Promise<HostileReceivers> {
  const child = spawn(process.execPath, ['-e', source], { stdio: ['pipe', 'pipe', 'inherit'] })
  const lines = createInterface({ input: child.stdout })
  const waiting: Array<(line: string) => void> = []
  lines.on('line', (line) => waiting.shift()?.(line))
  const nextLine = () => new Promise<string>((resolve) => waiting.push(resolve))
  const [tarpit, trickle, healthy] = JSON.parse(await nextLine()) as [number, number, number]
  return {
    tarpitUrl: `http://127.0.0.1:${tarpit}/hooks`,
    trickleUrl: `http://127.0.0.1:${trickle}/hooks`,
    healthyUrl: `http://127.0.0.1:${healthy}/hooks`,
    async report() {
      const line = nextLine()
      child.stdin.write('report\n')
      return JSON.parse(await line) as HostileReport
    },
    reset() {
      child.stdin.write('reset\n')
    },
    async stop() {
      child.stdin.end()
      await new Promise((resolve) => child.once('exit', resolve))
    },
  }
}
