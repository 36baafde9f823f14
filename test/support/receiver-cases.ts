/**
 * Signed requests for the receiver tests: the same cases run against Express, Koa and Web
 * `Request` handlers, signed both by the `standardwebhooks` package and by our `signPayload`.
 */
import { request as httpRequest } from 'node:http'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import { randomUUID } from 'node:crypto'
import { Webhook } from 'standardwebhooks'
import { generateSecret, signPayload } from 'endpoint-callback'
import type { CallbackErrorCode } from 'endpoint-callback'

/** The receiver's current secret, the one it is rotating away from, and one it never knew. */
export const CURRENT_SECRET = generateSecret()
export const PREVIOUS_SECRET = generateSecret()
export const WRONG_SECRET = generateSecret()

/** Options every receiver under test gets: two secrets, mid-rotation. */
export const ROTATING = { secret: [CURRENT_SECRET, PREVIOUS_SECRET] }

export type Signer = 'standardwebhooks' | 'signPayload'

export interface SignedCallback {
  headers: Record<string, string>
  body: string
}

/** A callback body in the wire envelope. */
export function envelope(data: unknown, type = 'report.ready'): string {
  return JSON.stringify({ type, timestamp: new Date().toISOString(), data })
}

/** Signs `body` as a sender would, with either library. */
export function signed(
  signer: Signer,
  options: { secret?: string; body?: string; id?: string; timestamp?: Date } = {}
): SignedCallback {
  const secret = options.secret ?? CURRENT_SECRET
  const body = options.body ?? envelope({ reportId: 7, note: 'naïve ✓' })
  const id = options.id ?? `msg_${randomUUID()}`
  const timestamp = options.timestamp ?? new Date()
  const headers =
    signer === 'standardwebhooks'
      ? {
          'webhook-id': id,
          'webhook-timestamp': String(Math.floor(timestamp.getTime() / 1000)),
          'webhook-signature': new Webhook(secret).sign(id, timestamp, body),
        }
      : { ...signPayload({ id, timestamp, body }, { secret }) }
  return { headers: { ...headers, 'content-type': 'application/json' }, body }
}

export interface ReceiverCase {
  /** A sentence. */
  name: string
  request: () => SignedCallback
  status: number
  code?: CallbackErrorCode
}

/** The cases every receiver must answer alike, for one signer. */
export function receiverCases(signer: Signer): ReceiverCase[] {
  return [
    { name: `accepts a callback signed by ${signer} with the current secret`, request: () => signed(signer), status: 200 },
    {
      name: `accepts a callback signed by ${signer} with the previous secret during rotation`,
      request: () => signed(signer, { secret: PREVIOUS_SECRET }),
      status: 200,
    },
    {
      name: `refuses with 401 a ${signer} callback whose body was tampered with`,
      request: () => {
        const callback = signed(signer)
        return { ...callback, body: callback.body.replace('"reportId":7', '"reportId":8') }
      },
      status: 401,
      code: 'ERR_CALLBACK_SIGNATURE_MISMATCH',
    },
    {
      name: `refuses with 401 a ${signer} callback signed with a secret the receiver does not know`,
      request: () => signed(signer, { secret: WRONG_SECRET }),
      status: 401,
      code: 'ERR_CALLBACK_SIGNATURE_MISMATCH',
    },
    {
      name: `refuses with 401 a ${signer} callback whose timestamp is ten minutes old`,
      request: () => signed(signer, { timestamp: new Date(Date.now() - 600_000) }),
      status: 401,
      code: 'ERR_CALLBACK_SIGNATURE_TIMESTAMP_TOO_OLD',
    },
    {
      name: `refuses with 401 a ${signer} callback whose timestamp is ten minutes ahead`,
      request: () => signed(signer, { timestamp: new Date(Date.now() + 600_000) }),
      status: 401,
      code: 'ERR_CALLBACK_SIGNATURE_TIMESTAMP_TOO_NEW',
    },
    {
      name: `refuses with 400 a ${signer} callback without its webhook-signature header`,
      request: () => {
        const { 'webhook-signature': _dropped, ...headers } = signed(signer).headers
        return { headers, body: envelope({}) }
      },
      status: 400,
      code: 'ERR_CALLBACK_SIGNATURE_HEADERS_MISSING',
    },
    {
      name: `refuses with 400 a ${signer} callback whose timestamp is not integer seconds`,
      request: () => {
        const callback = signed(signer)
        return { ...callback, headers: { ...callback.headers, 'webhook-timestamp': '1.5e9' } }
      },
      status: 400,
      code: 'ERR_CALLBACK_SIGNATURE_TIMESTAMP_MALFORMED',
    },
    {
      name: `refuses with 400 a ${signer} callback whose signature is not v1,<base64>`,
      request: () => {
        const callback = signed(signer)
        return { ...callback, headers: { ...callback.headers, 'webhook-signature': 'v1,not base64!' } }
      },
      status: 400,
      code: 'ERR_CALLBACK_SIGNATURE_MALFORMED',
    },
  ]
}

/** Every string a problem answer must never contain: the secrets, and the signatures sent. */
export function secretsIn(callback: SignedCallback): string[] {
  const signatures = (callback.headers['webhook-signature'] ?? '').split(' ').map((entry) => entry.split(',')[1] ?? '')
  return [CURRENT_SECRET, PREVIOUS_SECRET, WRONG_SECRET, ...signatures]
    .flatMap((value) => [value, value.replace(/^whsec_/, '')])
    .filter((value) => value.length >= 8)
}

/**
 * Streams `totalBytes` of body to `url` (chunked unless `headers` declare a content-length), respecting backpressure, until
 * the server answers or closes. Resolves with the status (if an answer arrived) and how many bytes
 * the client managed to hand to its socket.
 */
export function streamOversized(
  url: string,
  headers: Record<string, string>,
  totalBytes: number
): Promise<{ status: number | undefined; bytesSent: number; body: string }> {
  return new Promise((resolve) => {
    const chunk = Buffer.alloc(64 * 1024, 0x61)
    let bytesSent = 0
    let stopped = false
    let status: number | undefined
    let body = ''
    const finish = () => {
      if (stopped) return
      stopped = true
      resolve({ status, bytesSent, body })
    }
    const framing = 'content-length' in headers ? {} : { 'transfer-encoding': 'chunked' }
    const request = httpRequest(url, { method: 'POST', headers: { ...headers, ...framing } })
    request.on('response', (response) => {
      status = response.statusCode
      response.setEncoding('utf8')
      response.on('data', (text: string) => (body += text))
      response.on('end', () => {
        request.destroy()
        finish()
      })
      response.on('error', finish)
    })
    request.on('error', finish)
    request.on('close', () => setTimeout(finish, 50))
    const pump = () => {
      while (!stopped && status === undefined && bytesSent < totalBytes) {
        bytesSent += chunk.length
        if (!request.write(chunk)) return void request.once('drain', pump)
      }
      if (bytesSent >= totalBytes && !request.writableEnded) request.end()
    }
    pump()
  })
}

const collectGarbage: () => void = (() => {
  if (typeof globalThis.gc === 'function') return globalThis.gc
  // Without --expose-gc (plain `npm test`), the flag can still be set at run time for a new context.
  setFlagsFromString('--expose-gc')
  return runInNewContext('gc') as () => void
})()

/**
 * Runs `work` while sampling heap plus ArrayBuffer memory; resolves with its result and the peak
 * growth over the settled baseline, in bytes.
 */
export async function peakMemoryDuring<T>(work: () => Promise<T>): Promise<{ result: T; peakGrowth: number }> {
  collectGarbage()
  const used = () => {
    const usage = process.memoryUsage()
    return usage.heapUsed + usage.arrayBuffers
  }
  const baseline = used()
  let peak = baseline
  const sampler = setInterval(() => (peak = Math.max(peak, used())), 2)
  try {
    const result = await work()
    peak = Math.max(peak, used())
    return { result, peakGrowth: peak - baseline }
  } finally {
    clearInterval(sampler)
  }
}
