/**
 * The behaviour every receiver (Express, Koa, fetch) shares, as one suite each adapter's test runs
 * against its own harness: verification answers, duplicates, in-flight duplicates, limits.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import type { VerifiedCallback } from 'endpoint-callback'
import type { ReceiverOptions } from 'endpoint-callback/fetch'
import { ROTATING, envelope, receiverCases, secretsIn, signed } from './receiver-cases.ts'
import { eventually, signal, within } from './waits.ts'
import type { SignedCallback } from './receiver-cases.ts'

export interface Answer {
  status: number
  contentType: string | null
  body: string
}

/** A receiver under test: started with options and a handler that returns the status to answer. */
export interface Harness {
  send(callback: SignedCallback): Promise<Answer>
  /**
   * Sends `callback` and hangs up once `when` resolves (the sender's timeout, while the handler
   * runs); resolves once the receiver has seen the connection close. The handler runs on.
   */
  hangUp(callback: SignedCallback, when: Promise<void>): Promise<void>
  close(): Promise<void>
}

/**
 * Starts the adapter with `options`; on each verified callback it calls `handle` and answers with
 * the status it returns and a JSON body `{ id, type, data }` (a thrown error is the framework's 500).
 */
export type StartHarness = (
  options: ReceiverOptions,
  handle: (callback: VerifiedCallback) => number | Promise<number>
) => Promise<Harness>

async function withHarness(
  start: StartHarness,
  options: ReceiverOptions,
  handle: (callback: VerifiedCallback) => number | Promise<number>,
  run: (harness: Harness) => Promise<void>
): Promise<void> {
  const harness = await start(options, handle)
  try {
    await run(harness)
  } finally {
    await harness.close()
  }
}

function assertProblem(answer: Answer, status: number, code: string, sent: SignedCallback): void {
  assert.equal(answer.status, status, answer.body)
  assert.match(answer.contentType ?? '', /^application\/problem\+json/)
  const problem = JSON.parse(answer.body)
  assert.equal(problem.code, code)
  assert.equal(typeof problem.type, 'string')
  assert.equal(typeof problem.title, 'string')
  for (const secret of secretsIn(sent)) assert.ok(!answer.body.includes(secret), 'the answer echoes a secret or signature')
}

/** Registers the shared receiver tests for one adapter. */
export function receiverSuite(adapter: string, start: StartHarness): void {
  for (const signer of ['standardwebhooks', 'signPayload'] as const) {
    test(`${adapter} answers every verification case alike for callbacks signed by ${signer}`, async (t) => {
      const seen: VerifiedCallback[] = []
      await withHarness(start, ROTATING, (callback) => (seen.push(callback), 200), async (harness) => {
        for (const testCase of receiverCases(signer)) {
          await t.test(testCase.name, async () => {
            const sent = testCase.request()
            const before = seen.length
            const answer = await harness.send(sent)
            if (testCase.code === undefined) {
              assert.equal(answer.status, testCase.status, answer.body)
              const echoed = JSON.parse(answer.body)
              assert.equal(echoed.id, sent.headers['webhook-id'])
              assert.equal(echoed.type, 'report.ready')
              assert.deepEqual(echoed.data, { reportId: 7, note: 'naïve ✓' })
              assert.equal(seen.at(-1)?.body, sent.body, 'the handler sees the raw body text')
            } else {
              assertProblem(answer, testCase.status, testCase.code, sent)
              assert.equal(seen.length, before, 'the handler must not run for a refused callback')
            }
          })
        }
      })
    })
  }

  test(`${adapter} answers 413 for a body over maxBodyBytes without running the handler`, async () => {
    let calls = 0
    await withHarness(start, { ...ROTATING, maxBodyBytes: 64 }, () => (calls++, 200), async (harness) => {
      const sent = signed('signPayload', { body: envelope({ padding: 'x'.repeat(200) }) })
      assertProblem(await harness.send(sent), 413, 'ERR_CALLBACK_BODY_TOO_LARGE', sent)
      const small = signed('signPayload', { body: '{}' })
      assert.equal((await harness.send(small)).status, 200, 'a body within the limit still passes')
      assert.equal(calls, 1)
    })
  })

  test(`${adapter} answers 415 for a content type outside contentTypes, and accepts the listed ones`, async () => {
    await withHarness(start, { ...ROTATING, contentTypes: ['application/json'] }, () => 200, async (harness) => {
      const sent = signed('standardwebhooks')
      const asText = { ...sent, headers: { ...sent.headers, 'content-type': 'text/plain' } }
      assertProblem(await harness.send(asText), 415, 'ERR_CALLBACK_CONTENT_TYPE', asText)
      const { 'content-type': _dropped, ...untyped } = sent.headers
      assertProblem(await harness.send({ ...sent, headers: untyped }), 415, 'ERR_CALLBACK_CONTENT_TYPE', sent)
      const withCharset = { ...sent, headers: { ...sent.headers, 'content-type': 'Application/JSON; charset=utf-8' } }
      assert.equal((await harness.send(withCharset)).status, 200)
    })
  })

  test(`${adapter} acknowledges a redelivered id with 2xx without running the handler again`, async () => {
    const handled: string[] = []
    await withHarness(start, { ...ROTATING, replayGuard: true }, (callback) => (handled.push(callback.id), 200), async (harness) => {
      const first = signed('standardwebhooks', { id: 'msg_dup_1' })
      assert.equal((await harness.send(first)).status, 200)
      // The sender's retry is signed afresh: a new timestamp, the same webhook-id.
      const retry = signed('signPayload', { id: 'msg_dup_1', timestamp: new Date(Date.now() + 1000) })
      const answer = await harness.send(retry)
      assert.ok(answer.status >= 200 && answer.status < 300, `duplicate answered ${answer.status}`)
      assert.deepEqual(handled, ['msg_dup_1'])
      assert.equal((await harness.send(signed('signPayload', { id: 'msg_dup_2' }))).status, 200)
      assert.deepEqual(handled, ['msg_dup_1', 'msg_dup_2'])
    })
  })

  test(`${adapter} processes a redelivery again when the first handler threw or answered non-2xx`, async () => {
    const outcomes: Array<number | 'throw'> = ['throw', 503, 200]
    const handled: string[] = []
    const handle = (callback: VerifiedCallback) => {
      handled.push(callback.id)
      const outcome = outcomes.shift()
      if (outcome === 'throw') throw new Error('the database is down')
      return outcome ?? 200
    }
    await withHarness(start, { ...ROTATING, replayGuard: true }, handle, async (harness) => {
      assert.equal((await harness.send(signed('signPayload', { id: 'msg_retry' }))).status, 500)
      assert.equal((await harness.send(signed('signPayload', { id: 'msg_retry' }))).status, 503)
      assert.equal((await harness.send(signed('signPayload', { id: 'msg_retry' }))).status, 200)
      const duplicate = await harness.send(signed('standardwebhooks', { id: 'msg_retry' }))
      assert.equal(duplicate.status, 200)
      assert.deepEqual(handled, ['msg_retry', 'msg_retry', 'msg_retry'], 'processed until it succeeded, then never again')
    })
  })

  test(`${adapter} answers 409 to a duplicate that arrives while the first is still being handled`, async () => {
    const released = signal()
    const entered = signal()
    let calls = 0
    const handle = async () => {
      calls++
      // only the first run waits: a duplicate let through must answer (and fail the test), not hang
      if (calls === 1) {
        entered.resolve()
        await within(released.promise, 'the test never released the first handler', 10_000)
      }
      return 200
    }
    await withHarness(start, { ...ROTATING, replayGuard: true }, handle, async (harness) => {
      const first = harness.send(signed('signPayload', { id: 'msg_slow' }))
      await within(entered.promise, 'the first handler was never entered')
      const sent = signed('standardwebhooks', { id: 'msg_slow' })
      const duplicate = await within(harness.send(sent), 'the duplicate got no answer')
      released.resolve()
      assertProblem(duplicate, 409, 'ERR_CALLBACK_DUPLICATE_IN_FLIGHT', sent)
      assert.equal((await within(first, 'the first got no answer')).status, 200)
      const later = await within(harness.send(signed('standardwebhooks', { id: 'msg_slow' })), 'the later duplicate got no answer')
      assert.equal(later.status, 200)
      assert.equal(calls, 1)
    })
  })

  test(`${adapter} answers 409 to a retry after the sender hung up while the handler still runs, and runs it again once that handler failed`, async () => {
    const released = signal()
    const entered = signal()
    const firstEnded = signal()
    let calls = 0
    const handle = async () => {
      calls++
      if (calls > 1) return 200
      entered.resolve()
      try {
        await within(released.promise, 'the test never released the first handler', 10_000)
        return 503
      } finally {
        firstEnded.resolve()
      }
    }
    await withHarness(start, { ...ROTATING, replayGuard: true }, handle, async (harness) => {
      // the sender's timeout: it gives up while the handler still works on the callback
      await harness.hangUp(signed('signPayload', { id: 'msg_hung_up' }), entered.promise)
      const retry = signed('standardwebhooks', { id: 'msg_hung_up' })
      const answer = await within(harness.send(retry), 'the retry got no answer')
      released.resolve()
      assertProblem(answer, 409, 'ERR_CALLBACK_DUPLICATE_IN_FLIGHT', retry)
      assert.equal(calls, 1, 'the retry ran the handler while the first run was still going')
      await within(firstEnded.promise, 'the first handler never ended')
      let last: Answer | undefined
      await eventually(async () => (last = await harness.send(signed('signPayload', { id: 'msg_hung_up' }))).status !== 409, 'the id stayed in flight after its handler answered 503', {
        describe: () => `last answer ${last?.status}`,
      })
      assert.equal(last?.status, 200)
      assert.equal(calls, 2, 'the handler ran again once the first run failed')
    })
  })

  test(`${adapter} runs the handler again for a retry when the sender hung up mid-handler and the handler then threw`, async () => {
    const released = signal()
    const entered = signal()
    const handled: string[] = []
    const handle = async (callback: VerifiedCallback) => {
      handled.push(callback.id)
      if (handled.length > 1) return 200
      entered.resolve()
      await within(released.promise, 'the test never released the first handler', 10_000)
      throw new Error('the database went away after the sender gave up')
    }
    await withHarness(start, { ...ROTATING, replayGuard: true }, handle, async (harness) => {
      await harness.hangUp(signed('signPayload', { id: 'msg_lost' }), entered.promise)
      released.resolve()
      let last: Answer | undefined
      await eventually(async () => (last = await harness.send(signed('standardwebhooks', { id: 'msg_lost' }))).status !== 409, 'the id stayed in flight after its handler threw', {
        describe: () => `last answer ${last?.status}`,
      })
      assert.equal(last?.status, 200)
      assert.deepEqual(handled, ['msg_lost', 'msg_lost'], 'the retry was acknowledged as a duplicate although the first run failed: the callback is lost')
    })
  })
}
