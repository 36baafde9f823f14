/**
 * `endpoint-callback/koa`: Koa 3 middleware that lets only verified callbacks through.
 *
 * @module endpoint-callback/koa
 */
import type { Context, Middleware } from 'koa'
import type { BodyLike, VerifiedCallback } from '../types.ts'
import { createReceiverCore, nodeBodyConsumed, rawBodyUnavailable, readNodeBody, settleAfter } from './core.ts'
import type { ReceiverOptions } from './core.ts'

export type { ReceiverOptions } from './core.ts'

declare module 'koa' {
  interface DefaultState {
    /** The callback verified by `callbackReceiver` from `endpoint-callback/koa`. */
    callback?: VerifiedCallback
  }
}

/**
 * Koa 3 middleware: verifies the Standard Webhooks signature over the raw body and puts the
 * callback on `ctx.state.callback`, or answers 400/401/409/413/415 with a problem document (503
 * with `retry-after` when the sender's `jwks` cannot be loaded). It answers the sender's intent
 * challenges by itself, and decrypts encrypted callbacks with `decryptionKey`.
 *
 * Mount it before any body parser, or after one that keeps the bytes in `ctx.request.rawBody`
 * (`@koa/bodyparser` does). A parser that consumed the body without keeping it is a configuration
 * error (`ERR_CALLBACK_RAW_BODY_UNAVAILABLE`), thrown to Koa's error handling.
 *
 * @example
 * ```ts
 * import { callbackReceiver } from 'endpoint-callback/koa'
 *
 * app.use(callbackReceiver({ secret: process.env.CALLBACK_SECRET, replayGuard: true }))
 * app.use((ctx) => {
 *   console.log(ctx.state.callback!.type, ctx.state.callback!.data)
 *   ctx.status = 204
 * })
 * ```
 */
export function callbackReceiver(options: ReceiverOptions): Middleware {
  const receiver = createReceiverCore(options)
  return async (ctx, next) => {
    const outcome = await receiver.admit({ method: ctx.method, headers: ctx.req.headers, body: (limit) => rawBody(ctx, limit) })
    if (outcome.accepted) {
      ctx.state.callback = outcome.callback
      return settleAfter(outcome, next, () => ctx.status)
    }
    // A misconfigured receiver is the application's error; a 503 (keys not loadable) is answered.
    if (outcome.status === 500) throw outcome.error
    ctx.status = outcome.status
    ctx.set(outcome.headers)
    ctx.body = outcome.body
  }
}

function rawBody(ctx: Context, limit: number): BodyLike | Promise<Buffer> {
  const stashed = (ctx.request as { rawBody?: unknown }).rawBody
  if (typeof stashed === 'string' || Buffer.isBuffer(stashed)) return stashed
  if (!nodeBodyConsumed(ctx.req)) return readNodeBody(ctx.req, limit)
  throw rawBodyUnavailable('Mount callbackReceiver before the body parser, or use one that keeps ctx.request.rawBody (such as @koa/bodyparser).')
}
