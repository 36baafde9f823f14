/**
 * OpenTelemetry for deliveries: a client span per attempt, counters of attempts, deliveries and
 * failures, a gauge of due tasks, and optionally the trace context sent to the receiver. Only this
 * entry imports `@opentelemetry/api` (an optional peer dependency); a sender without
 * `instrumentation` never loads it.
 *
 * @module endpoint-callback/otel
 */
import { context, defaultTextMapSetter, metrics, propagation, SpanKind, SpanStatusCode, trace, ValueType } from '@opentelemetry/api'
import type { Attributes, Context, Meter, ObservableCallback, TextMapPropagator, Tracer } from '@opentelemetry/api'
import { VERSION } from './version.ts'
import type { AttemptInstrumentation, AttemptRecord, CallbackStore, CallbackTask, DeliveryInstrumentation } from './types.ts'

/** Options of {@link createOpenTelemetry}. */
export interface OpenTelemetryOptions {
  /** Where spans go. Default: the global tracer provider's tracer `endpoint-callback`. */
  tracer?: Tracer | undefined
  /** Where the counters and the gauge go. Default: the global meter provider's meter `endpoint-callback`. */
  meter?: Meter | undefined
  /**
   * Send the trace context (`traceparent`, `tracestate`) to the receiver with every attempt, so its
   * spans join the sender's trace. Default `false`: receivers are often other companies, and a
   * trace id tells them about your traces. The headers are outside the signature, which covers
   * only `webhook-id`, `webhook-timestamp` and the body, so adding them never breaks verification.
   */
  propagate?: boolean | undefined
  /**
   * How the context is written when `propagate` is on. Default: the global propagator
   * (`propagation`, W3C trace context and baggage under the Node SDK), or, when none is
   * registered, W3C trace context (`traceparent`, `tracestate`) alone.
   */
  propagator?: TextMapPropagator | undefined
  /**
   * The sender's store, for the `callback.tasks.due` gauge: each collection asks it
   * `countDue(now)` (one indexed count in PostgreSQL, one `ZCOUNT` in Redis). Without a store there
   * is no gauge.
   */
  store?: CallbackStore | undefined
  /** The clock the gauge counts with; pass the sender's `now` if it has one. Default `() => new Date()`. */
  now?: (() => Date) | undefined
  /**
   * Add `callback.destination` to the attempt and failure counters. Default `false`: each
   * destination becomes a series of its own, which suits tens of clients, not thousands. Spans
   * always carry it.
   */
  destinationMetrics?: boolean | undefined
}

/** The sender's `instrumentation`, with a way to stop observing the gauge. */
export interface OpenTelemetryInstrumentation extends DeliveryInstrumentation {
  /** Removes the gauge's callback, so the meter stops asking the store. Spans and counters go on. */
  close(): void
}

/** Attribute names, as OpenTelemetry's HTTP client conventions and this library spell them. */
const ATTR = {
  method: 'http.request.method',
  url: 'url.full',
  host: 'server.address',
  port: 'server.port',
  status: 'http.response.status_code',
  resendCount: 'http.request.resend_count',
  errorType: 'error.type',
  taskId: 'callback.task.id',
  event: 'callback.event',
  attempt: 'callback.attempt',
  outcome: 'callback.outcome',
  destination: 'callback.destination',
} as const

/**
 * Creates the OpenTelemetry instrumentation for a sender: pass it as `instrumentation`.
 *
 * Every attempt is a span of kind CLIENT named `POST`, child of the context active when it starts
 * (the request that called `deliver`, or none in a worker), with the HTTP client attributes
 * `http.request.method`, `url.full`, `server.address`, `server.port`,
 * `http.response.status_code`, `http.request.resend_count` and `error.type`, and
 * `callback.task.id`, `callback.event`, `callback.attempt`, `callback.destination` (the task's
 * destination, by default its URL's origin) and `callback.outcome` (`delivered`,
 * `retry`, `failed`, `cancelled`). `url.full` leaves out the query string, fragment and user info:
 * callback URLs often carry a token there, and spans go to third-party backends. A span's status
 * is ERROR, with the attempt's reason as message, unless the attempt delivered.
 *
 * Metrics (attributes `callback.event`, `callback.outcome`, `http.response.status_code`,
 * `error.type`; never the task id or the URL, to keep cardinality bounded; `callback.destination`
 * on `callback.attempts` and `callback.failures` only with `destinationMetrics: true`, since every
 * destination is then a series of its own — fine for tens of clients, not for thousands):
 * - `callback.attempts` — every attempt;
 * - `callback.deliveries` — attempts that delivered (attribute `callback.event` only);
 * - `callback.failures` — attempts that ended their task undelivered (`failed`, or `cancelled` by
 *   410 Gone);
 * - `callback.tasks.due` — a gauge of tasks due now and waiting for a worker (needs `store`): a
 *   value that keeps growing means the workers fall behind.
 *
 * @example
 * ```ts
 * import { createMemoryStore, createWorker } from 'endpoint-callback'
 * import { createOpenTelemetry } from 'endpoint-callback/otel'
 *
 * const store = createMemoryStore()
 * const sender = { store, secret, instrumentation: createOpenTelemetry({ store, propagate: true }) }
 * createWorker(sender).start()
 * ```
 */
export function createOpenTelemetry(options: OpenTelemetryOptions = {}): OpenTelemetryInstrumentation {
  if (options === null || typeof options !== 'object') throw new TypeError('createOpenTelemetry: options must be an object')
  const { store, propagator } = options
  let { tracer, meter, propagate, now } = options
  tracer ??= trace.getTracer('endpoint-callback', VERSION)
  meter ??= metrics.getMeter('endpoint-callback', VERSION)
  propagate ??= false
  now ??= () => new Date()
  if (typeof tracer.startSpan !== 'function') throw new TypeError('tracer must be an OpenTelemetry Tracer')
  if (typeof meter.createCounter !== 'function') throw new TypeError('meter must be an OpenTelemetry Meter')
  if (typeof propagate !== 'boolean') throw new TypeError('propagate must be a boolean')
  if (propagator !== undefined && (propagator === null || typeof propagator.inject !== 'function')) {
    throw new TypeError('propagator must be an OpenTelemetry TextMapPropagator')
  }
  if (typeof now !== 'function') throw new TypeError('now must be a function returning a Date')
  const destinationMetrics = options.destinationMetrics ?? false
  if (typeof destinationMetrics !== 'boolean') throw new TypeError('destinationMetrics must be a boolean')
  if (store !== undefined && (store === null || typeof store.countDue !== 'function')) {
    throw new TypeError('store must have countDue(now) for the callback.tasks.due gauge (the memory, PostgreSQL and Redis stores do)')
  }

  const attempts = meter.createCounter('callback.attempts', { description: 'Delivery attempts made', unit: '{attempt}', valueType: ValueType.INT })
  const deliveries = meter.createCounter('callback.deliveries', { description: 'Callbacks delivered (2xx)', unit: '{delivery}', valueType: ValueType.INT })
  const failures = meter.createCounter('callback.failures', {
    description: 'Callbacks that ended undelivered: failed, or cancelled by 410 Gone',
    unit: '{failure}',
    valueType: ValueType.INT,
  })

  let close = () => {}
  if (store !== undefined) {
    const clock = now
    const countDue = store.countDue!.bind(store)
    const due = meter.createObservableGauge('callback.tasks.due', {
      description: 'Tasks due now and waiting for a worker',
      unit: '{task}',
      valueType: ValueType.INT,
    })
    const observe: ObservableCallback = async (result) => {
      try {
        result.observe(await countDue(clock()))
      } catch {
        // A store that cannot answer now gives no value rather than a wrong one; its errors show
        // up in the worker's `error` events.
      }
    }
    due.addCallback(observe)
    close = () => due.removeCallback(observe)
  }

  const inject = propagate ? injector(propagator) : undefined
  const active = tracer
  return {
    startAttempt(task: CallbackTask, attempt: number): AttemptInstrumentation {
      const target = targetOf(task.callbackUrl)
      const attributes: Attributes = {
        [ATTR.method]: 'POST',
        [ATTR.taskId]: task.id,
        [ATTR.event]: task.event,
        [ATTR.attempt]: attempt,
      }
      if (target !== undefined) {
        attributes[ATTR.url] = target.url
        attributes[ATTR.host] = target.host
        attributes[ATTR.port] = target.port
      }
      if (attempt > 1) attributes[ATTR.resendCount] = attempt - 1
      if (task.destination !== undefined) attributes[ATTR.destination] = task.destination
      const parent = context.active()
      const span = active.startSpan('POST', { kind: SpanKind.CLIENT, attributes }, parent)
      const probe: AttemptInstrumentation = {
        end(record: AttemptRecord, error?: unknown) {
          const errorType = errorTypeOf(record, error)
          const metricAttributes: Attributes = { [ATTR.event]: task.event, [ATTR.outcome]: record.outcome }
          if (destinationMetrics && task.destination !== undefined) metricAttributes[ATTR.destination] = task.destination
          span.setAttribute(ATTR.outcome, record.outcome)
          if (record.status !== undefined) {
            span.setAttribute(ATTR.status, record.status)
            metricAttributes[ATTR.status] = record.status
          }
          if (errorType !== undefined) {
            span.setAttribute(ATTR.errorType, errorType)
            metricAttributes[ATTR.errorType] = errorType
          }
          if (record.outcome !== 'delivered') {
            span.setStatus({ code: SpanStatusCode.ERROR, message: record.error ?? `HTTP ${record.status}` })
          }
          span.end()
          attempts.add(1, metricAttributes)
          if (record.outcome === 'delivered') deliveries.add(1, { [ATTR.event]: task.event })
          else if (record.outcome === 'failed' || record.outcome === 'cancelled') failures.add(1, metricAttributes)
        },
      }
      if (inject !== undefined) {
        const headers: Record<string, string> = {}
        inject(trace.setSpan(parent, span), headers)
        probe.headers = headers
      }
      return probe
    },
    close() {
      close()
      close = () => {}
    },
  }
}

/** The callback URL as `url.full` may show it (no query, fragment or user info), its host and port. */
function targetOf(callbackUrl: string): { url: string; host: string; port: number } | undefined {
  let url: URL
  try {
    url = new URL(callbackUrl)
  } catch {
    return undefined
  }
  const port = url.port === '' ? (url.protocol === 'http:' ? 80 : 443) : Number(url.port)
  // URL keeps IPv6 hosts in brackets; server.address is the bare address.
  const host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname
  return { url: `${url.protocol}//${url.host}${url.pathname}`, host, port }
}

/**
 * `error.type` as the HTTP conventions define it: the status code for an answer that is not 2xx
 * (a 3xx included: redirects are never followed, so it is a failure), else the error's code
 * (`ERR_CALLBACK_TIMEOUT`, …), else its class name.
 */
function errorTypeOf(record: AttemptRecord, error: unknown): string | undefined {
  if (record.status !== undefined) return record.status >= 200 && record.status < 300 ? undefined : String(record.status)
  const code = (error as { code?: unknown } | null | undefined)?.code
  if (typeof code === 'string' && code !== '') return code
  const reason = record.error === undefined ? undefined : /^(ERR_[A-Z0-9_]+)/.exec(record.error)?.[1]
  if (reason !== undefined) return reason
  if (error instanceof Error) return error.name
  return record.outcome === 'delivered' ? undefined : '_OTHER'
}

type Inject = (carrier: Context, headers: Record<string, string>) => void

function injector(propagator: TextMapPropagator | undefined): Inject {
  if (propagator !== undefined) return (ctx, headers) => propagator.inject(ctx, headers, defaultTextMapSetter)
  return (ctx, headers) => {
    // Decided per attempt: an SDK may register its propagator after this instrumentation was made.
    if (propagation.fields().length > 0) propagation.inject(ctx, headers)
    else injectTraceContext(ctx, headers)
  }
}

/** W3C trace context (https://www.w3.org/TR/trace-context/) of the span in `ctx`, when it is valid. */
function injectTraceContext(ctx: Context, headers: Record<string, string>): void {
  const spanContext = trace.getSpanContext(ctx)
  if (spanContext === undefined || !trace.isSpanContextValid(spanContext)) return
  const flags = (spanContext.traceFlags & 0xff).toString(16).padStart(2, '0')
  headers.traceparent = `00-${spanContext.traceId}-${spanContext.spanId}-${flags}`
  const state = spanContext.traceState?.serialize()
  if (state !== undefined && state !== '') headers.tracestate = state
}
