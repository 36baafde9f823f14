/**
 * The OpenTelemetry instrumentation with the SDK's in-memory span exporter and a metric reader,
 * around real deliveries to a receiver on 127.0.0.1.
 */
import { after, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { SpanKind, SpanStatusCode } from '@opentelemetry/api'
import type { Context, TextMapPropagator, TextMapSetter } from '@opentelemetry/api'
import { trace } from '@opentelemetry/api'
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base'
import type { ReadableSpan } from '@opentelemetry/sdk-trace-base'
import { AggregationTemporality, InMemoryMetricExporter, MeterProvider, PeriodicExportingMetricReader } from '@opentelemetry/sdk-metrics'
import { createCallbackTask, createHttpTransport, createMemoryStore, createWorker, deliver, generateSecret, verifySignature } from 'endpoint-callback'
import type { CallbackStore, DeliveryEvent, SenderOptions } from 'endpoint-callback'
import { createOpenTelemetry } from '../../src/otel.ts'
import { answer, startReceiver } from '../support/callback-receiver.ts'
import type { ReceiverScript, TestReceiver } from '../support/callback-receiver.ts'
import { createTestClock } from '../support/sender.ts'

const urlPolicy = { allowHttp: true, allowHosts: ['127.0.0.1'] }

interface Telemetry {
  spans(): ReadableSpan[]
  /** The data points of one metric at this collection: attributes and value. */
  points(name: string): Promise<Array<{ attributes: Record<string, unknown>; value: number }>>
  shutdown(): Promise<void>
}

function sdk(): Telemetry & { tracerProvider: BasicTracerProvider; meterProvider: MeterProvider } {
  const exporter = new InMemorySpanExporter()
  const tracerProvider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] })
  // An hour between exports: the test collects when it wants to look.
  const reader = new PeriodicExportingMetricReader({
    exporter: new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE),
    exportIntervalMillis: 3_600_000,
  })
  const meterProvider = new MeterProvider({ readers: [reader] })
  return {
    tracerProvider,
    meterProvider,
    spans: () => exporter.getFinishedSpans(),
    async points(name) {
      const { resourceMetrics, errors } = await reader.collect()
      assert.deepEqual(errors, [])
      const metric = resourceMetrics.scopeMetrics.flatMap((scope) => scope.metrics).find((m) => m.descriptor.name === name)
      return (metric?.dataPoints ?? []).map((point) => ({ attributes: { ...point.attributes }, value: point.value as number }))
    },
    async shutdown() {
      await meterProvider.shutdown()
      await tracerProvider.shutdown()
    },
  }
}

interface Setup {
  receiver: TestReceiver
  sender: SenderOptions
  clock: ReturnType<typeof createTestClock>
  secret: string
  telemetry: Telemetry
  /** Resolves with the first event of `type`. */
  next(type: DeliveryEvent['type']): Promise<DeliveryEvent>
  close(): Promise<void>
}

async function setup(
  script: ReceiverScript,
  options: { propagate?: boolean; propagator?: TextMapPropagator; schedule?: number[]; destinationMetrics?: boolean } = {}
): Promise<Setup> {
  const receiver = await startReceiver(script)
  const telemetry = sdk()
  // Starts at the real time (the receiver verifies timestamps against it) and moves only when told.
  const clock = createTestClock(new Date())
  const secret = generateSecret()
  const store = createMemoryStore()
  const transport = createHttpTransport({ urlPolicy, timeoutMs: 5_000 })
  const waiters: Array<{ type: string; resolve: (event: DeliveryEvent) => void }> = []
  const instrumentation = createOpenTelemetry({
    tracer: telemetry.tracerProvider.getTracer('test'),
    meter: telemetry.meterProvider.getMeter('test'),
    store,
    now: clock.now,
    ...(options.propagate === undefined ? {} : { propagate: options.propagate }),
    ...(options.propagator === undefined ? {} : { propagator: options.propagator }),
    ...(options.destinationMetrics === undefined ? {} : { destinationMetrics: options.destinationMetrics }),
  })
  const sender: SenderOptions = {
    store,
    secret,
    transport,
    urlPolicy,
    now: clock.now,
    retry: { schedule: options.schedule ?? [60_000], jitter: 0 },
    instrumentation,
    onEvent(event) {
      for (const waiter of waiters.splice(0)) {
        if (waiter.type === event.type) waiter.resolve(event)
        else waiters.push(waiter)
      }
    },
  }
  return {
    receiver,
    sender,
    clock,
    secret,
    telemetry,
    next: (type) => new Promise((resolve) => waiters.push({ type, resolve })),
    async close() {
      instrumentation.close()
      await transport.close?.()
      await receiver.close()
      await telemetry.shutdown()
    },
  }
}

/** 500 to the first request, 204 to every later one. */
const failOnceThenSucceed: ReceiverScript = (_request, response, index) => answer(response, index === 0 ? 500 : 204)

function attributesOf(span: ReadableSpan): Record<string, unknown> {
  return { ...span.attributes }
}

describe('createOpenTelemetry', () => {
  const open: Setup[] = []
  after(async () => {
    for (const setupDone of open) await setupDone.close()
  })

  test('a delivery that fails once then succeeds gives two client spans, the counters, the due gauge and a traceparent per attempt', async () => {
    const s = await setup(failOnceThenSucceed, { propagate: true })
    open.push(s)
    const { receiver, sender, clock, telemetry } = s
    const port = Number(new URL(receiver.origin).port)

    const task = await createCallbackTask({ callbackUrl: `${receiver.url}?token=s3cr3t-in-query#frag`, event: 'report.ready' }, sender)
    const first = await deliver(task, { reportId: 7 }, sender)
    assert.equal(first.status, 'retrying')
    assert.deepEqual(await telemetry.points('callback.tasks.due'), [{ attributes: {}, value: 0 }], 'not due for another minute')

    clock.advance(60_000)
    assert.deepEqual(await telemetry.points('callback.tasks.due'), [{ attributes: {}, value: 1 }], 'due once the minute has passed')

    const worker = createWorker({ ...sender, pollIntervalMs: 20 })
    const delivered = s.next('delivered')
    worker.start()
    await delivered
    await worker.stop()
    assert.deepEqual(await telemetry.points('callback.tasks.due'), [{ attributes: {}, value: 0 }], 'nothing due once delivered')

    const spans = s.telemetry.spans()
    assert.equal(spans.length, 2)
    const [failed, succeeded] = spans as [ReadableSpan, ReadableSpan]
    for (const span of spans) {
      assert.equal(span.name, 'POST')
      assert.equal(span.kind, SpanKind.CLIENT)
    }
    const common = {
      'http.request.method': 'POST',
      'url.full': receiver.url,
      'server.address': '127.0.0.1',
      'server.port': port,
      'callback.task.id': task.id,
      'callback.event': 'report.ready',
      'callback.destination': receiver.origin,
    }
    assert.deepEqual(attributesOf(failed), {
      ...common,
      'callback.attempt': 1,
      'callback.outcome': 'retry',
      'http.response.status_code': 500,
      'error.type': '500',
    })
    assert.equal(failed.status.code, SpanStatusCode.ERROR)
    assert.equal(failed.status.message, 'HTTP 500')
    assert.deepEqual(attributesOf(succeeded), {
      ...common,
      'callback.attempt': 2,
      'http.request.resend_count': 1,
      'callback.outcome': 'delivered',
      'http.response.status_code': 204,
    })
    assert.equal(succeeded.status.code, SpanStatusCode.UNSET)
    assert.doesNotMatch(JSON.stringify(spans.map(attributesOf)), /s3cr3t|frag/, 'the query string and fragment stay out of spans')

    // Each request carried its own attempt's span as parent, and still verified: trace headers are
    // outside the signature.
    assert.equal(receiver.received.length, 2)
    for (const [index, request] of receiver.received.entries()) {
      const { traceId, spanId } = spans[index]!.spanContext()
      assert.equal(request.headers.traceparent, `00-${traceId}-${spanId}-01`)
      const verified = await verifySignature({ headers: request.headers, body: request.body }, { secret: s.secret, now: clock.now })
      assert.equal(verified.id, task.id)
    }

    assert.deepEqual(await telemetry.points('callback.attempts'), [
      { attributes: { 'callback.event': 'report.ready', 'callback.outcome': 'retry', 'http.response.status_code': 500, 'error.type': '500' }, value: 1 },
      { attributes: { 'callback.event': 'report.ready', 'callback.outcome': 'delivered', 'http.response.status_code': 204 }, value: 1 },
    ])
    assert.deepEqual(await telemetry.points('callback.deliveries'), [{ attributes: { 'callback.event': 'report.ready' }, value: 1 }])
    assert.deepEqual(await telemetry.points('callback.failures'), [])
  })

  test('with destinationMetrics the attempt counter carries each destination', async () => {
    const s = await setup(failOnceThenSucceed, { destinationMetrics: true })
    open.push(s)
    const task = await createCallbackTask({ callbackUrl: s.receiver.url, event: 'report.ready' }, s.sender)
    assert.equal((await deliver(task, {}, s.sender)).status, 'retrying')
    assert.deepEqual(await s.telemetry.points('callback.attempts'), [
      {
        attributes: {
          'callback.event': 'report.ready',
          'callback.outcome': 'retry',
          'http.response.status_code': 500,
          'error.type': '500',
          'callback.destination': s.receiver.origin,
        },
        value: 1,
      },
    ])
  })

  test('sends no traceparent or tracestate when propagation is off, the default', async () => {
    const s = await setup(failOnceThenSucceed, { schedule: [0] })
    open.push(s)
    const task = await createCallbackTask({ callbackUrl: s.receiver.url, event: 'report.ready' }, s.sender)
    const delivered = s.next('delivered')
    const worker = createWorker({ ...s.sender, pollIntervalMs: 20 })
    await deliver(task, {}, s.sender)
    worker.start()
    await delivered
    await worker.stop()
    assert.equal(s.receiver.received.length, 2)
    for (const request of s.receiver.received) {
      assert.equal(request.headers.traceparent, undefined)
      assert.equal(request.headers.tracestate, undefined)
    }
    assert.equal(s.telemetry.spans().length, 2, 'spans are made all the same')
  })

  test('counts a 400, a 410 and a refused connection as what they are, with error.type', async () => {
    const s = await setup((request, response) => answer(response, request.path.startsWith('/gone') ? 410 : 400))
    open.push(s)
    const closed = await startReceiver(() => {})
    const refusedUrl = closed.url
    await closed.close()

    const rejected = await createCallbackTask({ callbackUrl: `${s.receiver.origin}/bad`, event: 'a' }, s.sender)
    const gone = await createCallbackTask({ callbackUrl: `${s.receiver.origin}/gone`, event: 'a' }, s.sender)
    const refused = await createCallbackTask({ callbackUrl: refusedUrl, event: 'b' }, s.sender)
    const strict = { ...s.sender, retry: { schedule: [60_000], jitter: 0, failStatuses: [400] } }
    assert.equal((await deliver(rejected, {}, strict)).status, 'failed')
    assert.equal((await deliver(gone, {}, s.sender)).status, 'cancelled')
    assert.equal((await deliver(refused, {}, s.sender)).status, 'retrying')

    const byTask = new Map(s.telemetry.spans().map((span) => [span.attributes['callback.task.id'], span]))
    const refusedSpan = byTask.get(refused.id)!
    assert.equal(refusedSpan.attributes['error.type'], 'ERR_CALLBACK_CONNECTION')
    assert.equal(refusedSpan.attributes['http.response.status_code'], undefined)
    assert.equal(refusedSpan.status.code, SpanStatusCode.ERROR)
    assert.match(refusedSpan.status.message ?? '', /^ERR_CALLBACK_CONNECTION/)
    assert.equal(byTask.get(gone.id)!.attributes['callback.outcome'], 'cancelled')

    assert.deepEqual(await s.telemetry.points('callback.failures'), [
      { attributes: { 'callback.event': 'a', 'callback.outcome': 'failed', 'http.response.status_code': 400, 'error.type': '400' }, value: 1 },
      { attributes: { 'callback.event': 'a', 'callback.outcome': 'cancelled', 'http.response.status_code': 410, 'error.type': '410' }, value: 1 },
    ])
    assert.deepEqual(await s.telemetry.points('callback.deliveries'), [])
    const attempts = await s.telemetry.points('callback.attempts')
    assert.deepEqual(
      attempts.find((point) => point.attributes['callback.event'] === 'b'),
      { attributes: { 'callback.event': 'b', 'callback.outcome': 'retry', 'error.type': 'ERR_CALLBACK_CONNECTION' }, value: 1 }
    )
  })

  test('writes the trace context through the propagator it is given', async () => {
    const injected: Array<{ traceId: string | undefined }> = []
    const propagator: TextMapPropagator = {
      inject(context: Context, carrier: unknown, setter: TextMapSetter) {
        const traceId = trace.getSpanContext(context)?.traceId
        injected.push({ traceId })
        setter.set(carrier, 'x-trace', `trace=${traceId}`)
      },
      extract: (context: Context) => context,
      fields: () => ['x-trace'],
    }
    const s = await setup((_request, response) => answer(response, 204), { propagate: true, propagator })
    open.push(s)
    const task = await createCallbackTask({ callbackUrl: s.receiver.url, event: 'report.ready' }, s.sender)
    assert.equal((await deliver(task, {}, s.sender)).status, 'delivered')
    const [span] = s.telemetry.spans()
    assert.deepEqual(injected, [{ traceId: span!.spanContext().traceId }])
    assert.equal(s.receiver.received[0]!.headers['x-trace'], `trace=${span!.spanContext().traceId}`)
    assert.equal(s.receiver.received[0]!.headers.traceparent, undefined)
  })

  test('refuses a store without countDue, and bad options, with a TypeError naming them', () => {
    const { countDue: _countDue, ...withoutCount } = createMemoryStore()
    assert.throws(() => createOpenTelemetry({ store: withoutCount as CallbackStore }), { name: 'TypeError', message: /store must have countDue/ })
    assert.throws(() => createOpenTelemetry({ propagate: 'yes' as unknown as boolean }), { name: 'TypeError', message: /propagate/ })
    assert.throws(() => createOpenTelemetry({ now: 5 as unknown as () => Date }), { name: 'TypeError', message: /now/ })
  })

  test('a sender refuses instrumentation without startAttempt', async () => {
    const sender: SenderOptions = { store: createMemoryStore(), secret: generateSecret(), instrumentation: {} as never }
    await assert.rejects(createCallbackTask({ callbackUrl: 'https://example.com/hooks', event: 'a' }, sender), {
      name: 'TypeError',
      message: /instrumentation must have a startAttempt/,
    })
  })

  test('only src/otel.ts imports @opentelemetry/api, so a sender without instrumentation never loads it', async () => {
    const src = fileURLToPath(new URL('../../src/', import.meta.url))
    const files = (await readdir(src, { recursive: true })).filter((file) => file.endsWith('.ts'))
    const importing: string[] = []
    for (const file of files) {
      if (/from '@opentelemetry\//.test(await readFile(join(src, file), 'utf8'))) importing.push(file)
    }
    assert.deepEqual(importing, ['otel.ts'])
  })
})
