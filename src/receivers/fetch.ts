/**
 * `endpoint-callback/fetch`: verification for a Web `Request` (Hono, Next.js route handlers, Bun,
 * Deno, workers).
 *
 * @module endpoint-callback/fetch
 */
import type { VerifiedCallback } from '../types.ts'
import { createReceiverCore, rawBodyUnavailable, readWebBody } from './core.ts'
import type { CallbackReceiverCore, ReceiverOptions } from './core.ts'

export type { ReceiverOptions } from './core.ts'

// Options are validated once per options object, however often verifyRequest is called with it.
const cores = new WeakMap<ReceiverOptions, CallbackReceiverCore>()

/**
 * Verifies a Web `Request` and returns the callback (decrypted, with `decryptionKey`), or throws a
 * `SignatureVerificationError` (bad or missing signature, stale timestamp), a `ReceiverError`
 * (body too large, content type, decryption) or a `CallbackError` coded `ERR_CALLBACK_JWKS` (the
 * sender's `jwks` could not be loaded: answer 503). It reads the body; do not read it before. It
 * does not answer intent challenges (a challenge verifies like any callback, with `type`
 * `webhook.intent`): for those, duplicates and ready-made answers use {@link callbackHandler}.
 *
 * @example
 * ```ts
 * import { verifyRequest } from 'endpoint-callback/fetch'
 *
 * export async function POST(request: Request) {
 *   const callback = await verifyRequest(request, { secret: process.env.CALLBACK_SECRET })
 *   await saveReport(callback.data)
 *   return new Response(null, { status: 204 })
 * }
 * ```
 */
export function verifyRequest<T = unknown>(request: Request, options: ReceiverOptions): Promise<VerifiedCallback<T>> {
  let core = cores.get(options)
  if (core === undefined) {
    if (options?.replayGuard !== undefined && options.replayGuard !== false) {
      throw new TypeError('replayGuard needs to see the answer: use callbackHandler instead of verifyRequest')
    }
    core = createReceiverCore(options)
    cores.set(options, core)
  }
  return core.verify(webCallback(request)) as Promise<VerifiedCallback<T>>
}

/**
 * Wraps a handler so it runs only for verified callbacks and returns `Response`s: 400/401/409/413/415
 * problem documents for refusals (503 with `retry-after` when the sender's `jwks` cannot be loaded),
 * the answer to the sender's intent challenges, and the acknowledgement of a duplicate when
 * `replayGuard` is on. Encrypted callbacks reach the handler decrypted (`decryptionKey`).
 *
 * @example
 * ```ts
 * import { Hono } from 'hono'
 * import { callbackHandler } from 'endpoint-callback/fetch'
 *
 * const handle = callbackHandler({ secret, replayGuard: true }, async (callback) => {
 *   await saveReport(callback.data)
 *   return new Response(null, { status: 204 })
 * })
 * new Hono().post('/callbacks', (c) => handle(c.req.raw))
 * ```
 */
export function callbackHandler<T = unknown>(
  options: ReceiverOptions,
  handler: (callback: VerifiedCallback<T>, request: Request) => Response | Promise<Response>
): (request: Request) => Promise<Response> {
  if (typeof handler !== 'function') throw new TypeError('handler must be a function returning a Response')
  const receiver = createReceiverCore(options)
  return async (request) => {
    const outcome = await receiver.admit(webCallback(request))
    if (!outcome.accepted) {
      // A misconfigured receiver is the application's error; a 503 (keys not loadable) is answered.
      if (outcome.status === 500) throw outcome.error
      return new Response(outcome.body, { status: outcome.status, headers: outcome.headers })
    }
    let response: Response
    try {
      response = await handler(outcome.callback as VerifiedCallback<T>, request)
    } catch (error) {
      await outcome.settle(undefined)
      throw error
    }
    await outcome.settle(response.status)
    return response
  }
}

function webCallback(request: Request) {
  return {
    method: request.method,
    headers: request.headers,
    body: (limit: number) => {
      if (request.bodyUsed) throw rawBodyUnavailable('Pass the Request before reading its body (request.json(), request.text()); pass request.clone() if you must read it first.')
      return readWebBody(request.body, limit)
    },
  }
}
