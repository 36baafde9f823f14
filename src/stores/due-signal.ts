/**
 * The in-process half of a store's wake-up channel: notifications carry the instant a task falls
 * due (epoch ms); listeners are called at once when it is due already, or by one timer at the
 * earliest announced instant, so a retry due in two seconds wakes a worker in two seconds rather
 * than at its next poll. Far-off instants are left to polling.
 */
export interface DueSignal {
  add(listener: () => void): () => void
  /** A notification arrived; `payload` is epoch ms or empty ("something changed, look now"). */
  notify(payload: string | undefined): void
  /** Wake everyone now (after a reconnect, when notifications may have been missed). */
  wake(): void
  readonly size: number
  clear(): void
}

/** Instants further ahead than this are left to the worker's polling. */
const horizonMs = 5 * 60_000

export function createDueSignal(): DueSignal {
  const listeners = new Set<() => void>()
  let timer: NodeJS.Timeout | undefined
  let timerAt = Infinity

  const wake = () => {
    for (const listener of [...listeners]) {
      try {
        listener()
      } catch {
        // a listener's own failure must not stop the others from waking
      }
    }
  }

  return {
    add(listener) {
      listeners.add(listener)
      return () => {
        listeners.delete(listener)
        if (listeners.size === 0) this.clear()
      }
    },
    notify(payload) {
      const at = payload ? Number(payload) : NaN
      const wait = Number.isFinite(at) ? at - Date.now() : 0
      if (wait <= 0) return wake()
      if (wait > horizonMs || at >= timerAt) return
      clearTimeout(timer)
      timerAt = at
      timer = setTimeout(() => {
        timer = undefined
        timerAt = Infinity
        wake()
      }, wait)
      timer.unref()
    },
    wake,
    get size() {
      return listeners.size
    },
    clear() {
      clearTimeout(timer)
      timer = undefined
      timerAt = Infinity
    }
  }
}
