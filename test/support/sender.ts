/**
 * Test doubles for the sending side: a transport that hands each request to an in-process handler
 * and remembers what it was sent, and a clock that moves only when a test moves it.
 */
import type { Transport, TransportRequest, TransportResponse } from 'endpoint-callback'

/** What a test handler answers: a response (status, optional headers and body) or a thrown error. */
export type TestReply = { status: number; headers?: Record<string, string>; body?: string }

export interface TestTransport extends Transport {
  /** Every request sent, in order, with a copy of its headers and body. */
  readonly requests: TransportRequest[]
}

/**
 * A transport that never opens a socket: `handler` answers each request (or throws, as a real
 * transport rejects with a `DeliveryError`).
 */
export function createTestTransport(
  handler: (request: TransportRequest, index: number) => TestReply | Promise<TestReply>,
  options: { timeoutMs?: number } = {}
): TestTransport {
  const requests: TransportRequest[] = []
  const transport: TestTransport = {
    requests,
    async send(request) {
      const copy = { ...request, headers: { ...request.headers } }
      requests.push(copy)
      const started = performance.now()
      const reply = await handler(copy, requests.length - 1)
      const response: TransportResponse = {
        status: reply.status,
        headers: reply.headers ?? {},
        body: reply.body ?? '',
        durationMs: performance.now() - started,
      }
      return response
    },
  }
  if (options.timeoutMs !== undefined) Object.assign(transport, { timeoutMs: options.timeoutMs })
  return transport
}

/** A clock for `sender.now`: stands still until `advance` or `set`. */
export function createTestClock(start = new Date('2030-01-01T00:00:00.000Z')) {
  let current = start.getTime()
  return {
    now: () => new Date(current),
    advance(ms: number) {
      current += ms
    },
    set(at: Date) {
      current = at.getTime()
    },
  }
}
