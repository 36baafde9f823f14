/**
 * Requests per second through `callbackReceiver` on Express, against the same Express app with
 * express.json() and no verification, in one run.
 *
 * Each app runs in its own child process, so the load generator (undici, loopback only) shares an
 * event loop with neither, and each server's CPU time per request can be read on its own. Short
 * rounds alternate between the two apps and the ratio is the median of the per-pair ratios, so the
 * drifting load of a shared machine hits both sides alike. Target: at least 0.9x.
 *
 *   node --conditions=endpoint-callback-source --import tsx --expose-gc bench/receive.ts
 */
import { spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { fileURLToPath } from 'node:url'
import express from 'express'
import { Pool } from 'undici'
import { generateSecret, signPayload } from 'endpoint-callback'
import { callbackReceiver } from 'endpoint-callback/express'

const PAIRS = 12
const ROUND_MS = 1000
const WARMUP_MS = 1500
const CONNECTIONS = 16
const IN_FLIGHT = 32

type AppName = 'plain' | 'verified'

/** Child side: one app, plus GET /cpu reporting this process's CPU time in microseconds. */
async function serve(name: AppName, secret: string): Promise<void> {
  const app = express()
  app.get('/cpu', (_req, res) => {
    const { user, system } = process.cpuUsage()
    res.json({ micros: user + system })
  })
  if (name === 'plain') {
    app.post('/callbacks', express.json(), (req, res) => {
      if (typeof req.body?.type !== 'string') return void res.sendStatus(400)
      res.sendStatus(204)
    })
  } else {
    app.post('/callbacks', callbackReceiver({ secret }), (req, res) => {
      if (typeof req.callback?.type !== 'string') return void res.sendStatus(400)
      res.sendStatus(204)
    })
  }
  const server = createServer(app).listen(0, '127.0.0.1')
  await once(server, 'listening')
  process.once('SIGTERM', () => process.exit(0)) // exit hooks run, e.g. --cpu-prof writes its file
  process.stdout.write(`${(server.address() as AddressInfo).port}\n`)
}

interface Target {
  child: ChildProcess
  pool: Pool
}

async function start(name: AppName, secret: string): Promise<Target> {
  const child = spawn(process.execPath, [...process.execArgv, fileURLToPath(import.meta.url), '--serve', name], {
    env: { ...process.env, BENCH_SECRET: secret },
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  const [line] = (await once(child.stdout!, 'data')) as [Buffer]
  return { child, pool: new Pool(`http://127.0.0.1:${Number(line.toString())}`, { connections: CONNECTIONS }) }
}

async function cpuMicros(target: Target): Promise<number> {
  const response = await target.pool.request({ path: '/cpu', method: 'GET' })
  return ((await response.body.json()) as { micros: number }).micros
}

/** Sends requests for `ms`, IN_FLIGHT outstanding; returns requests per second and server CPU µs per request. */
async function round(target: Target, requests: Array<{ headers: Record<string, string>; body: string }>, ms: number) {
  const cpuBefore = await cpuMicros(target)
  const started = performance.now()
  const deadline = started + ms
  let done = 0
  let next = 0
  await Promise.all(
    Array.from({ length: IN_FLIGHT }, async () => {
      while (performance.now() < deadline) {
        const { headers, body } = requests[next++ % requests.length]!
        const response = await target.pool.request({ path: '/callbacks', method: 'POST', headers, body })
        await response.body.dump()
        if (response.statusCode !== 204) throw new Error(`unexpected status ${response.statusCode}`)
        done++
      }
    })
  )
  const seconds = (performance.now() - started) / 1000
  const cpu = (await cpuMicros(target)) - cpuBefore
  return { rate: done / seconds, cpuPerRequest: cpu / done }
}

const median = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b)
  const middle = sorted.length >> 1
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2
}

async function main(): Promise<void> {
  const secret = generateSecret()
  const targets = { plain: await start('plain', secret), verified: await start('verified', secret) }
  try {
    // A typical result payload (under 1 KiB), signed now: the run stays well inside the tolerance.
    const requests = Array.from({ length: 256 }, (_, i) => {
      const body = JSON.stringify({
        type: 'report.ready',
        timestamp: new Date().toISOString(),
        data: {
          reportId: i,
          url: `https://reports.example.com/r/${i}.pdf`,
          rows: Array.from({ length: 20 }, (_, r) => ({ r, total: r * 17.5, label: `row ${r}` })),
        },
      })
      const headers = { ...signPayload({ id: `msg_${i}`, timestamp: new Date(), body }, { secret }), 'content-type': 'application/json' }
      return { headers, body }
    })

    await round(targets.plain, requests, WARMUP_MS)
    await round(targets.verified, requests, WARMUP_MS)

    const rates: Record<AppName, number[]> = { plain: [], verified: [] }
    const cpu: Record<AppName, number[]> = { plain: [], verified: [] }
    const ratios: number[] = []
    for (let pair = 0; pair < PAIRS; pair++) {
      const order: AppName[] = pair % 2 === 0 ? ['plain', 'verified'] : ['verified', 'plain']
      for (const name of order) {
        const result = await round(targets[name], requests, ROUND_MS)
        rates[name].push(result.rate)
        cpu[name].push(result.cpuPerRequest)
      }
      ratios.push(rates.verified.at(-1)! / rates.plain.at(-1)!)
    }

    const rate = (name: AppName) => median(rates[name]).toFixed(0).padStart(6)
    const micros = (name: AppName) => median(cpu[name]).toFixed(1).padStart(6)
    const ratio = median(ratios)
    const cpuRatio = median(cpu.plain) / median(cpu.verified)
    console.log(
      `body ${Buffer.byteLength(requests[0]!.body)} bytes, ${CONNECTIONS} connections, ${IN_FLIGHT} in flight, ` +
        `${PAIRS} alternating pairs of ${ROUND_MS} ms rounds (medians)`
    )
    console.log(`express.json(), no verification: ${rate('plain')} req/s  ${micros('plain')} µs server CPU per request`)
    console.log(`callbackReceiver({ secret }):     ${rate('verified')} req/s  ${micros('verified')} µs server CPU per request`)
    console.log(`per-pair ratios: ${ratios.map((r) => r.toFixed(2)).join(' ')}`)
    console.log(`throughput ratio: ${ratio.toFixed(2)}x (target >= 0.90x) ${ratio >= 0.9 ? 'met' : 'NOT met'}`)
    console.log(`CPU-bound ratio (plain µs / verified µs per request): ${cpuRatio.toFixed(2)}x`)
  } finally {
    for (const target of Object.values(targets)) {
      await target.pool.close()
      target.child.kill('SIGTERM')
    }
  }
}

const serveIndex = process.argv.indexOf('--serve')
if (serveIndex !== -1) await serve(process.argv[serveIndex + 1] as AppName, process.env.BENCH_SECRET!)
else await main()
