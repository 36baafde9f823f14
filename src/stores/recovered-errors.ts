/**
 * The workers subscribed to one store through `CallbackStore.subscribeErrors`: errors the store met
 * and got over by itself (a connection that went silent, a statement it sent again), which no
 * call rejected with. The PostgreSQL and Redis stores report them the same way, so they share this.
 */

/** Subscriptions to the errors a store recovered from. */
export interface RecoveredErrors {
  /** Open subscriptions. */
  readonly size: number
  /** Adds a subscription; returns its removal. */
  add(listener: (error: Error) => void): () => void
  /** Tells every subscriber of `error`; with none, it is dropped (nobody is there to tell). */
  report(error: Error): void
}

export function createRecoveredErrors(): RecoveredErrors {
  const listeners = new Set<(error: Error) => void>()
  return {
    get size() {
      return listeners.size
    },
    add(listener) {
      if (typeof listener !== 'function') throw new TypeError('subscribeErrors: `listener` must be a function')
      // a wrapper per subscription, so the same function subscribed twice unsubscribes one at a time
      const subscription = (error: Error) => listener(error)
      listeners.add(subscription)
      return () => {
        listeners.delete(subscription)
      }
    },
    report(error) {
      for (const listener of [...listeners]) {
        try {
          listener(error)
        } catch (thrown) {
          // one listener's failure must not keep the error from the others; it still surfaces
          queueMicrotask(() => {
            throw thrown
          })
        }
      }
    },
  }
}
