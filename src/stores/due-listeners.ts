/**
 * The workers subscribed to one store through `CallbackStore.subscribe`. Every store announces
 * "a task may be due sooner" the same way, so the three of them share this.
 */

/** What a subscriber is told: the instant (ms since the epoch) a task falls due, or nothing for "look now". */
export type DueListener = (dueAt?: number) => void

/** Subscriptions to a store's wake-ups. */
export interface DueListeners {
  /** Open subscriptions. */
  readonly size: number
  /** Adds a subscription; returns its removal. */
  add(listener: DueListener): () => void
  /** Calls every listener now, with the due instant when it is known. */
  wakeAll(dueAt?: number): void
  /**
   * Calls every listener once, in a microtask, however often it is asked within one turn, with the
   * earliest instant asked for (or none, when any call gave none).
   */
  wakeSoon(dueAt?: number): void
}

export function createDueListeners(): DueListeners {
  const listeners = new Set<DueListener>()
  let queued = false
  /** The earliest instant asked for in this turn; -Infinity once someone asked for "now". */
  let earliest = Infinity

  const wakeAll = (dueAt?: number) => {
    for (const listener of [...listeners]) {
      try {
        listener(dueAt)
      } catch (error) {
        // one listener's failure must not keep the others asleep; it still surfaces
        queueMicrotask(() => {
          throw error
        })
      }
    }
  }

  return {
    get size() {
      return listeners.size
    },
    add(listener) {
      if (typeof listener !== 'function') throw new TypeError('subscribe: `listener` must be a function')
      // a wrapper per subscription, so the same function subscribed twice unsubscribes one at a time
      const subscription: DueListener = (dueAt) => listener(dueAt)
      listeners.add(subscription)
      return () => {
        listeners.delete(subscription)
      }
    },
    wakeAll,
    wakeSoon(dueAt) {
      if (listeners.size === 0) return
      const at = dueAt === undefined || !Number.isFinite(dueAt) ? -Infinity : dueAt
      if (at < earliest) earliest = at
      // a burst of completions in one turn wakes each worker once
      if (queued) return
      queued = true
      queueMicrotask(() => {
        queued = false
        const due = earliest
        earliest = Infinity
        wakeAll(due === -Infinity ? undefined : due)
      })
    },
  }
}

/** The due instant a store announced (NOTIFY payload, pub/sub message), or nothing for "look now". */
export function announcedDueAt(message: string | undefined): number | undefined {
  if (message === undefined || message === '') return undefined
  const at = Number(message)
  return Number.isFinite(at) ? at : undefined
}
