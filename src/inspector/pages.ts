/**
 * The inspector's pages as markup: overview, search, task, and the short pages that say why
 * nothing else is shown. Everything from the store passes through `html`, so it is escaped.
 */
import { attemptsChart } from './chart.ts'
import { html } from './html.ts'
import type { Html } from './html.ts'
import type { Overview } from './overview.ts'
import { TASK_STATUSES } from '../stores/task-list.ts'
import type { AttemptRecord, CallbackTask, DestinationState, TaskPage, TaskStatus } from '../types.ts'

/** What every page needs to know about the request it answers. */
export interface PageContext {
  /** Where the inspector is mounted, without a trailing slash ('' at the root). */
  base: string
  title: string
  /** The CSRF token to put in action forms. */
  csrf: string
  readOnly: boolean
}

/** The search form's fields, as given (text), and the query they make. */
export interface SearchForm {
  status: string
  event: string
  host: string
  id: string
  key: string
  from: string
  to: string
}

export function layout(context: PageContext, heading: string, body: Html, refreshSeconds = 0): Html {
  const { base } = context
  return html`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="same-origin">
<title>${heading} · ${context.title}</title>
<link rel="stylesheet" href="${base}/assets/inspector.css">
<script src="${base}/assets/inspector.js" defer></script></head>
<body data-refresh="${refreshSeconds}"><header><h1><a href="${base}/">${context.title}</a></h1>
<nav><a href="${base}/">Overview</a><a href="${base}/tasks">Search</a><a href="${base}/destinations">Destinations</a></nav>${context.readOnly ? html`<span class="muted">read-only</span>` : ''}</header>
<main>${body}</main></body></html>`
}

export function time(at: Date | undefined): Html {
  if (at === undefined) return html`<span class="muted">—</span>`
  const iso = at.toISOString()
  return html`<time datetime="${iso}">${iso}</time>`
}

function statusBadge(status: TaskStatus): Html {
  return html`<span class="status status-${status}">${status}</span>`
}

function number(value: number, cap?: number): string {
  const text = value.toLocaleString('en-US')
  return cap !== undefined && value >= cap ? `${text}+` : text
}

function searchHref(base: string, query: Record<string, string>): string {
  const params = new URLSearchParams(Object.entries(query).filter(([, value]) => value !== ''))
  const text = params.toString()
  return `${base}/tasks${text === '' ? '' : `?${text}`}`
}

/** A callback URL's host, for display and links. */
function hostOf(url: string): string {
  try {
    return new URL(url).hostname
  } catch {
    return ''
  }
}

export function overviewPage(context: PageContext, overview: Overview, now: Date, countCap: number, refreshSeconds: number): Html {
  const { base } = context
  const { summary } = overview
  const lastHour = summary.attempts[summary.attempts.length - 1] ?? { delivered: 0, failed: 0 }
  const day = summary.attempts.reduce((sum, bucket) => ({ delivered: sum.delivered + bucket.delivered, failed: sum.failed + bucket.failed }), { delivered: 0, failed: 0 })
  const oldestAge = summary.oldestDueAt === undefined ? undefined : Math.max(0, now.getTime() - summary.oldestDueAt.getTime())
  const body = html`
<section><h2>Tasks by status</h2><div class="cards">
${TASK_STATUSES.map((status) => html`<a class="card" href="${searchHref(base, { status })}" data-status="${status}"><div class="label">${status}</div><div class="value">${count(summary, status, countCap)}</div></a>`)}
</div>${overview.sampledTasks === undefined ? '' : html`<p class="muted">Counted among the newest ${number(overview.sampledTasks)} tasks: this store has no summary of its own.</p>`}</section>
<section><h2>Backlog</h2><div class="cards">
<div class="card" data-figure="due"><div class="label">due now</div><div class="value">${number(summary.due, countCap)}</div></div>
<div class="card" data-figure="oldest-due"><div class="label">oldest due for</div><div class="value">${oldestAge === undefined ? '—' : duration(oldestAge)}</div></div>
</div></section>
<section><h2>Attempts</h2><div class="cards">
<div class="card" data-figure="delivered-hour"><div class="label">delivered, last hour</div><div class="value">${number(lastHour.delivered)}</div></div>
<div class="card" data-figure="failed-hour"><div class="label">failed, last hour</div><div class="value">${number(lastHour.failed)}</div></div>
<div class="card" data-figure="delivered-day"><div class="label">delivered, last 24 h</div><div class="value">${number(day.delivered)}</div></div>
<div class="card" data-figure="failed-day"><div class="label">failed, last 24 h</div><div class="value">${number(day.failed)}</div></div>
</div>
<p class="legend"><span class="delivered">delivered</span> <span class="failed">failed (retried or given up)</span> <span class="muted">per hour, UTC</span></p>
${attemptsChart(summary.attempts, `Attempts per hour over the last 24 hours: ${day.delivered} delivered, ${day.failed} failed`)}</section>
<section><h2>Destinations failing most (last 24 h)</h2>
${summary.failingHosts.length === 0
  ? html`<p class="muted">No failing destination.</p>`
  : html`<table class="failing"><thead><tr><th>host</th><th class="num">failing tasks</th><th>last error</th><th>when</th></tr></thead><tbody>
${summary.failingHosts.map((host) => html`<tr><td><a href="${searchHref(base, { host: host.host })}">${host.host}</a></td><td class="num">${number(host.tasks)}</td><td class="error mono">${host.lastError}</td><td>${time(host.lastFailedAt)}</td></tr>`)}
</tbody></table>`}</section>`
  return layout(context, 'Overview', body, refreshSeconds)
}

/** A status's count: exact below the cap, then the store's estimate (≈) or the cap and a plus. */
function count(summary: Overview['summary'], status: TaskStatus, cap: number): Html {
  const estimate = summary.estimates?.[status]
  if (summary.counts[status] < cap || estimate === undefined) return html`${number(summary.counts[status], cap)}`
  return html`<span title="more than ${number(cap)}: estimated from the database’s statistics">≈ ${number(estimate)}</span>`
}

function duration(ms: number): string {
  if (ms < 60_000) return `${Math.round(ms / 1000)} s`
  if (ms < 3_600_000) return `${Math.round(ms / 60_000)} min`
  if (ms < 86_400_000) return `${(ms / 3_600_000).toFixed(1)} h`
  return `${(ms / 86_400_000).toFixed(1)} days`
}

function hiddenFields(form: SearchForm): Html {
  return html`${Object.entries(form).map(([name, value]) => (value === '' ? '' : html`<input type="hidden" name="${name}" value="${value}">`))}`
}

export function searchPage(context: PageContext, form: SearchForm, page: TaskPage | undefined, problem: string | undefined, notice: Html | undefined): Html {
  const { base } = context
  const field = (name: keyof SearchForm, label: string, placeholder: string) =>
    html`<label>${label}<input name="${name}" value="${form[name]}" placeholder="${placeholder}"></label>`
  const canRedeliver = !context.readOnly && (form.status === '' || form.status === 'failed') && page !== undefined && page.tasks.some((task) => task.status === 'failed')
  const next = page?.cursor === undefined ? undefined : searchHref(base, { ...form, cursor: page.cursor })
  const body = html`${notice ?? ''}
<form class="search" method="get" action="${base}/tasks">
<label>status<select name="status"><option value="">any</option>${TASK_STATUSES.map((status) => html`<option${status === form.status ? html` selected` : ''}>${status}</option>`)}</select></label>
${field('host', 'callback host', 'hooks.example.com')}${field('event', 'event', 'report.ready')}${field('id', 'task id', 'msg_…')}${field('key', 'idempotency key', '')}
${field('from', 'updated from (UTC)', '2026-01-31T09:00Z')}${field('to', 'updated before (UTC)', '2026-01-31T18:00Z')}
<button type="submit">Search</button></form>
${problem === undefined ? '' : html`<p class="notice bad">${problem}</p>`}
${page === undefined
  ? ''
  : page.tasks.length === 0
    ? html`<p class="muted">No task matches.</p>`
    : html`<table class="tasks"><thead><tr><th>task</th><th>status</th><th>event</th><th>host</th><th class="num">attempts</th><th>updated</th><th>next attempt</th><th>last error</th></tr></thead><tbody>
${page.tasks.map((task) => html`<tr data-task="${task.id}"><td class="mono"><a href="${base}/tasks/${encodeURIComponent(task.id)}">${task.id}</a></td><td>${statusBadge(task.status)}</td><td>${task.event}</td><td>${hostOf(task.callbackUrl)}</td><td class="num">${task.attempts}</td><td>${time(task.updatedAt)}</td><td>${task.status === 'scheduled' ? time(task.nextAttemptAt) : ''}</td><td class="error mono">${task.lastError ?? ''}</td></tr>`)}
</tbody></table>`}
<p>${next === undefined ? '' : html`<a rel="next" href="${next}">Next page →</a>`}</p>
${canRedeliver
  ? html`<form method="post" action="${base}/actions/redeliver-failed" class="inline"><input type="hidden" name="csrf" value="${context.csrf}">${hiddenFields(form)}
<button type="submit" class="danger">Redeliver every failed task matching this search</button></form>`
  : ''}`
  return layout(context, 'Search', body)
}

export function taskPage(context: PageContext, task: CallbackTask, attempts: AttemptRecord[], notice: Html | undefined): Html {
  const { base } = context
  const action = (name: string, label: string, danger = false) =>
    html`<form method="post" action="${base}/tasks/${encodeURIComponent(task.id)}/${name}" class="inline"><input type="hidden" name="csrf" value="${context.csrf}"><button type="submit"${danger ? html` class="danger"` : ''} data-action="${name}">${label}</button></form>`
  const terminal = task.status === 'delivered' || task.status === 'failed' || task.status === 'cancelled'
  const actions = context.readOnly
    ? ''
    : html`<p class="actions">${task.status === 'failed' ? action('redeliver', 'Redeliver now') : ''} ${terminal ? '' : action('cancel', 'Cancel', true)}</p>`
  const body = html`${notice ?? ''}
<h2 class="mono">${task.id} ${statusBadge(task.status)}</h2>${actions}
<dl class="fields">
<dt>callback URL</dt><dd class="mono" data-field="callbackUrl">${task.callbackUrl}</dd>
<dt>event</dt><dd>${task.event}</dd>
<dt>idempotency key</dt><dd class="mono">${task.idempotencyKey ?? '—'}</dd>
<dt>attempts</dt><dd>${task.attempts}</dd>
<dt>next attempt</dt><dd>${task.status === 'scheduled' || task.status === 'delivering' ? time(task.nextAttemptAt) : '—'}</dd>
<dt>deadline</dt><dd>${time(task.deadline)}</dd>
<dt>created</dt><dd>${time(task.createdAt)}</dd>
<dt>updated</dt><dd>${time(task.updatedAt)}</dd>
<dt>last error</dt><dd class="error mono">${task.lastError ?? '—'}</dd>
<dt>signing</dt><dd>${task.secret === undefined ? 'the sender’s keys' : 'the task’s own secret (not shown)'}${task.encryptionKey === undefined ? '' : ', body encrypted for the receiver'}</dd>
</dl>
<h2>Metadata</h2>${task.metadata === undefined ? html`<p class="muted">None.</p>` : html`<pre data-field="metadata">${JSON.stringify(task.metadata, null, 2)}</pre>`}
<h2>Envelope</h2>${task.body === undefined ? html`<p class="muted">No result attached yet.</p>` : html`<pre data-field="body">${pretty(task.body)}</pre>`}
<h2>Attempts</h2>${attempts.length === 0
  ? html`<p class="muted">No attempt yet.</p>`
  : html`<ol class="timeline">${attempts.map((attempt) => html`<li class="attempt outcome-${attempt.outcome}" data-attempt="${attempt.attempt}">
<strong>#${attempt.attempt}</strong> ${time(attempt.startedAt)} · ${attempt.status === undefined ? html`<span class="error">${attempt.error ?? 'no response'}</span>` : `HTTP ${attempt.status}`} · ${Math.round(attempt.durationMs)} ms · <span class="outcome">${attempt.outcome}</span>
${attempt.responseBody === undefined || attempt.responseBody === '' ? '' : html`<pre class="response">${attempt.responseBody}</pre>`}</li>`)}</ol>`}`
  return layout(context, task.id, body)
}

function pretty(body: string): string {
  try {
    return JSON.stringify(JSON.parse(body), null, 2)
  } catch {
    return body
  }
}

/**
 * The destinations the store reports (held back, with attempts in flight or tasks due), or why
 * there are none to show: `undefined` when the store keeps no destinations.
 */
export function destinationsPage(context: PageContext, destinations: DestinationState[] | undefined): Html {
  const { base } = context
  let body: Html
  if (destinations === undefined) {
    body = html`<p class="muted" data-destinations="unsupported">This store keeps no destinations (it has no <code>listDestinations</code>): there are no per-destination limits, throttles or circuit breakers to show.</p>`
  } else if (destinations.length === 0) {
    body = html`<p class="muted" data-destinations="none">No destination is held back, has attempts in flight or tasks due.</p>`
  } else {
    body = html`<table class="destinations"><thead><tr><th>destination</th><th>state</th><th class="num">in flight</th><th class="num">due</th><th>held until</th><th class="num">breaker openings</th><th>last error</th></tr></thead><tbody>
${destinations.map((one) => {
  const host = hostOf(one.destination)
  const name = host === '' ? html`${one.destination}` : html`<a href="${searchHref(base, { host })}">${one.destination}</a>`
  return html`<tr data-destination="${one.destination}"><td class="mono">${name}</td><td><span class="dest-state dest-${one.state}">${one.state}</span></td><td class="num">${number(one.inFlight)}</td><td class="num">${number(one.due)}</td><td>${time(one.until)}</td><td class="num">${number(one.openings)}</td><td class="error mono">${one.lastError ?? ''}</td></tr>`
})}
</tbody></table>`
  }
  return layout(
    context,
    'Destinations',
    html`<section><h2>Destinations</h2><p class="legend muted">closed: healthy · throttled: the receiver asked to wait (Retry-After) · open: its circuit breaker holds its tasks until a probe · probing: that probe is in flight. Held tasks spend no attempt.</p>${body}</section>`
  )
}

export function messagePage(context: PageContext, heading: string, message: string): Html {
  return layout(context, heading, html`<h2>${heading}</h2><p class="notice bad">${message}</p>`)
}

/** The notices an action leaves behind, by the fixed key it puts in the URL. */
export function noticeFor(key: string | null, count: string | null): Html | undefined {
  switch (key) {
    case 'redelivered':
      return html`<p class="notice" role="status">Redelivered: the task is due now; a running worker will send it.</p>`
    case 'cancelled':
      return html`<p class="notice" role="status">Cancelled: the task will not be attempted again.</p>`
    case 'redelivered-all':
      return html`<p class="notice" role="status">Redelivered ${/^\d+$/.test(count ?? '') ? count : '0'} failed tasks: they are due now.</p>`
    default:
      return undefined
  }
}
