/**
 * The memory store's due order: (due instant, task number) pairs, kept sorted by instant and then
 * by number, in leaves of up to {@link LEAF_CAPACITY} pairs that follow each other in order (a
 * B+tree one level deep).
 *
 * Why not a heap: taking the earliest task out of a binary or 4-ary heap walks from its root to a
 * leaf, and with a million tasks the lower levels of that walk miss the CPU's caches on every
 * pop; a claim of 100 then took two to three times as long as with 10 000. Here the earliest pairs
 * sit side by side at the front of the first leaf, so taking k of them reads k neighbouring pairs
 * whatever the size. Adding or deleting a pair costs two binary searches (over the leaves' first
 * pairs, then inside one leaf) and a shift of at most half a leaf. Every pair is deleted exactly,
 * so there is nothing stale to skip or rebuild.
 *
 * Internal; numbers are the caller's (entry numbers), instants are epoch milliseconds and never
 * `NaN`.
 */

/** Pairs per leaf: 4 KiB of keys and numbers, so a shift moves at most 2 KiB. */
export const LEAF_CAPACITY = 256

interface Leaf {
  /** Pair i of this leaf at [2i, 2i + 1]: its instant, then its number. */
  readonly pairs: Float64Array
  /** The leaf's pairs are those from `start` (inclusive) to `end` (exclusive). */
  start: number
  end: number
}

export interface DueOrder {
  /** How many pairs it holds. */
  readonly size: number
  /** Adds the pair (`due`, `number`); the caller never adds one it holds already. */
  add(due: number, number: number): void
  /** Deletes the pair (`due`, `number`); `false` if it did not hold it. */
  delete(due: number, number: number): boolean
  /** Takes out the earliest pairs due at or before `at`, at most `limit`, and returns their numbers in order. */
  takeDue(at: number, limit: number): number[]
  /** How many pairs are due at or before `at`, in O(leaves due + log). */
  countDue(at: number): number
  /**
   * Calls `visit` with the number of each pair due at or before `at`, earliest first, without
   * taking any out, until it returns `false`. The order must not change meanwhile.
   */
  scanDue(at: number, visit: (number: number) => boolean): void
}

const before = (due: number, number: number, otherDue: number, otherNumber: number) =>
  due < otherDue || (due === otherDue && number < otherNumber)

/** `leafCapacity` (an even number, at least 8) is there for tests, to reach splits and merges with few pairs. */
export function createDueOrder(leafCapacity = LEAF_CAPACITY): DueOrder {
  if (!Number.isSafeInteger(leafCapacity) || leafCapacity < 8 || leafCapacity % 2 !== 0) {
    throw new RangeError('leafCapacity must be an even integer of at least 8')
  }
  /**
   * The leaves in order are `leaves[head]` to the last. Leaves emptied at the front (what claims
   * do all the time) are skipped by moving `head`, not spliced out one by one: that would move the
   * whole index each time, which with a million tasks is thousands of entries.
   */
  const leaves: (Leaf | undefined)[] = []
  /** The first pair of each leaf, kept beside `leaves` so the search among leaves touches no leaf. */
  const firstDue: number[] = []
  const firstNumber: number[] = []
  let head = 0
  let size = 0
  /**
   * The leaf dropped last, kept for the next one needed: a store whose few due tasks come and go
   * (one task in flight, say) would otherwise allocate a leaf for each.
   */
  let spare: Leaf | undefined

  const newLeaf = (): Leaf => {
    const leaf = spare ?? { pairs: new Float64Array(2 * leafCapacity), start: 0, end: 0 }
    spare = undefined
    leaf.start = leaf.end = 0
    return leaf
  }

  const noteFirst = (index: number) => {
    const leaf = leaves[index]!
    firstDue[index] = leaf.pairs[2 * leaf.start]!
    firstNumber[index] = leaf.pairs[2 * leaf.start + 1]!
  }

  /** Drops the emptied leaf `index`; the only leaf stays, empty, for the next pair added. */
  const dropLeaf = (index: number) => {
    if (leaves.length - head === 1) return
    spare = leaves[index]
    if (index === head) {
      leaves[head++] = undefined
      if (head >= 64 && head >= leaves.length - head) {
        leaves.splice(0, head)
        firstDue.splice(0, head)
        firstNumber.splice(0, head)
        head = 0
      }
      return
    }
    leaves.splice(index, 1)
    firstDue.splice(index, 1)
    firstNumber.splice(index, 1)
  }

  /** The last leaf whose first pair is not after (`due`, `number`), or `head` when every one is. */
  const leafFor = (due: number, number: number): number => {
    let low = head
    let high = leaves.length - 1
    while (low < high) {
      const middle = (low + high + 1) >> 1
      if (before(due, number, firstDue[middle]!, firstNumber[middle]!)) high = middle - 1
      else low = middle
    }
    return low
  }

  /** Where (`due`, `number`) is or would go in `leaf`: the first pair not before it. */
  const positionIn = (leaf: Leaf, due: number, number: number): number => {
    const pairs = leaf.pairs
    let low = leaf.start
    let high = leaf.end
    while (low < high) {
      const middle = (low + high) >> 1
      if (before(pairs[2 * middle]!, pairs[2 * middle + 1]!, due, number)) low = middle + 1
      else high = middle
    }
    return low
  }

  /** Splits the full leaf at `index` in two halves; the upper half becomes leaf `index + 1`. */
  const split = (index: number) => {
    const leaf = leaves[index]!
    const upper = newLeaf()
    const middle = leaf.start + ((leaf.end - leaf.start) >> 1)
    upper.pairs.set(leaf.pairs.subarray(2 * middle, 2 * leaf.end))
    upper.end = leaf.end - middle
    leaf.end = middle
    leaves.splice(index + 1, 0, upper)
    firstDue.splice(index + 1, 0, upper.pairs[0]!)
    firstNumber.splice(index + 1, 0, upper.pairs[1]!)
  }

  /**
   * After a deletion from leaf `index`: drops it when empty, and folds it into a neighbour when
   * both together fill at most half a leaf, so a long run of deletions leaves no trail of nearly
   * empty leaves behind.
   */
  const tidy = (index: number) => {
    const leaf = leaves[index]!
    const count = leaf.end - leaf.start
    if (count === 0) {
      dropLeaf(index)
      return
    }
    if (count > leafCapacity >> 3) return
    for (const [into, from] of [[index - 1, index], [index, index + 1]] as const) {
      if (into < head) continue
      const target = leaves[into]
      const source = leaves[from]
      if (target === undefined || source === undefined) continue
      if (target.end - target.start + source.end - source.start > leafCapacity >> 1) continue
      target.pairs.copyWithin(0, 2 * target.start, 2 * target.end)
      target.end -= target.start
      target.start = 0
      target.pairs.set(source.pairs.subarray(2 * source.start, 2 * source.end), 2 * target.end)
      target.end += source.end - source.start
      dropLeaf(from)
      return
    }
  }

  return {
    get size() {
      return size
    },

    add(due, number) {
      if (leaves.length === 0) {
        leaves.push(newLeaf())
        firstDue.push(due)
        firstNumber.push(number)
      }
      let index = leafFor(due, number)
      let leaf = leaves[index]!
      if (leaf.start === 0 && leaf.end === leafCapacity) {
        split(index)
        if (!before(due, number, firstDue[index + 1]!, firstNumber[index + 1]!)) leaf = leaves[++index]!
      }
      const at = positionIn(leaf, due, number)
      const pairs = leaf.pairs
      let slot: number
      // shift whichever side of `at` is shorter and has room
      if (leaf.end < leafCapacity && (leaf.start === 0 || leaf.end - at <= at - leaf.start)) {
        pairs.copyWithin(2 * at + 2, 2 * at, 2 * leaf.end)
        leaf.end++
        slot = at
      } else {
        pairs.copyWithin(2 * leaf.start - 2, 2 * leaf.start, 2 * at)
        leaf.start--
        slot = at - 1
      }
      pairs[2 * slot] = due
      pairs[2 * slot + 1] = number
      if (slot === leaf.start) noteFirst(index)
      size++
    },

    delete(due, number) {
      if (size === 0) return false
      const index = leafFor(due, number)
      const leaf = leaves[index]!
      const at = positionIn(leaf, due, number)
      const pairs = leaf.pairs
      if (at === leaf.end || pairs[2 * at] !== due || pairs[2 * at + 1] !== number) return false
      if (leaf.end - at - 1 <= at - leaf.start) {
        pairs.copyWithin(2 * at, 2 * at + 2, 2 * leaf.end)
        leaf.end--
      } else {
        pairs.copyWithin(2 * leaf.start + 2, 2 * leaf.start, 2 * at)
        leaf.start++
      }
      size--
      if (leaf.end > leaf.start) noteFirst(index)
      tidy(index)
      return true
    },

    takeDue(at, limit) {
      const taken: number[] = []
      while (taken.length < limit && taken.length < size) {
        const leaf = leaves[head]!
        const pairs = leaf.pairs
        while (taken.length < limit && leaf.start < leaf.end && pairs[2 * leaf.start]! <= at) {
          taken.push(pairs[2 * leaf.start + 1]!)
          leaf.start++
        }
        if (leaf.start < leaf.end) {
          noteFirst(head)
          break
        }
        dropLeaf(head)
      }
      size -= taken.length
      return taken
    },

    scanDue(at, visit) {
      for (let index = head; index < leaves.length; index++) {
        const leaf = leaves[index]!
        const pairs = leaf.pairs
        for (let i = leaf.start; i < leaf.end; i++) {
          if (pairs[2 * i]! > at || !visit(pairs[2 * i + 1]!)) return
        }
      }
    },

    countDue(at) {
      if (size === 0) return 0
      let count = 0
      for (let index = head; index < leaves.length; index++) {
        const leaf = leaves[index]!
        if (leaf.pairs[2 * leaf.start]! > at) break
        if (leaf.pairs[2 * leaf.end - 2]! <= at) {
          count += leaf.end - leaf.start
          continue
        }
        return count + positionIn(leaf, at, Infinity) - leaf.start
      }
      return count
    }
  }
}
