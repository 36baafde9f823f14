import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createMemoryReplayGuard } from 'endpoint-callback'
import type { ReplayGuard } from 'endpoint-callback'
import { createReceiverCore } from '../../src/receivers/core.ts'
import { ROTATING, signed } from '../support/receiver-cases.ts'

test('a user-supplied replay guard decides duplicates, and only a 2xx answer is remembered', async () => {
  const calls: string[] = []
  const states = new Map<string, 'in-flight' | 'done'>()
  const guard: ReplayGuard = {
    async begin(id) {
      calls.push(`begin ${id}`)
      const state = states.get(id)
      if (state !== undefined) return state
      states.set(id, 'in-flight')
      return 'new'
    },
    async remember(id) {
      calls.push(`remember ${id}`)
      states.set(id, 'done')
    },
    async forget(id) {
      calls.push(`forget ${id}`)
      states.delete(id)
    },
  }
  const receiver = createReceiverCore({ ...ROTATING, replayGuard: guard })
  const first = await receiver.admit(signed('signPayload', { id: 'x' }))
  assert.ok(first.accepted)
  await first.settle(500)
  const second = await receiver.admit(signed('signPayload', { id: 'x' }))
  assert.ok(second.accepted, 'the failed delivery is processed again')
  await second.settle(204)
  const third = await receiver.admit(signed('signPayload', { id: 'x' }))
  assert.equal(third.accepted, false)
  assert.equal(third.status, 200)
  assert.deepEqual(calls, ['begin x', 'forget x', 'begin x', 'remember x', 'begin x'])
})

test('a guard that cannot record an outcome leaves duplicates at 409, never acknowledged unprocessed', async () => {
  const memory = createMemoryReplayGuard()
  const guard: ReplayGuard = {
    begin: (id) => memory.begin(id),
    remember: async () => {
      throw new Error('redis is down')
    },
    forget: async () => {
      throw new Error('redis is down')
    },
  }
  const receiver = createReceiverCore({ ...ROTATING, replayGuard: guard })
  const accepted = await receiver.admit(signed('signPayload', { id: 'y' }))
  assert.ok(accepted.accepted)
  await accepted.settle(200) // resolves although the guard failed: the answer has already gone out
  const duplicate = await receiver.admit(signed('signPayload', { id: 'y' }))
  assert.equal(duplicate.accepted, false)
  assert.equal(duplicate.status, 409)
})

test('a guard that cannot begin makes the receiver reject, so the framework answers 500 and the sender retries', async () => {
  const receiver = createReceiverCore({
    ...ROTATING,
    replayGuard: {
      begin: async () => {
        throw new Error('redis is down')
      },
      remember: async () => {},
      forget: async () => {},
    },
  })
  await assert.rejects(receiver.admit(signed('signPayload')), /redis is down/)
})

test('an answer given before the body was read asks for the connection to be closed', async () => {
  const receiver = createReceiverCore({ ...ROTATING, maxBodyBytes: 10, contentTypes: ['application/json'] })
  let reads = 0
  const read = async () => (reads++, '{}')
  const sent = signed('signPayload')
  const wrongType = await receiver.admit({ headers: { ...sent.headers, 'content-type': 'text/plain' }, body: read })
  assert.equal(wrongType.accepted, false)
  assert.equal(wrongType.status, 415)
  assert.equal(wrongType.headers['connection'], 'close')
  const declaredTooLarge = await receiver.admit({ headers: { ...sent.headers, 'content-length': '11' }, body: read })
  assert.equal(declaredTooLarge.accepted, false)
  assert.equal(declaredTooLarge.status, 413)
  assert.equal(declaredTooLarge.headers['connection'], 'close')
  assert.equal(reads, 0)
  const badSignature = await receiver.admit({ headers: sent.headers, body: read })
  assert.equal(badSignature.accepted, false)
  assert.equal(badSignature.status, 401)
  assert.equal(badSignature.headers['connection'], undefined, 'a fully read request keeps its connection')
})

test('the problem document says what failed without the error message, secret or signature', async () => {
  const receiver = createReceiverCore(ROTATING)
  const sent = signed('standardwebhooks')
  const answer = await receiver.admit({ ...sent, body: sent.body + ' ' })
  assert.equal(answer.accepted, false)
  assert.deepEqual(JSON.parse(answer.body), {
    type: 'urn:endpoint-callback:problem:signature-mismatch',
    title: 'Signature does not match',
    status: 401,
    code: 'ERR_CALLBACK_SIGNATURE_MISMATCH',
  })
})
