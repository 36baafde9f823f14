/**
 * The shapes that callers, stores and transports share. Adapters depend on these, never on each
 * other.
 */
import type { JWK } from 'jose'
import type { KeyRing } from './signing/jws.ts'
import type { RemoteJwks } from './signing/jwks-remote.ts'

/**
 * Where a task is in its life:
 * `pending` (waiting for its result) → `scheduled` (due at `nextAttemptAt`) → `delivering`
 * (leased by one worker) → `delivered` | `scheduled` again | `failed` | `cancelled`.
 */
export type TaskStatus = 'pending' | 'scheduled' | 'delivering' | 'delivered' | 'failed' | 'cancelled'

/** The states a task never leaves. */
export type TerminalStatus = 'delivered' | 'failed' | 'cancelled'

/** A callback task as a store returns it. Dates are `Date` objects; a store never shares its copy. */
export interface CallbackTask {
  id: string
  status: TaskStatus
  callbackUrl: string
  /** The event name, sent as the body's `type`. */
  event: string
  idempotencyKey?: string
  /**
   * Per-task signing secret(s) (the client's own, WebSub style); override the sender's.
   *
   * Where it is stored, and why: only in the task itself (the memory store's entry, the Postgres
   * `tasks.secret` column, the Redis task hash), because every later attempt — possibly made by a
   * worker in another process — must sign with it. It is never copied anywhere else: attempt
   * records, `lastError`, events and error messages never contain it (events carry a copy of the
   * task without it). Treat the store's data as secret material; prune finished tasks.
   */
  secret?: string | string[]
  /**
   * The receiver's public encryption key: a public JWK (EC P-256/384/521 or X25519) or the https
   * URL of the receiver's JWKS. The body is then sent encrypted (JWE, `application/jose`).
   */
  encryptionKey?: JWK | string
  /** Prove the receiver wants these callbacks (intent challenge) before each attempt sends the payload. */
  verifyIntent?: boolean
  /** The user's own data about the task, stored and returned as given (JSON-serialisable). */
  metadata?: Record<string, unknown>
  /** The exact body bytes to send (as text), built once when the result is attached. */
  body?: string
  /** Content type of `body`; `application/json` when absent. */
  contentType?: string
  /** Attempts made so far. */
  attempts: number
  /**
   * When the next attempt is due (status `scheduled`), when the current lease expires
   * (`delivering`), or when a `pending` task expires unless its result is attached first
   * (`pendingTimeoutMs`, or its `deadline` if sooner).
   */
  nextAttemptAt?: Date
  /** After this instant the task fails instead of delivering late. */
  deadline?: Date
  createdAt: Date
  updatedAt: Date
  /** The reason of the last failed attempt, for people reading the task. */
  lastError?: string
  /**
   * Where the task is sent, for per-destination limits: by default its callback URL's origin
   * (`https://hooks.example.com`), or what the sender's `destination(task)` option returned.
   * Absent on tasks stored before destinations existed; those are not limited.
   */
  destination?: string
}

/** What `createCallbackTask` hands a store to insert. */
export interface NewCallbackTask {
  id: string
  callbackUrl: string
  event: string
  idempotencyKey?: string
  secret?: string | string[]
  encryptionKey?: JWK | string
  verifyIntent?: boolean
  metadata?: Record<string, unknown>
  deadline?: Date
  createdAt: Date
  /**
   * The body, when the task carries its result from creation (outbox): it is stored `scheduled`,
   * due at `nextAttemptAt`, instead of `pending`.
   */
  body?: string
  /** Content type of `body`; `application/json` when absent. */
  contentType?: string
  /**
   * With a `body`: when the first attempt is due. Without one: when the `pending` task expires
   * (see {@link CallbackStore.expirePending}); absent, it never does.
   */
  nextAttemptAt?: Date
  /** See {@link CallbackTask.destination}. */
  destination?: string
}

/** One attempt to deliver, as recorded in the task's history. Never contains a secret. */
export interface AttemptRecord {
  /** 1 for the first attempt. */
  attempt: number
  startedAt: Date
  durationMs: number
  /** HTTP status, when a response arrived. */
  status?: number
  /** Error code and message, when no usable response arrived (`ERR_CALLBACK_TIMEOUT: …`). */
  error?: string
  /** The first bytes of the response body, as text. */
  responseBody?: string
  /** What the attempt led to. */
  outcome: 'delivered' | 'retry' | 'failed' | 'cancelled'
}

/** A claim on a task: only the holder of `token` may complete it, until `expiresAt`. */
export interface Lease {
  task: CallbackTask
  token: string
  expiresAt: Date
  /**
   * Set when this lease is the single probe of a destination whose circuit breaker was open: how
   * many times in a row the breaker had opened. Its outcome closes the breaker or opens it again.
   */
  probe?: { openings: number }
}

/**
 * A destination held back, as {@link CallbackStore.setDestination} stores it: `throttled` (the
 * receiver asked to wait, `Retry-After`) or `open` (its circuit breaker opened: one probe once
 * `until` has passed).
 */
export interface DestinationHold {
  state: 'throttled' | 'open'
  until: Date
  /** Why, for people reading it: the last failure (`ERR_CALLBACK_TIMEOUT: …`, `HTTP 503`). */
  reason: string
  /** How many times in a row the breaker opened (its cool-down grows with it); 0 for a throttle. */
  openings: number
}

/**
 * One destination as {@link CallbackStore.listDestinations} reports it. `closed` is a healthy
 * destination; `probing` is an open breaker whose single probe is in flight.
 */
export interface DestinationState {
  destination: string
  state: 'closed' | 'throttled' | 'open' | 'probing'
  /** Until when it is held back (throttled, open, probing). */
  until?: Date
  /** Times in a row its breaker opened. */
  openings: number
  /** Attempts in flight now over every worker (leases that have not expired). */
  inFlight: number
  /** Tasks due now. */
  due: number
  /** The reason it was last held back. */
  lastError?: string
}

/** A destination's failures as {@link CallbackStore.countDestinationFailure} counts them, over every worker. */
export interface DestinationTally {
  /** Failures since its last answer. */
  inARow: number
  /** Attempts counted in the current window (from its first failure on). */
  attempts: number
  /** Failures among them. */
  failures: number
}

/** What follows an attempt: the task is done, or due again at `nextAttemptAt`. */
export type AttemptResolution =
  | { status: TerminalStatus; lastError?: string }
  | { status: 'scheduled'; nextAttemptAt: Date; lastError?: string }

/** Options of every store call that may run inside the caller's transaction (Postgres outbox). */
export interface StoreCallOptions {
  /** An open transaction client of the store's own kind (e.g. a `pg.PoolClient` after `BEGIN`). */
  transaction?: unknown
}

/**
 * Where tasks live. Every store passes `storeContract` from `endpoint-callback/testing`.
 *
 * Deliberately left out: full-text search (the optional `list` filters by fields, for
 * inspection), payload encryption at rest, and cross-store migration.
 *
 * Secrets: a task's own `secret` is stored with the task, and only there, because any worker in
 * any process must sign its later attempts with it (see {@link CallbackTask.secret}). A store never
 * copies it into attempt records, `lastError` or anything else it writes; the sender's own keys are
 * never handed to a store at all. A task body sent encrypted (`encryptionKey`) is stored as the JWE.
 */
export interface CallbackStore {
  /**
   * Inserts a `pending` task — or, when it comes with a `body` (outbox), a `scheduled` one due at
   * its `nextAttemptAt`, waking subscribed workers (inside a transaction: when it commits). With an
   * `idempotencyKey` that is already stored, inserts nothing and returns the stored task with
   * `created: false` — also when two calls race. A store that cannot join `options.transaction`
   * throws a `TypeError` rather than write outside it.
   */
  insert(task: NewCallbackTask, options?: StoreCallOptions): Promise<{ task: CallbackTask; created: boolean }>
  /**
   * Optional (bulk create): inserts every task as {@link CallbackStore.insert} would, in one round
   * trip, and answers `{ task, created }` for each, in the order given. An `idempotencyKey` already
   * stored answers the stored task with `created: false`, and so does the second of two tasks of one
   * call with the same key (it answers the first's task) — also when two calls race. Subscribed
   * workers are woken once for the batch, with the earliest due instant of the tasks with a `body`
   * (inside a transaction: when it commits); a batch of `pending` tasks wakes nobody. When it
   * rejects, it should have stored nothing (the memory, PostgreSQL and Redis stores store all or
   * nothing). A store that cannot join `options.transaction` throws a `TypeError`.
   * `createCallbackTasks` inserts the tasks one at a time through `insert` on a store without it.
   */
  insertMany?(tasks: readonly NewCallbackTask[], options?: StoreCallOptions): Promise<Array<{ task: CallbackTask; created: boolean }>>
  /** The task, or `undefined`. */
  get(id: string): Promise<CallbackTask | undefined>
  /**
   * Attaches the result to a `pending` task and leases it to the caller for its first attempt:
   * stores `body` (and `contentType`), sets status `delivering`, lease until `now + leaseMs`.
   * Returns `undefined` when the task does not exist or is not `pending` (nothing changes).
   *
   * A store with `setDestination` checks the task's destination in the same step: when it is held
   * back at `now` (a hold whose `until` is after `now`, or an `open` or `probing` breaker — what a
   * claim with `perDestination` would skip), the result is attached but the task is made
   * `scheduled`, due at `now`, without a lease (as `schedule` does, waking subscribed workers), and
   * `undefined` is returned: no attempt goes out past the hold, and a worker sends the task once
   * its destination may be tried again. `deliver` then reports it `retrying` with 0 attempts.
   */
  attach(
    id: string,
    result: { body: string; contentType?: string },
    lease: { now: Date; leaseMs: number }
  ): Promise<Lease | undefined>
  /**
   * Optional (outbox): attaches the result to a `pending` task and makes it `scheduled`, due at
   * `now`, without leasing it: a worker sends it (after `options.transaction` commits, when given,
   * and woken then). Returns the task, or `undefined` when it does not exist or is not `pending`.
   * A store that cannot join `options.transaction` throws a `TypeError`.
   */
  schedule?(
    id: string,
    result: { body: string; contentType?: string },
    at: { now: Date },
    options?: StoreCallOptions
  ): Promise<CallbackTask | undefined>
  /**
   * Optional (no stranded task): ends up to `limit` `pending` tasks whose `nextAttemptAt` (their
   * expiry) is at or before `now`: status `failed`, `lastError` set to `reason`, as a failure that
   * `list({ status: 'failed' })` shows. Returns them. Workers call it as they poll.
   */
  expirePending?(options: { now: Date; limit: number; reason: string }): Promise<CallbackTask[]>
  /**
   * Optional: checks once that the store can work — the client answers, the schema is migrated,
   * the keys have the types the store writes — and rejects with an error that says how to fix it.
   * `worker.start()` calls it.
   */
  check?(): Promise<void>
  /**
   * Leases up to `limit` tasks that are due: `scheduled` with `nextAttemptAt <= now`, and
   * `delivering` whose lease expired (its holder died), earliest due first. Each gets a new token;
   * the old token is void from then on.
   */
  claim(options: ClaimOptions): Promise<Lease[]>
  /**
   * Records an attempt and what follows it, atomically, only while `lease.token` still holds the
   * task. Returns `false` (and changes nothing) when it does not: the lease expired and another
   * worker claimed the task, or the task was cancelled. A store with `countDestinationFailure`
   * also counts an answered attempt toward its destination's failure tally here (see there).
   */
  complete(lease: Lease, attempt: AttemptRecord, resolution: AttemptResolution): Promise<boolean>
  /**
   * Gives a leased task back unattempted (graceful stop): `scheduled`, due at `nextAttemptAt`
   * (default: now). Returns `false` when the lease no longer holds.
   */
  release(lease: Lease, nextAttemptAt?: Date): Promise<boolean>
  /** Cancels a task that is not yet terminal. Returns `false` when it is unknown or terminal. */
  cancel(id: string): Promise<boolean>
  /** The attempt history, oldest first (stores may cap its length; the contract needs 20). */
  attempts(id: string): Promise<AttemptRecord[]>
  /**
   * Optional (inspection): a page of the tasks that match every filter of `query` (status, event,
   * callback host, id, idempotency key, time range), most recently updated first — for a failed
   * task, most recently failed first. Pass the page's `cursor` back for the next page; a page
   * without `cursor` is the last. `storeContract` checks every filter.
   * The memory, PostgreSQL and Redis stores list every status, `pending` included (the tasks
   * waiting for a result).
   */
  list?(query: TaskListQuery): Promise<TaskPage>
  /**
   * Optional (inspection): moves a `failed` task back to `scheduled`, due at `now`, and wakes
   * subscribed workers. Its body, attempt count, history and `lastError` stay, so the retry schedule
   * resumes where it stopped. Returns `false` (and changes nothing) when the task is unknown or not
   * `failed` — a cancelled task stays cancelled.
   */
  redeliver?(id: string, options: { now: Date }): Promise<boolean>
  /**
   * Optional (metrics): how many tasks are due at `now` — `scheduled` with `nextAttemptAt <= now`
   * and `delivering` with an expired lease — which is what a claim without a limit would take.
   */
  countDue?(now: Date): Promise<number>
  /**
   * Optional (the inspector's overview): counts by status, the due backlog, attempts over recent
   * hours and the hosts failing most. PostgreSQL bounds each, so it costs about the same with a
   * million tasks as with a hundred; the memory and Redis stores scan. Stores without it are
   * summarised from `list` pages instead.
   */
  summarize?(query: TaskSummaryQuery): Promise<TaskSummary>
  /**
   * Optional: calls `listener` when a task may have become due sooner than the worker's next poll
   * (LISTEN/NOTIFY, pub/sub, in-process). Returns the unsubscribe function.
   *
   * When the store knows when that task falls due, it passes the instant (ms since the epoch) as
   * `dueAt`, so a worker can wake exactly then instead of at its next poll; with no `dueAt` the
   * worker looks at once. A store that only ever calls `listener()` is still correct, just later.
   */
  subscribe?(listener: (dueAt?: number) => void): () => void
  /**
   * Optional: calls `listener` with each error the store got over by itself, which therefore no
   * call rejected with — a statement whose connection went silent and that the store read back or
   * sent again, a connection that broke and was opened anew. Returns the unsubscribe function.
   * A worker subscribes while it runs and emits each as an `error` event, so an operator hears of
   * a failing database even while every call still succeeds in the end. Errors the store met while
   * nobody was subscribed are dropped. Each is a `StoreError` (`ERR_CALLBACK_STORE`) with the
   * original error as `cause`, and quotes nothing stored. The memory store has none to report.
   *
   * @example
   * ```ts
   * const stop = store.subscribeErrors?.((error) => log.warn({ err: error }, 'callback store recovered'))
   * ```
   */
  subscribeErrors?(listener: (error: Error) => void): () => void
  /**
   * Optional (destinations): holds `destination` back (`hold`), or lets it go again (`null`: a
   * healthy destination). Shared by every worker on the store; claims given `perDestination`
   * skip a held destination until `hold.until`, then hand out one probe of an `open` one.
   */
  setDestination?(destination: string, hold: DestinationHold | null, now: Date): Promise<void>
  /**
   * Optional (destinations, shared circuit breaker): counts a failed attempt (see the breaker's
   * thresholds) of `destination` at `now`, for every worker on the store, and returns the tally.
   * A worker calls it for the failures of a destination that it sees failing itself (only then
   * can the tally open the breaker), so a busy destination's occasional failure costs no call.
   * `inARow` counts failures since the last answer; `attempts` and `failures` count the attempts
   * since the first failure of the current window, which starts with a failure when the last
   * one is over (`windowMs` after its start) and lasts `windowMs`. A store that has it also counts,
   * in `complete`, an attempt answered with a status below 500 other than 408 toward a destination
   * that has a tally: `inARow` back to 0 and one more of `attempts` (its window over: the tally is
   * dropped), in the statement or script that records the attempt, so an attempt to a destination
   * that never failed writes nothing more. `setDestination` drops the destination's tally (a hold
   * set or lifted: counting starts afresh). The memory store keeps it in process.
   */
  countDestinationFailure?(destination: string, now: Date, windowMs: number): Promise<DestinationTally>
  /**
   * Optional (destinations, inspection): the destinations that are held back, have attempts in
   * flight or tasks due at `now`, most due first.
   */
  listDestinations?(now: Date): Promise<DestinationState[]>
  /** Optional: frees what the store itself opened (never the user's client). */
  close?(): Promise<void>
}

/** What {@link CallbackStore.claim} takes. */
export interface ClaimOptions {
  now: Date
  limit: number
  leaseMs: number
  /**
   * Limit destinations (stores with `setDestination`): take at most this many tasks of one
   * destination, less what `inFlight` says the caller already has in flight there; a destination
   * held until after `now` is skipped, except its tasks whose deadline has passed (claimed so they
   * can fail); an `open` one whose `until` has passed gives one task, marked as its `probe`, and is
   * `probing` until that lease expires (one probe over every worker). Skipped tasks keep their
   * place and spend no attempt.
   */
  perDestination?: number | undefined
  /**
   * With `perDestination`: the caller's attempts in flight per destination. A caller may pass a
   * lower count (below 0, even) to give a destination it trusts more room; a probe is one task
   * whatever the count.
   */
  inFlight?: ReadonlyMap<string, number> | undefined
}

/** What {@link CallbackStore.list} selects. Every filter given must hold; all are optional but `status`. */
export interface TaskListQuery {
  /** Tasks in this state. Absent: tasks in every state. */
  status?: TaskStatus | undefined
  /** Only tasks of this event (exact). */
  event?: string | undefined
  /**
   * Only tasks whose callback URL has this host name (case-insensitive, without the port; an IPv6
   * address in brackets or not): `hooks.example.com`, `127.0.0.1`, `[::1]`.
   */
  host?: string | undefined
  /** Only the task with this id (the `webhook-id`). */
  id?: string | undefined
  /** Only the task created with this idempotency key. */
  idempotencyKey?: string | undefined
  /** Only tasks updated at or after this instant (for a failed task: that failed since then). */
  since?: Date | undefined
  /** Only tasks updated before this instant. */
  until?: Date | undefined
  /** At most this many tasks per page, 1 to 1000. Default 100. */
  limit?: number | undefined
  /** The `cursor` of the previous page. Opaque; only the store that returned it understands it. */
  cursor?: string | undefined
}

/** What {@link CallbackStore.summarize} is asked. */
export interface TaskSummaryQuery {
  /** The caller's clock: what is due, and where the last bucket of attempts ends. */
  now: Date
  /** Attempts are counted per bucket of this many ms, `buckets` of them, the last ending at `now`. */
  bucketMs: number
  buckets: number
  /** A count stops at this number (a status with more tasks is shown as "at least"). */
  countCap: number
  /** At most this many failing hosts, those with the most failing tasks updated in the buckets' span. */
  hosts: number
}

/** What {@link CallbackStore.summarize} answers. */
export interface TaskSummary {
  /** Tasks per status, each at most `countCap`. */
  counts: Record<TaskStatus, number>
  /**
   * For statuses whose count reached `countCap`: about how many there are, when the store can tell
   * cheaply (PostgreSQL: from the table's statistics).
   */
  estimates?: Partial<Record<TaskStatus, number>>
  /** Tasks due at `now` (as `countDue`), at most `countCap`. */
  due: number
  /** When the task that has waited longest became due, if any is due. */
  oldestDueAt?: Date
  /** Attempts per bucket, oldest first: delivered, and every other outcome (failures). */
  attempts: { start: Date; delivered: number; failed: number }[]
  /**
   * Callback hosts with tasks whose last attempt failed (failed, or scheduled again after an
   * error) updated in the span, most first, with the newest error.
   */
  failingHosts: { host: string; tasks: number; lastError: string; lastFailedAt: Date }[]
}

/** One page of {@link CallbackStore.list}. */
export interface TaskPage {
  tasks: CallbackTask[]
  /** Where the next page starts; absent on the last page. */
  cursor?: string
  /**
   * Records of this page the store holds but cannot read (a hand-edited or corrupted record): left
   * out of `tasks`, each with its id and why. The reason never quotes the stored fields.
   */
  unreadable?: Array<{ id: string; reason: string }>
}

/** One signed request for a transport to send. */
export interface TransportRequest {
  url: string
  headers: Record<string, string>
  body: string | Uint8Array
  /** Aborts the exchange (worker stop). */
  signal?: AbortSignal
}

/** What came back. `body` holds at most the transport's `maxResponseBytes`, as text. */
export interface TransportResponse {
  status: number
  headers: Record<string, string | string[] | undefined>
  body: string
  durationMs: number
}

/**
 * Sends one signed request. Rejects with a `DeliveryError` (timeout, connection, DNS, TLS) or a
 * `UrlPolicyError` (the address is refused) when no response arrives.
 */
export interface Transport {
  send(request: TransportRequest): Promise<TransportResponse>
  /**
   * Optional: the longest one `send` may take, ms. Senders check that `leaseMs` exceeds it, so a
   * lease cannot run out while an attempt is still waiting for its answer.
   */
  readonly timeoutMs?: number
  close?(): Promise<void>
}

/** Opt-ins past the default URL policy. */
export interface UrlPolicy {
  /** Allow plain `http:` URLs (local development, tests). Default `false`. */
  allowHttp?: boolean | undefined
  /** Hostnames, IPs or CIDRs allowed although they are (or resolve to) non-public addresses. */
  allowHosts?: string[] | undefined
  /** When given, only these ports may be called. */
  allowPorts?: number[] | undefined
}

/** Retry behaviour of a sender. */
export interface RetryOptions {
  /**
   * Delays in milliseconds before the 2nd, 3rd, … attempt; its length bounds the attempts.
   * Default: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
   */
  schedule?: number[] | undefined
  /** Relative jitter applied to each delay, 0 to 1. Default 0.2 (±20 %). */
  jitter?: number | undefined
  /** A task fails instead of delivering when it is older than this (ms since creation). */
  deadlineMs?: number | undefined
  /** Cap on a `Retry-After` hint, in ms. Default 24 h. */
  maxRetryAfterMs?: number | undefined
  /**
   * Statuses that fail the task at once instead of being retried (e.g. `[400, 422]`). By default
   * every answer but 2xx and 410 Gone is retried on the schedule, as Svix and Stripe do: a 401
   * during a secret rotation and the 404 of a route not deployed yet are usually soon fixed.
   * 3xx to 5xx, except 410.
   */
  failStatuses?: number[] | undefined
}

/**
 * What the worker and `deliver` report as they go, through the sender's `onEvent`. Every attempt
 * that was recorded emits `attempt` first, then exactly one of `delivered`, `retry-scheduled`,
 * `failed` or `cancelled`; an attempt whose record was refused emits only `lease-lost`. `task` is
 * the task as the attempt left it (status, `attempts`, `nextAttemptAt`, `lastError`), without its
 * own `secret`, so events can go to logs as they are.
 *
 * - `attempt`: an attempt was made and recorded (`attempt.status` or `attempt.error` says how it went).
 * - `delivered`: the receiver answered 2xx; the task is done.
 * - `retry-scheduled`: the attempt failed in a way worth retrying; the next one is stored as due at
 *   `nextAttemptAt` and any worker sharing the store will make it.
 * - `failed`: the task ended without delivery (a status listed in `retry.failStatuses`, no
 *   attempts left, the deadline passed); `reason` is the task's `lastError`. A `pending` task whose
 *   result never came (`pendingTimeoutMs`) fails without an attempt, with reason
 *   `ERR_CALLBACK_PENDING_EXPIRED: …`, emitted by the worker that expired it.
 * - `cancelled`: the receiver answered 410 Gone; the task ends without further attempts.
 * - `lease-lost`: the attempt was made but its lease had run out and another worker had claimed the
 *   task (or it was cancelled meanwhile), so nothing was recorded; the receiver may see a duplicate.
 * - `destination-unhealthy`: a destination's circuit breaker opened (or a probe failed): its due
 *   tasks wait, spending no attempts, until one probe is sent at `until`; `reason` is the failure.
 * - `destination-recovered`: a probe got through; the destination's tasks flow again.
 * - `destination-throttled`: the receiver answered 429/502/503/504 with `Retry-After`; the
 *   destination's other tasks wait until `until` without spending attempts.
 * - `error`: the store failed while the worker claimed, released or recorded (the worker backs off
 *   and goes on), or an attempt rejected. With no `onEvent` listener, each distinct cause is
 *   printed to stderr once instead, so a misconfigured worker is never silent.
 *
 * @example
 * ```ts
 * const sender = {
 *   store,
 *   secret,
 *   onEvent(event: DeliveryEvent) {
 *     if (event.type === 'failed') log.warn({ task: event.task.id, reason: event.reason }, 'callback failed')
 *     if (event.type === 'error') log.error(event.error)
 *   },
 * }
 * ```
 */
export type DeliveryEvent =
  | { type: 'attempt'; task: CallbackTask; attempt: AttemptRecord }
  | { type: 'delivered'; task: CallbackTask; attempt: AttemptRecord }
  | { type: 'retry-scheduled'; task: CallbackTask; attempt: AttemptRecord; nextAttemptAt: Date }
  | { type: 'failed'; task: CallbackTask; attempt?: AttemptRecord; reason: string }
  | { type: 'cancelled'; task: CallbackTask; attempt?: AttemptRecord }
  | { type: 'lease-lost'; task: CallbackTask; attempt: AttemptRecord }
  | { type: 'destination-unhealthy'; destination: string; reason: string; until: Date }
  | { type: 'destination-recovered'; destination: string }
  | { type: 'destination-throttled'; destination: string; reason: string; until: Date }
  | { type: 'error'; error: unknown }

/** The `type` of every {@link DeliveryEvent}: `'attempt' | 'delivered' | …`. */
export type DeliveryEventType = DeliveryEvent['type']

/**
 * The event of one type, for handlers that take only that one.
 *
 * @example
 * ```ts
 * function onFailed(event: DeliveryEventOf<'failed'>) {
 *   alert(`callback ${event.task.id} to ${event.task.callbackUrl} failed: ${event.reason}`)
 * }
 * ```
 */
export type DeliveryEventOf<T extends DeliveryEventType> = Extract<DeliveryEvent, { type: T }>

/**
 * Hooks around every delivery attempt, for tracing and metrics. `endpoint-callback/otel` provides
 * one for OpenTelemetry; anything with `startAttempt` will do. Without one, an attempt costs a single
 * `undefined` check.
 *
 * @example
 * ```ts
 * const instrumentation: DeliveryInstrumentation = {
 *   startAttempt(task, attempt) {
 *     const started = performance.now()
 *     return { end: (record) => histogram.record(performance.now() - started, { outcome: record.outcome }) }
 *   },
 * }
 * const sender = { store, secret, instrumentation }
 * ```
 */
export interface DeliveryInstrumentation {
  /**
   * Called when an attempt on `task` starts (`attempt` is its number, 1 for the first), before the
   * request is signed. Must not throw.
   */
  startAttempt(task: CallbackTask, attempt: number): AttemptInstrumentation
}

/** One attempt's hooks, as {@link DeliveryInstrumentation.startAttempt} returns them. */
export interface AttemptInstrumentation {
  /**
   * Headers added to this attempt's request (e.g. `traceparent`). They cannot replace the
   * `webhook-*` or `content-type` headers, and like every header they are outside the signature.
   */
  headers?: Record<string, string>
  /**
   * Called once when the attempt is over, before it is recorded: `attempt` is the record as it
   * will be stored (its `outcome` final), `error` what the transport threw when no response came.
   */
  end(attempt: AttemptRecord, error?: unknown): void
}

/** The options object shared by `createCallbackTask`, `deliver` and `createWorker`. */
export interface SenderOptions {
  store: CallbackStore
  /**
   * How requests are sent. Default: `createHttpTransport({ urlPolicy })`, created on first use and
   * shared by every options object with the same `urlPolicy` object (so `{ ...sender, … }` reuses
   * its connections). Pass your own to close it on shutdown. One URL policy governs both: a
   * `createHttpTransport` made without a `urlPolicy` obeys the sender's (through a twin closed with
   * it), and one made with its own must agree with the sender's, or the sender is refused.
   */
  transport?: Transport | undefined
  /** `whsec_…` secret(s); several sign with each (rotation). */
  secret?: string | string[] | undefined
  /** `whsk_…` Ed25519 signing key(s) (`v1a`). */
  signingKey?: string | string[] | undefined
  /**
   * A key ring (`createKeyRing`): a task without its own secret is signed with every key the ring
   * says signs at that instant (`v1a`), besides `secret` and `signingKey` if given. Publish the
   * ring with `createJwksHandler(ring)` so receivers can verify through `jwks`.
   */
  keyRing?: KeyRing | undefined
  /**
   * Before each attempt, prove that the callback URL wants callbacks from this sender (a signed
   * challenge it must echo; `verifyIntent` in `endpoint-callback`). A URL that does not echo is
   * never sent the payload: the task fails. Default `false`; a task can ask for it on its own.
   */
  verifyIntent?: boolean | undefined
  /**
   * Who asked for a task's callbacks (e.g. the client's account id, kept in `task.metadata`),
   * named in the signed intent challenge so the receiver can refuse a challenge meant for somebody
   * else (`acceptIntent`). With one secret shared by several clients, set it together with
   * `verifyIntent: true`; otherwise one client can have another's receiver accept its callbacks.
   *
   * @example
   * ```ts
   * const sender = { store, secret, verifyIntent: true, intentSubscriber: (task) => task.metadata?.account as string }
   * ```
   */
  intentSubscriber?: (task: CallbackTask) => string | undefined
  urlPolicy?: UrlPolicy | undefined
  retry?: RetryOptions | undefined
  /**
   * How long a claim holds a task, ms. Default 60 000. An attempt (its quick retries and intent
   * verification included) ends within the lease minus a tenth of it (at most 1 s), kept to record
   * it: so the lease must exceed the transport's timeout (twice it with `verifyIntent`) by that much.
   * The worker also gives up on a store call after `leaseMs`.
   */
  leaseMs?: number | undefined
  /** The clock. Default `() => new Date()`. */
  now?: (() => Date) | undefined
  /** Called with every {@link DeliveryEvent}; a listener that throws never disturbs a delivery. */
  onEvent?: ((event: DeliveryEvent) => void) | undefined
  /** Tracing and metrics around each attempt, e.g. `createOpenTelemetry()` from `endpoint-callback/otel`. */
  instrumentation?: DeliveryInstrumentation | undefined
  /**
   * For `createCallbackTask`: which destination a task belongs to, for the worker's
   * per-destination limits, throttling and circuit breaker. Default: the callback URL's origin
   * (`https://hooks.example.com`). Return a tenant's id, say, to limit all of a client's URLs as one.
   *
   * @example
   * ```ts
   * const sender = { store, secret, destination: (task) => String(task.metadata?.tenant ?? new URL(task.callbackUrl).origin) }
   * ```
   */
  destination?: ((task: Pick<NewCallbackTask, 'id' | 'callbackUrl' | 'event' | 'idempotencyKey' | 'metadata'>) => string) | undefined
  /**
   * The caller's open transaction (outbox): `createCallbackTask` inserts the task with it, and
   * `deliver` attaches the result with it and leaves the sending to a worker, after the commit.
   * The PostgreSQL store takes a client after `BEGIN` (anything with `query`, never the pool); the
   * memory and Redis stores cannot join a transaction and throw a `TypeError`.
   */
  transaction?: unknown
  /**
   * How long a `pending` task waits for its result (`deliver`) before it fails with
   * `ERR_CALLBACK_PENDING_EXPIRED` — say the process that accepted the job died before it
   * finished. A task's `deadline` ends it sooner. Default 24 h; `Infinity` keeps it waiting.
   */
  pendingTimeoutMs?: number | undefined
  /**
   * Every task brings its own `secret` (`createCallbackTask` refuses one without), so the sender
   * needs no `secret`, `signingKey` or `keyRing` of its own. Without this, a sender with no key is
   * refused when its options are first resolved. Default `false`.
   */
  requireTaskSecret?: boolean | undefined
}

/**
 * What `deliver` resolves with. With `transaction`, nothing is sent inline: `retrying` with
 * `attempts: 0` and `nextAttemptAt` (now), for a worker to send after the commit.
 */
export interface DeliveryReport {
  status: 'delivered' | 'retrying' | 'failed' | 'cancelled'
  attempts: number
  nextAttemptAt?: Date
  response?: { status: number; body: string; durationMs: number }
  error?: string
}

/** A callback that verified. */
export interface VerifiedCallback<T = unknown> {
  /** `webhook-id`: the same on every attempt; dedupe on it. */
  id: string
  /** `webhook-timestamp` of this attempt. */
  timestamp: Date
  /** The body's `type` (the event), when the body is the JSON envelope. */
  type?: string
  /** The body's `data`, when the body is the JSON envelope. */
  data: T
  /** The raw body, as text. */
  body: string
}

/** Header shapes `verifySignature` accepts. */
export type HeadersLike =
  | { get(name: string): string | null }
  | Record<string, string | string[] | undefined>

/** Body shapes `verifySignature` accepts: always the raw bytes received. */
export type BodyLike = string | Uint8Array | ArrayBuffer

/** Options of `verifySignature` and of every receiver. */
export interface VerifyOptions {
  /** `whsec_…` secret(s); any may match (rotation). */
  secret?: string | string[] | undefined
  /** `whpk_…` Ed25519 public key(s). */
  publicKey?: string | string[] | undefined
  /**
   * The sender's published keys: its JWKS URL (https), or a `createRemoteJwks(url, options)` for
   * other fetch options (e.g. `allowHttp` in development). `v1a` signatures are checked against
   * these keys as well; when none matches, the JWKS is fetched again once (at most once per
   * cooldown) in case the sender rotated. When the keys cannot be loaded, verification rejects
   * with a `CallbackError` coded `ERR_CALLBACK_JWKS` (receivers answer 503 with `retry-after`).
   */
  jwks?: RemoteJwks | string | undefined
  /** Allowed clock skew, both ways, seconds. Default 300. */
  toleranceSeconds?: number | undefined
  now?: (() => Date) | undefined
}

/**
 * Remembers which `webhook-id`s a receiver has processed, so a redelivery is acknowledged without
 * running the handler twice. A duplicate is acknowledged only once an earlier delivery with the same
 * id was answered 2xx; while that one is still in flight the duplicate gets 409; a delivery whose
 * handler failed is forgotten, so the sender's retry is processed again.
 */
export interface ReplayGuard {
  /**
   * Atomically marks `id` as in flight when it is unknown and answers `'new'`; otherwise answers
   * `'in-flight'` or `'done'` and changes nothing.
   */
  begin(id: string): Promise<'new' | 'in-flight' | 'done'>
  /** The handler answered 2xx: remember `id` as done. */
  remember(id: string): Promise<void>
  /** The handler failed: forget `id`, so a retry is processed again. */
  forget(id: string): Promise<void>
}
