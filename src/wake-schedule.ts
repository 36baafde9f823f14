/**
 * The instants a worker knows tasks fall due at (announced by the store, or scheduled by its own
 * attempts), so that it wakes at each of them instead of at its next poll. Only the earliest few are
 * kept: a later one forgotten here is still found by the poll, or announced again.
 */
export interface WakeSchedule {
  /** Notes that a task falls due at `at` (ms). */
  add(at: number): void
  /** The earliest instant after `after`, forgetting every one at or before it; `Infinity` if none. */
  next(after: number): number
  readonly size: number
}

export function createWakeSchedule(capacity = 256): WakeSchedule {
  /** Ascending, without repeats. */
  const instants: number[] = []

  return {
    add(at) {
      let low = 0
      let high = instants.length
      while (low < high) {
        const middle = (low + high) >>> 1
        if (instants[middle]! < at) low = middle + 1
        else high = middle
      }
      if (instants[low] === at || low >= capacity) return
      instants.splice(low, 0, at)
      if (instants.length > capacity) instants.pop()
    },
    next(after) {
      let passed = 0
      while (passed < instants.length && instants[passed]! <= after) passed++
      if (passed > 0) instants.splice(0, passed)
      return instants.length === 0 ? Infinity : instants[0]!
    },
    get size() {
      return instants.length
    },
  }
}
