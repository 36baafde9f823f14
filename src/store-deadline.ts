/**
 * A bound on one store call. A database whose side of a connection died without FIN or RST never
 * answers, and a worker awaiting it would keep its slot (and the task's lease) forever: past the
 * bound the call fails with a `StoreError`, which the worker reports as an `error` event before it
 * carries on. The call itself is not cancelled; the durable stores drop such a connection by
 * themselves (their own `timeoutMs`).
 */
import { StoreError } from './errors.ts'

/** The errors of missed deadlines, told apart from a store's own errors. */
const missed = new WeakSet<object>()

/** Whether `error` is a missed deadline: the store may still carry the call out, or may not. */
export function missedDeadline(error: unknown): boolean {
  return typeof error === 'object' && error !== null && missed.has(error)
}

/**
 * `call`, or a rejection with `ERR_CALLBACK_STORE` when it has not settled within `ms`. A call that
 * is already settled (a store in memory answers at once) costs no timer: it is armed only when the
 * call is still open once the microtasks queued so far have run.
 */
export function withinDeadline<T>(call: Promise<T>, ms: number, operation: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    let settled = false
    let timer: NodeJS.Timeout | undefined
    // A late answer or rejection of an abandoned call settles nothing (and is never unhandled).
    call.then(
      (value) => {
        settled = true
        if (timer !== undefined) clearTimeout(timer)
        resolve(value)
      },
      (error: unknown) => {
        settled = true
        if (timer !== undefined) clearTimeout(timer)
        reject(error)
      }
    )
    queueMicrotask(() => {
      if (settled) return
      timer = setTimeout(() => {
        const error = new StoreError('ERR_CALLBACK_STORE', `the store's ${operation} did not answer within ${ms} ms`)
        missed.add(error)
        reject(error)
      }, ms)
    })
  })
}
