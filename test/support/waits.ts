/**
 * Bounded waits for tests: each fails with a message saying what did not happen, in seconds, never
 * as the runner's silent 180 s cancellation.
 */
import { setTimeout as sleep } from 'node:timers/promises'

/** `promise`, or a rejection naming `what` when it has not settled within `ms`. */
export async function within<T>(promise: Promise<T>, what: string, ms = 5000): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms)
  })
  try {
    return await Promise.race([promise, deadline])
  } finally {
    clearTimeout(timer)
  }
}

/**
 * Checks `check` every `everyMs` until it answers true; fails naming `what` (and the last value
 * `describe` gives, if any) after `ms`.
 */
export async function eventually(
  check: () => boolean | Promise<boolean>,
  what: string,
  { ms = 5000, everyMs = 10, describe }: { ms?: number; everyMs?: number; describe?: () => string } = {}
): Promise<void> {
  const end = Date.now() + ms
  for (;;) {
    if (await check()) return
    if (Date.now() >= end) throw new Error(`${what}: not within ${ms} ms${describe === undefined ? '' : ` (${describe()})`}`)
    await sleep(everyMs)
  }
}

/** A promise with its resolve at hand, for a test to open a gate or mark a step. */
export function signal<T = void>(): { promise: Promise<T>; resolve: (value: T) => void } {
  let resolve!: (value: T) => void
  const promise = new Promise<T>((done) => (resolve = done))
  return { promise, resolve }
}
