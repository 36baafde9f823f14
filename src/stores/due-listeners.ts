/**
 * The workers subscribed to one store through `CallbackStore.subscribe`. Every store announces
 * "a task may be due sooner" the same way, so the three of them share this.
 */

/** Subscriptions to a store's wake-ups. */
export interface DueListeners {
  /** Open subscriptions. */
  readonly size: number
  /** Adds a subscription; returns its removal. */
  add(listener: () => void): () => void
  /** Calls every listener now. */
  wakeAll(): void
  /** Calls every listener once, in a microtask, however often it is asked within one turn. */
  wakeSoon(): void
}

export function createDueListeners(): DueListeners {
  const listeners = new Set<() => void>()
  let queued = false

  const wakeAll = () => {
    for (const listener of [...listeners]) {
      try {
        listener()
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
      const subscription = () => listener()
      listeners.add(subscription)
      return () => {
        listeners.delete(subscription)
      }
    },
    wakeAll,
    wakeSoon() {
      // a burst of completions in one turn wakes each worker once
      if (listeners.size === 0 || queued) return
      queued = true
      queueMicrotask(() => {
        queued = false
        wakeAll()
      })
    },
  }
}
