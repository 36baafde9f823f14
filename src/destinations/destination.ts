/**
 * Which destination a task belongs to: by default its callback URL's origin (scheme, host, port),
 * so every client endpoint is limited on its own; a sender may group tasks otherwise.
 */
import type { NewCallbackTask } from '../types.ts'

/** What a sender's `destination(task)` option is given: the task about to be stored, without its secret. */
export type DestinationTask = Pick<NewCallbackTask, 'id' | 'callbackUrl' | 'event' | 'idempotencyKey' | 'metadata'>

/** Longest destination name a store keeps. */
export const MAX_DESTINATION_LENGTH = 512

/** Origins of the callback URLs seen last: a service calls the same few URLs back again and again. */
const origins = new Map<string, string>()
const ORIGIN_CACHE_SIZE = 1024

/** The origin of an (already checked) callback URL: `https://hooks.example.com:8443`. */
export function originOf(callbackUrl: string): string {
  let origin = origins.get(callbackUrl)
  if (origin === undefined) {
    origin = new URL(callbackUrl).origin
    // a service with more distinct URLs than this parses again, as without the cache
    if (origins.size >= ORIGIN_CACHE_SIZE) origins.clear()
    origins.set(callbackUrl, origin)
  }
  return origin
}

/**
 * Resolves the sender's `destination` option once: the default origin, or the user's function
 * checked on each call (a TypeError naming the option when it returns no usable name).
 */
export function resolveDestinationOf(option: unknown): (task: DestinationTask) => string {
  if (option === undefined) return (task) => originOf(task.callbackUrl)
  if (typeof option !== 'function') throw new TypeError('destination must be a function (task) => string')
  const destinationOf = option as (task: DestinationTask) => unknown
  return (task) => {
    const name = destinationOf(task)
    if (typeof name !== 'string' || name === '' || name.length > MAX_DESTINATION_LENGTH) {
      throw new TypeError(`destination(task) must return a non-empty string of at most ${MAX_DESTINATION_LENGTH} characters`)
    }
    return name
  }
}
