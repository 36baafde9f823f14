import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import fc from 'fast-check'
import { createDueOrder, LEAF_CAPACITY } from '../../src/stores/due-order.ts'
import type { DueOrder } from '../../src/stores/due-order.ts'

/** The memory store's due order, checked against the obvious model: one sorted array of pairs. */

type Pair = readonly [due: number, number: number]

const byDueThenNumber = (a: Pair, b: Pair) => a[0] - b[0] || a[1] - b[1]

type Step =
  | { kind: 'add'; due: number }
  | { kind: 'delete'; pick: number }
  | { kind: 'deleteAbsent'; due: number }
  | { kind: 'take'; at: number; limit: number }
  | { kind: 'count'; at: number }

// few distinct instants, so many pairs share one and the number decides their order
const due = fc.integer({ min: 0, max: 40 })
/** Steps that add `adds` times as often as they delete: more grows leaves and splits them, less shrinks and merges them. */
const steps = (adds: number) => fc.array(fc.oneof(
  { weight: adds, arbitrary: due.map((d) => ({ kind: 'add' as const, due: d })) },
  { weight: 4, arbitrary: fc.nat().map((pick) => ({ kind: 'delete' as const, pick })) },
  { weight: 1, arbitrary: due.map((d) => ({ kind: 'deleteAbsent' as const, due: d })) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('take' as const), at: fc.integer({ min: -1, max: 41 }), limit: fc.integer({ min: 0, max: 30 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('count' as const), at: fc.integer({ min: -1, max: 41 }) }) }
) as fc.Arbitrary<Step>, { maxLength: 600, size: 'max' })

/** Runs `steps` on a fresh order and on the model, comparing every answer; then drains both. */
function agreesWithModel(leafCapacity: number, steps: Step[]): void {
  const order = createDueOrder(leafCapacity)
  let model: Pair[] = []
  let next = 0
  for (const s of steps) {
    switch (s.kind) {
      case 'add': {
        order.add(s.due, next)
        model.push([s.due, next++])
        model.sort(byDueThenNumber)
        break
      }
      case 'delete': {
        if (model.length === 0) break
        const [pair] = model.splice(s.pick % model.length, 1)
        assert.equal(order.delete(pair![0], pair![1]), true, `delete ${pair}`)
        break
      }
      case 'deleteAbsent': {
        // a pair it never held: an instant it holds with a number never used, or the reverse
        assert.equal(order.delete(s.due, next + 1), false)
        if (model.length > 0) assert.equal(order.delete(s.due + 0.5, model[0]![1]), false)
        break
      }
      case 'take': {
        const expected = model.filter(([d]) => d <= s.at).slice(0, s.limit)
        model = model.slice(expected.length)
        assert.deepEqual(order.takeDue(s.at, s.limit), expected.map(([, n]) => n), `take at ${s.at}, ${s.limit}`)
        break
      }
      case 'count': {
        assert.equal(order.countDue(s.at), model.filter(([d]) => d <= s.at).length, `count at ${s.at}`)
        break
      }
    }
    assert.equal(order.size, model.length)
  }
  assert.deepEqual(order.takeDue(Infinity, Infinity), model.map(([, n]) => n))
  assert.equal(order.size, 0)
}

describe('the due order of the memory store', () => {
  for (const leafCapacity of [8, 16]) {
    it(`agrees with a sorted array over any run of adds, deletes, takes and counts (leaves of ${leafCapacity})`, () => {
      fc.assert(
        fc.property(fc.oneof(steps(8), steps(5), steps(4)), (run) => agreesWithModel(leafCapacity, run)),
        { numRuns: 300 }
      )
    })
  }

  it('keeps its order through many leaves at the default size, taken a batch at a time from the front', () => {
    const order = createDueOrder()
    let seed = 11
    const random = () => (seed = (seed * 48271) % 2147483647) / 2147483647
    const model: Pair[] = []
    for (let number = 0; number < 40 * LEAF_CAPACITY; number++) {
      const pair: Pair = [Math.floor(random() * 1000), number]
      order.add(pair[0], pair[1])
      model.push(pair)
    }
    model.sort(byDueThenNumber)
    // every other pair deleted, from the middle out, so leaves shrink and merge
    for (let i = model.length - 1; i >= 0; i -= 2) assert.equal(order.delete(model[i]![0], model[i]![1]), true)
    const left = model.filter((_, i) => i % 2 === 0)
    assert.equal(order.countDue(499), left.filter(([d]) => d <= 499).length)
    const taken: number[] = []
    for (let batch = order.takeDue(Infinity, 100); batch.length > 0; batch = order.takeDue(Infinity, 100)) taken.push(...batch)
    assert.deepEqual(taken, left.map(([, n]) => n))
  })

  it('stays usable after being emptied from the front and filled again', () => {
    // taking leaves off the front moves a start index instead of splicing; this runs it past
    // the point where the index is compacted, and past empty
    const order: DueOrder = createDueOrder(8)
    for (let round = 0; round < 3; round++) {
      for (let number = 0; number < 2000; number++) order.add(number, number)
      for (let at = 99; at < 2000; at += 100) assert.equal(order.takeDue(at, Infinity).length, 100)
      assert.equal(order.size, 0)
      assert.deepEqual(order.takeDue(Infinity, 10), [])
      assert.equal(order.delete(5, 5), false)
    }
    order.add(3, 1)
    order.add(2, 2)
    assert.deepEqual(order.takeDue(Infinity, 10), [2, 1])
  })

  it('refuses a leaf capacity it cannot split evenly', () => {
    for (const leafCapacity of [0, 6, 9, 8.5]) assert.throws(() => createDueOrder(leafCapacity), RangeError)
  })
})

it('scanDue reads the due pairs in order without taking them out, and stops when told', () => {
  const order = createDueOrder(8)
  for (let number = 0; number < 40; number++) order.add(1000 + (number % 20), number)
  const seen: number[] = []
  order.scanDue(1009, (number) => {
    seen.push(number)
    return true
  })
  assert.deepEqual(seen, [0, 20, 1, 21, 2, 22, 3, 23, 4, 24, 5, 25, 6, 26, 7, 27, 8, 28, 9, 29])
  assert.equal(order.size, 40)
  const first: number[] = []
  order.scanDue(2000, (number) => first.push(number) < 3)
  assert.deepEqual(first, [0, 20, 1])
  assert.deepEqual(order.takeDue(1000, 10), [0, 20])
})
