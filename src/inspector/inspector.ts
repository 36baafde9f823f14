/**
 * The framework-free inspector: one `(request: Request) => Promise<Response>` that answers every
 * page and action under its base path. The framework mounts only translate requests and responses.
 */
import { stylesheet, script } from './assets.ts'
import { csrfRefusal, csrfSetCookie, csrfTokenOf, newCsrfToken } from './csrf.ts'
import { htmlText } from './html.ts'
import type { Html } from './html.ts'
import { overviewQuery, readOverview } from './overview.ts'
import { destinationsPage, layout, messagePage, noticeFor, overviewPage, searchPage, taskPage } from './pages.ts'
import type { PageContext, SearchForm } from './pages.ts'
import { CallbackError } from '../errors.ts'
import { cancelTask, listAttempts, redeliverFailed, redeliverTask } from '../inspect.ts'
import { TASK_STATUSES } from '../stores/task-list.ts'
import type { CallbackStore, CallbackTask, TaskListQuery, TaskPage, TaskStatus } from '../types.ts'
import { html } from './html.ts'

/** Options of {@link createInspector}. A sender's options object with these added will do. */
export interface InspectorOptions {
  /** The store to inspect: the sender's (memory, PostgreSQL, Redis, or your own with `list`). */
  store: CallbackStore
  /** The clock a redelivered task is due by and the overview counts back from. Default `() => new Date()`. */
  now?: (() => Date) | undefined
  /**
   * Called with every request before anything is read from the store; answer `false` to refuse it
   * (403, nothing shown). Check your session or an operator's header here. Required unless
   * `public: true`.
   */
  authorize?: ((request: Request) => boolean | Promise<boolean>) | undefined
  /** Serve every request without `authorize`: only behind your own access control. Default `false`. */
  public?: boolean | undefined
  /** No actions: no buttons, and every POST answers 403. Default `false`. */
  readOnly?: boolean | undefined
  /** Where the inspector is mounted, e.g. `/admin/callbacks`. Default `''` (the root). */
  basePath?: string | undefined
  /**
   * What of a task may be shown: called with a copy of each task (its own `secret` already
   * removed) before its page is rendered. Return it with fields removed or masked, e.g.
   * `({ body, ...task }) => task`.
   */
  redact?: ((task: CallbackTask) => CallbackTask) | undefined
  /** The page title. Default `Callbacks`. */
  title?: string | undefined
  /** Tasks per search page, 1 to 500. Default 50. */
  pageSize?: number | undefined
  /** Seconds between refreshes of the overview when its script runs; 0 never. Default 15. */
  refreshSeconds?: number | undefined
  /**
   * A count on the overview stops here, so counting stays fast; above it the page shows the
   * store's estimate (`≈ 950,000`, PostgreSQL) or `1,000+`. Default 1 000.
   */
  countCap?: number | undefined
}

/** The inspector: a Web `Request` handler, with the base path it serves. */
export interface Inspector {
  (request: Request): Promise<Response>
  readonly basePath: string
}

const contentSecurityPolicy =
  "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

const securityHeaders: Record<string, string> = {
  'content-security-policy': contentSecurityPolicy,
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'referrer-policy': 'same-origin',
  'cache-control': 'no-store'
}

/**
 * A web page to find, read and repair callbacks, for operators: an overview (counts by status,
 * the due backlog, attempts per hour, the destinations failing most), the destinations (state —
 * closed, throttled, open, probing — attempts in flight, tasks due, held until, last error; from
 * the store's `listDestinations`), a search (status, event,
 * callback host, id, idempotency key, time range), each task with its envelope and attempts, and
 * the actions redeliver, cancel and redeliver every failed task of a search. It renders HTML on
 * the server (works without JavaScript) under a strict Content-Security-Policy, escapes everything
 * that came from a client or a receiver, never shows a secret, and runs actions only from a POST
 * of its own pages (CSRF token and same-origin check).
 *
 * `authorize` is called with every request; without it the inspector must be made `public: true`
 * explicitly. Mount the handler with `expressInspector`, `koaInspector` or `honoInspector`, or
 * call it with any Web `Request`.
 *
 * @example
 * ```ts
 * import { createInspector, expressInspector } from 'endpoint-callback/inspector'
 *
 * const inspector = createInspector({
 *   store: sender.store,
 *   basePath: '/admin/callbacks',
 *   authorize: (request) => request.headers.get('x-operator-token') === process.env.OPERATOR_TOKEN,
 * })
 * app.use('/admin/callbacks', expressInspector(inspector))
 * ```
 */
export function createInspector(options: InspectorOptions): Inspector {
  if (options === null || typeof options !== 'object') throw new TypeError('createInspector: options must be an object with a `store`')
  const { store } = options
  if (store === null || typeof store !== 'object' || typeof store.get !== 'function') {
    throw new TypeError('createInspector: `store` is required (the sender’s store)')
  }
  if (typeof store.list !== 'function') {
    throw new TypeError('createInspector: `store` has no list(): the inspector needs a store that searches (the memory, PostgreSQL and Redis stores do)')
  }
  const authorize = options.authorize
  if (authorize !== undefined && typeof authorize !== 'function') throw new TypeError('createInspector: `authorize` must be a function (request) => boolean')
  if (options.public !== undefined && typeof options.public !== 'boolean') throw new TypeError('createInspector: `public` must be a boolean')
  if (authorize === undefined && options.public !== true) {
    throw new TypeError('createInspector: give `authorize(request)` to decide who may see the callbacks, or `public: true` when your own access control stands in front')
  }
  const readOnly = options.readOnly ?? false
  if (typeof readOnly !== 'boolean') throw new TypeError('createInspector: `readOnly` must be a boolean')
  const basePath = (options.basePath ?? '').replace(/\/+$/, '')
  if (typeof options.basePath !== 'undefined' && (typeof options.basePath !== 'string' || (basePath !== '' && !/^\/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*$/.test(basePath)))) {
    throw new TypeError('createInspector: `basePath` must be a path starting with /, e.g. /admin/callbacks')
  }
  const redact = options.redact ?? ((task: CallbackTask) => task)
  if (typeof redact !== 'function') throw new TypeError('createInspector: `redact` must be a function (task) => task')
  const title = options.title ?? 'Callbacks'
  if (typeof title !== 'string') throw new TypeError('createInspector: `title` must be a string')
  const pageSize = options.pageSize ?? 50
  if (!Number.isSafeInteger(pageSize) || pageSize < 1 || pageSize > 500) throw new TypeError('createInspector: `pageSize` must be an integer from 1 to 500')
  const refreshSeconds = options.refreshSeconds ?? 15
  if (!Number.isSafeInteger(refreshSeconds) || refreshSeconds < 0) throw new TypeError('createInspector: `refreshSeconds` must be an integer >= 0')
  const countCap = options.countCap ?? 1000
  if (!Number.isSafeInteger(countCap) || countCap < 1) throw new TypeError('createInspector: `countCap` must be a positive integer')
  const now = options.now ?? (() => new Date())
  if (typeof now !== 'function') throw new TypeError('createInspector: `now` must be a function returning a Date')
  const inspect = { store, now }

  const respond = (status: number, body: string | Html, headers: Record<string, string> = {}) =>
    new Response(typeof body === 'string' ? body : htmlText(body), {
      status,
      headers: { 'content-type': 'text/html; charset=utf-8', ...securityHeaders, ...headers }
    })

  const redirect = (location: string) => new Response(null, { status: 303, headers: { location, ...securityHeaders } })

  const handle = async (request: Request): Promise<Response> => {
    const url = new URL(request.url)
    const path = url.pathname
    if (path !== basePath && !path.startsWith(`${basePath}/`)) return respond(404, 'Not found', { 'content-type': 'text/plain; charset=utf-8' })
    const route = path.slice(basePath.length) || '/'

    if (authorize !== undefined && (await authorize(request)) !== true) {
      return respond(403, 'Forbidden', { 'content-type': 'text/plain; charset=utf-8' })
    }

    const existing = csrfTokenOf(request)
    const csrf = existing ?? newCsrfToken()
    const cookie: Record<string, string> = existing === undefined ? { 'set-cookie': csrfSetCookie(csrf, basePath, url.protocol === 'https:') } : {}
    const context: PageContext = { base: basePath, title, csrf, readOnly }
    const page = (status: number, body: Html) => respond(status, body, cookie)

    if (request.method === 'GET' || request.method === 'HEAD') {
      if (route === '/assets/inspector.css') return respond(200, stylesheet, { 'content-type': 'text/css; charset=utf-8', 'cache-control': 'max-age=300' })
      if (route === '/assets/inspector.js') return respond(200, script, { 'content-type': 'text/javascript; charset=utf-8', 'cache-control': 'max-age=300' })
      if (route === '/') {
        const at = now()
        const overview = await readOverview(store, overviewQuery(at, countCap))
        return page(200, overviewPage(context, overview, at, countCap, refreshSeconds))
      }
      if (route === '/destinations') {
        const destinations = typeof store.listDestinations === 'function' ? await store.listDestinations(now()) : undefined
        return page(200, destinationsPage(context, destinations))
      }
      const notice = noticeFor(url.searchParams.get('notice'), url.searchParams.get('count'))
      if (route === '/tasks') {
        const form = searchForm(url.searchParams)
        const searched = searchQuery(form)
        if (typeof searched === 'string') return page(400, searchPage(context, form, undefined, searched, notice))
        const cursor = url.searchParams.get('cursor')
        let found: TaskPage
        try {
          found = await store.list!({ ...searched, limit: pageSize, ...(cursor === null || cursor === '' ? {} : { cursor }) })
        } catch (error) {
          if (error instanceof TypeError) return page(400, searchPage(context, form, undefined, error.message, notice))
          throw error
        }
        return page(200, searchPage(context, form, found, undefined, notice))
      }
      const taskRoute = /^\/tasks\/([^/]+)$/.exec(route)
      if (taskRoute !== null) {
        const id = decodeURIComponent(taskRoute[1]!)
        const task = await store.get(id)
        if (task === undefined) return page(404, messagePage(context, 'Not found', `No task ${id}.`))
        const { secret: _secret, ...shown } = task
        const visible = redact({ ...shown, ...(task.secret === undefined ? {} : { secret: '(hidden)' }) })
        return page(200, taskPage(context, visible, await listAttempts(id, inspect), notice))
      }
      return page(404, messagePage(context, 'Not found', `Nothing here: ${route}`))
    }

    if (request.method !== 'POST') return respond(405, 'Method not allowed', { 'content-type': 'text/plain; charset=utf-8', allow: 'GET, HEAD, POST' })
    if (readOnly) return page(403, messagePage(context, 'Read-only', 'This inspector is read-only: it changes nothing.'))
    const type = request.headers.get('content-type') ?? ''
    if (!type.startsWith('application/x-www-form-urlencoded')) return page(415, messagePage(context, 'Refused', 'Actions are posted as forms.'))
    const text = await request.text()
    if (text.length > 16_384) return page(413, messagePage(context, 'Refused', 'The form is too large.'))
    const form = new URLSearchParams(text)
    const refusal = csrfRefusal(request, form)
    if (refusal !== undefined) return page(403, messagePage(context, 'Refused', refusal))

    const actionRoute = /^\/tasks\/([^/]+)\/(redeliver|cancel)$/.exec(route)
    if (actionRoute !== null) {
      const id = decodeURIComponent(actionRoute[1]!)
      try {
        if (actionRoute[2] === 'redeliver') await redeliverTask(id, inspect)
        else await cancelTask(id, inspect)
      } catch (error) {
        if (error instanceof CallbackError && (error.code === 'ERR_CALLBACK_TASK_STATE' || error.code === 'ERR_CALLBACK_TASK_NOT_FOUND')) {
          return page(409, messagePage(context, 'Not done', error.message))
        }
        throw error
      }
      return redirect(`${basePath}/tasks/${encodeURIComponent(id)}?notice=${actionRoute[2] === 'redeliver' ? 'redelivered' : 'cancelled'}`)
    }
    if (route === '/actions/redeliver-failed') {
      const filters = searchForm(form)
      const searched = searchQuery({ ...filters, status: 'failed' })
      if (typeof searched === 'string') return page(400, messagePage(context, 'Refused', searched))
      const { status: _status, since, ...rest } = searched
      const { redelivered } = await redeliverFailed({ ...rest, since: since ?? new Date(0) }, inspect)
      return redirect(`${basePath}/tasks?${new URLSearchParams({ ...nonEmpty(filters), status: 'failed', notice: 'redelivered-all', count: String(redelivered.length) })}`)
    }
    return page(404, messagePage(context, 'Not found', `Nothing here: ${route}`))
  }

  const inspector = async (request: Request): Promise<Response> => {
    try {
      return await handle(request)
    } catch (error) {
      // The reason may hold what a store said about its connection: it stays on the server.
      const context: PageContext = { base: basePath, title, csrf: '', readOnly }
      const code = error instanceof CallbackError ? ` (${error.code})` : ''
      return respond(500, layout(context, 'Error', html`<h2>Error</h2><p class="notice bad">The inspector could not answer${code}.</p>`))
    }
  }
  return Object.assign(inspector, { basePath })
}

function nonEmpty(form: SearchForm): Record<string, string> {
  return Object.fromEntries(Object.entries(form).filter(([, value]) => value !== ''))
}

function searchForm(params: URLSearchParams): SearchForm {
  const get = (name: string) => (params.get(name) ?? '').trim().slice(0, 2048)
  return { status: get('status'), event: get('event'), host: get('host'), id: get('id'), key: get('key'), from: get('from'), to: get('to') }
}

/** The store query of a search form, or why it is not one. */
function searchQuery(form: SearchForm): Omit<TaskListQuery, 'limit' | 'cursor'> | string {
  const query: Omit<TaskListQuery, 'limit' | 'cursor'> = {}
  if (form.status !== '') {
    if (!(TASK_STATUSES as readonly string[]).includes(form.status)) return `status must be one of ${TASK_STATUSES.join(', ')}`
    query.status = form.status as TaskStatus
  }
  if (form.event !== '') query.event = form.event
  if (form.host !== '') query.host = form.host
  if (form.id !== '') query.id = form.id
  if (form.key !== '') query.idempotencyKey = form.key
  for (const [name, field] of [['from', 'since'], ['to', 'until']] as const) {
    if (form[name] === '') continue
    const at = new Date(/[zZ]|[+-]\d\d:?\d\d$/.test(form[name]) ? form[name] : `${form[name]}Z`)
    if (Number.isNaN(at.getTime())) return `${name === 'from' ? 'updated from' : 'updated before'}: not a date and time (2026-01-31T09:00Z)`
    query[field] = at
  }
  return query
}
