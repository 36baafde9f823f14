import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createMemoryReplayGuard } from 'endpoint-callback'

function clock(start = Date.UTC(2025, 0, 1)) {
  let now = start
  return { now: () => new Date(now), advance: (ms: number) => void (now += ms) }
}

test('a new id is in flight until it is remembered, then done', async () => {
  const guard = createMemoryReplayGuard()
  assert.equal(await guard.begin('a'), 'new')
  assert.equal(await guard.begin('a'), 'in-flight')
  await guard.remember('a')
  assert.equal(await guard.begin('a'), 'done')
  assert.equal(await guard.begin('b'), 'new', 'ids are independent')
})

test('a forgotten id is new again, so a failed delivery is processed on retry', async () => {
  const guard = createMemoryReplayGuard()
  assert.equal(await guard.begin('a'), 'new')
  await guard.forget('a')
  assert.equal(await guard.begin('a'), 'new')
})

test('of two concurrent begins for one id exactly one is new', async () => {
  const guard = createMemoryReplayGuard()
  const answers = await Promise.all(Array.from({ length: 10 }, () => guard.begin('same')))
  assert.equal(answers.filter((answer) => answer === 'new').length, 1)
  assert.equal(answers.filter((answer) => answer === 'in-flight').length, 9)
})

test('a done id is remembered for ttlMs and then processed again', async () => {
  const time = clock()
  const guard = createMemoryReplayGuard({ ttlMs: 60_000, now: time.now })
  await guard.begin('a')
  await guard.remember('a')
  time.advance(59_999)
  assert.equal(await guard.begin('a'), 'done')
  time.advance(2)
  assert.equal(await guard.begin('a'), 'new')
})

test('an id left in flight by a crashed handler is released after inFlightTimeoutMs', async () => {
  const time = clock()
  const guard = createMemoryReplayGuard({ inFlightTimeoutMs: 1000, now: time.now })
  await guard.begin('a')
  time.advance(999)
  assert.equal(await guard.begin('a'), 'in-flight')
  time.advance(2)
  assert.equal(await guard.begin('a'), 'new')
})

test('past maxEntries the oldest done ids are dropped first and in-flight ids are kept', async () => {
  const guard = createMemoryReplayGuard({ maxEntries: 3 })
  await guard.begin('busy') // stays in flight
  for (const id of ['d1', 'd2', 'd3']) {
    await guard.begin(id)
    await guard.remember(id)
  }
  assert.equal(await guard.begin('busy'), 'in-flight', 'an in-flight id is never evicted')
  assert.equal(await guard.begin('d1'), 'new', 'the oldest done id made room')
  assert.equal(await guard.begin('d3'), 'done')
})

test('createMemoryReplayGuard names the bad option', () => {
  assert.throws(() => createMemoryReplayGuard({ ttlMs: 0 }), { name: 'TypeError', message: /ttlMs/ })
  assert.throws(() => createMemoryReplayGuard({ maxEntries: 2.5 }), { name: 'TypeError', message: /maxEntries/ })
  assert.throws(() => createMemoryReplayGuard({ inFlightTimeoutMs: -1 }), { name: 'TypeError', message: /inFlightTimeoutMs/ })
  assert.throws(() => createMemoryReplayGuard({ now: 'soon' as never }), { name: 'TypeError', message: /now/ })
})
