/**
 * `endpoint-callback/express`: Express 5 middleware that lets only verified callbacks through.
 *
 * @module endpoint-callback/express
 */
import type { Request, RequestHandler } from 'express'
import type { BodyLike, VerifiedCallback } from '../types.ts'
import { createReceiverCore, nodeBodyConsumed, rawBodyUnavailable, readNodeBody, settleOnResponse } from './core.ts'
import type { ReceiverOptions } from './core.ts'

export type { ReceiverOptions } from './core.ts'

declare global {
  namespace Express {
    interface Request {
      /**
       * The callback verified by `callbackReceiver` from `endpoint-callback/express`. Its `data`
       * is `unknown` here; `res.locals.callback` has it typed as you name it:
       * `callbackReceiver<Report>(options)`.
       */
      callback?: VerifiedCallback | undefined
    }
  }
}

declare module 'http' {
  interface IncomingMessage {
    /**
     * The raw body bytes, for a body parser that keeps them for `callbackReceiver`:
     * `express.json({ verify: (req, res, buf) => { req.rawBody = buf } })`.
     */
    rawBody?: Buffer | string | undefined
  }
}

/**
 * What `callbackReceiver<T>` puts on `res.locals`: the verified callback, its `data` typed as the
 * `T` you name (not checked at run time: the signature proves who sent it, not its shape).
 */
export interface CallbackLocals<T = unknown> {
  callback: VerifiedCallback<T>
}

/**
 * Express 5 middleware: verifies the Standard Webhooks signature over the raw body and puts the
 * callback on `req.callback` and `res.locals.callback` (its `data` typed as `T` there), or answers 400/401/409/413/415 with a problem document (503 with
 * `retry-after` when the sender's `jwks` cannot be loaded). It answers the sender's intent
 * challenges by itself, and decrypts encrypted callbacks with `decryptionKey`.
 *
 * Mount it before any JSON parser, or after `express.raw()`; a parser that keeps the bytes in
 * `req.rawBody` (`express.json({ verify: (req, res, buf) => { req.rawBody = buf } })`) works too.
 * A parser that consumed the body without keeping it is a configuration error
 * (`ERR_CALLBACK_RAW_BODY_UNAVAILABLE`), passed to `next(err)`.
 *
 * @example
 * ```ts
 * import { callbackReceiver } from 'endpoint-callback/express'
 *
 * app.post('/callbacks', callbackReceiver({ secret: process.env.CALLBACK_SECRET, replayGuard: true }), (req, res) => {
 *   console.log(req.callback!.type, req.callback!.data)
 *   res.sendStatus(204)
 * })
 *
 * // data typed as you name it, on res.locals
 * app.post('/reports', callbackReceiver<{ reportUrl: string }>({ secret }), (req, res) => {
 *   console.log(res.locals.callback.data.reportUrl)
 *   res.sendStatus(204)
 * })
 * ```
 */
export function callbackReceiver<T = unknown>(
  options: ReceiverOptions
): RequestHandler<Record<string, string>, any, any, Request['query'], CallbackLocals<T>> {
  const receiver = createReceiverCore(options)
  return (req, res, next) => {
    receiver.admit({ method: req.method, headers: req.headers, body: (limit) => rawBody(req, limit) }).then((outcome) => {
      if (outcome.accepted) {
        req.callback = outcome.callback
        res.locals.callback = outcome.callback as VerifiedCallback<T>
        settleOnResponse(res, outcome)
        return next()
      }
      // A misconfigured receiver is the application's error; a 503 (keys not loadable) is answered.
      if (outcome.status === 500) return next(outcome.error)
      res.status(outcome.status).set(outcome.headers).send(outcome.body)
    }, next)
  }
}

function rawBody(req: Request, limit: number): BodyLike | Promise<Buffer> {
  const stashed: unknown = req.rawBody
  if (typeof stashed === 'string' || Buffer.isBuffer(stashed)) return stashed
  if (Buffer.isBuffer(req.body)) return req.body
  if (!nodeBodyConsumed(req)) return readNodeBody(req, limit)
  throw rawBodyUnavailable(
    "Mount callbackReceiver before express.json() (or other parsers) on this route, put express.raw({ type: '*/*' }) in front of it, or keep the bytes with express.json({ verify: (req, res, buf) => { req.rawBody = buf } })."
  )
}
