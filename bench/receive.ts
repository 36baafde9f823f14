/**
 * Requests per second through `callbackReceiver` on Express, against the same Express app with
 * express.json() and no verification, in one run.
 *
 * Each app runs in its own child process, so the load generator (undici, loopback only) shares an
 * event loop with neither, and each server's CPU time per request can be read on its own. Short
 * rounds alternate between the two apps and the ratio is the median of the per-pair ratios, so the
 * drifting load of a shared machine hits both sides alike. Target: at least 0.9x.
 *
 * Then the forged-`v1a` request of issue 12 against a receiver with 3 Ed25519 public keys: a 1 MiB
 * body with 16 crafted `v1a` entries (the most a header may hold; each a real curve point R and an
 * S below the group order, so nothing cheaper than hashing rejects it), and with 170 of them (as
 * reported), against a genuine request of the same body. Server CPU per request, alternating short
 * rounds, medians. Target: a rejected request costs at most 2x a genuine one.
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
import { generateSecret, generateSigningKey, signPayload } from 'endpoint-callback'
import { callbackReceiver } from 'endpoint-callback/express'

const PAIRS = 12
const ROUND_MS = 1000
const WARMUP_MS = 1500
const CONNECTIONS = 16
const IN_FLIGHT = 32

type AppName = 'plain' | 'verified'

/** Child side: one app, plus GET /cpu reporting this process's CPU time in microseconds. */
async function serve(name: AppName | 'ed25519', secret: string): Promise<void> {
  const app = express()
  app.get('/cpu', (_req, res) => {
    const { user, system } = process.cpuUsage()
    res.json({ micros: user + system })
  })
  if (name === 'ed25519') {
    app.post('/callbacks', callbackReceiver({ publicKey: process.env.BENCH_PUBLIC_KEYS!.split(' ') }), (req, res) => {
      if (typeof req.callback?.type !== 'string') return void res.sendStatus(400)
      res.sendStatus(204)
    })
  } else if (name === 'plain') {
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

async function start(name: AppName | 'ed25519', secret: string, publicKeys: string[] = []): Promise<Target> {
  const child = spawn(process.execPath, [...process.execArgv, fileURLToPath(import.meta.url), '--serve', name], {
    env: { ...process.env, BENCH_SECRET: secret, BENCH_PUBLIC_KEYS: publicKeys.join(' ') },
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
async function round(
  target: Target,
  requests: Array<{ headers: Record<string, string>; body: string }>,
  ms: number,
  expected = 204,
  inFlight = IN_FLIGHT
) {
  const cpuBefore = await cpuMicros(target)
  const started = performance.now()
  const deadline = started + ms
  let done = 0
  let next = 0
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      while (performance.now() < deadline) {
        const { headers, body } = requests[next++ % requests.length]!
        const response = await target.pool.request({ path: '/callbacks', method: 'POST', headers, body })
        await response.body.dump()
        if (response.statusCode !== expected) throw new Error(`unexpected status ${response.statusCode}`)
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
  await forgedV1a()
}

const FORGED_ROUNDS = 8
const FORGED_ROUND_MS = 1500
const FORGED_IN_FLIGHT = 4

/** Server CPU per request of genuine and forged `v1a` requests with a 1 MiB body, 3 keys configured. */
async function forgedV1a(): Promise<void> {
  const keys = [generateSigningKey(), generateSigningKey(), generateSigningKey()]
  const target = await start('ed25519', '', keys.map((key) => key.publicKey))
  try {
    const now = new Date()
    const rows = Array.from({ length: 12_000 }, (_, r) => ({ r, total: r * 17.5, label: `row ${r}` }))
    const body = JSON.stringify({ type: 'report.ready', timestamp: now.toISOString(), data: { rows } }).slice(0, -3)
    const padded = `${body}],"pad":"${'x'.repeat(Math.max(0, 1024 * 1024 - Buffer.byteLength(body) - 12))}"}}`
    // The same size in one string field: the cheapest 1 MiB to parse, so the least flattering genuine request.
    const head = JSON.stringify({ type: 'report.ready', timestamp: now.toISOString(), data: { text: '' } })
    const flat = head.replace('"text":""', `"text":"${'x'.repeat(1024 * 1024 - Buffer.byteLength(head))}"`)
    // The sender signs with its current key, the last of the receiver's three (old, previous, current).
    const signed = (body: string) =>
      Array.from({ length: 8 }, (_, i) => {
        const headers = signPayload({ id: `msg_${i}`, timestamp: now, body }, { signingKey: keys[2]!.signingKey })
        return { headers: { ...headers, 'content-type': 'application/json' }, body }
      })
    const genuine = signed(padded)
    // Entries made from a real signature over something else: a valid point R, S below the order.
    const real = Buffer.from(
      signPayload({ id: 'x', timestamp: now, body: 'x' }, { signingKey: generateSigningKey().signingKey })['webhook-signature'].slice(4),
      'base64'
    )
    const forged = (entries: number) =>
      Array.from({ length: 8 }, (_, i) => {
        const signature = Array.from({ length: entries }, (_, e) => {
          real[32] = e
          real[33] = i
          return `v1a,${real.toString('base64')}`
        }).join(' ')
        const headers = { 'webhook-id': `msg_${i}`, 'webhook-timestamp': String(Math.floor(now.getTime() / 1000)), 'webhook-signature': signature }
        return { headers: { ...headers, 'content-type': 'application/json' }, body: padded }
      })
    const kinds = {
      genuine: { requests: genuine, status: 204 },
      'genuine, one string field': { requests: signed(flat), status: 204 },
      'forged, 16 v1a entries': { requests: forged(16), status: 401 },
      'forged, 170 v1a entries': { requests: forged(170), status: 400 },
    }
    type Kind = keyof typeof kinds
    const names = Object.keys(kinds) as Kind[]
    for (const name of names) await round(target, kinds[name].requests, 500, kinds[name].status, FORGED_IN_FLIGHT)
    const cpu = Object.fromEntries(names.map((name) => [name, [] as number[]])) as Record<Kind, number[]>
    const ratios: number[] = []
    for (let r = 0; r < FORGED_ROUNDS; r++) {
      const order = r % 2 === 0 ? names : [...names].reverse()
      for (const name of order) {
        const result = await round(target, kinds[name].requests, FORGED_ROUND_MS, kinds[name].status, FORGED_IN_FLIGHT)
        cpu[name].push(result.cpuPerRequest)
      }
      ratios.push(cpu['forged, 16 v1a entries'].at(-1)! / cpu.genuine.at(-1)!)
    }
    console.log(
      `\nforged v1a: body ${Buffer.byteLength(padded)} bytes, 3 public keys, ${FORGED_IN_FLIGHT} in flight, ` +
        `${FORGED_ROUNDS} alternating rounds of ${FORGED_ROUND_MS} ms (medians)`
    )
    for (const name of names) console.log(`${name.padEnd(27)} ${(median(cpu[name]) / 1000).toFixed(2).padStart(7)} ms server CPU per request`)
    const ratio = median(ratios)
    console.log(`per-round ratios (forged 16 / genuine): ${ratios.map((r) => r.toFixed(2)).join(' ')}`)
    console.log(`rejected / genuine CPU: ${ratio.toFixed(2)}x (target <= 2x) ${ratio <= 2 ? 'met' : 'NOT met'}`)
    const flatRatio = median(cpu['forged, 16 v1a entries']) / median(cpu['genuine, one string field'])
    console.log(`rejected / genuine with one string field: ${flatRatio.toFixed(2)}x (the least flattering body)`)
  } finally {
    await target.pool.close()
    target.child.kill('SIGTERM')
  }
}

const serveIndex = process.argv.indexOf('--serve')
if (serveIndex !== -1) await serve(process.argv[serveIndex + 1] as AppName, process.env.BENCH_SECRET!)
else if (process.argv.includes('--forged-only')) await forgedV1a()
else await main()
