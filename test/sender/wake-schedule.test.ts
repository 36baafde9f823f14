import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createWakeSchedule } from '../../src/wake-schedule.ts'

test('the worker wakes at every known due instant in turn, not only at the earliest one', () => {
  const schedule = createWakeSchedule()
  for (const at of [500, 100, 300, 300, 200]) schedule.add(at)
  const woken: number[] = []
  let after = 0
  for (let next = schedule.next(after); next !== Infinity; next = schedule.next(after)) {
    woken.push(next)
    after = next
  }
  assert.deepEqual(woken, [100, 200, 300, 500])
})

test('instants a claim already covered are forgotten', () => {
  const schedule = createWakeSchedule()
  for (const at of [100, 200, 300]) schedule.add(at)
  assert.equal(schedule.next(250), 300)
  assert.equal(schedule.size, 1)
})

test('past its capacity it keeps the earliest instants, which the poll cannot make up for', () => {
  const schedule = createWakeSchedule(3)
  for (const at of [40, 10, 50, 30, 20]) schedule.add(at)
  assert.equal(schedule.size, 3)
  assert.deepEqual([schedule.next(0), schedule.next(10), schedule.next(20), schedule.next(30)], [10, 20, 30, Infinity])
})
