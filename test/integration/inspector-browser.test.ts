/**
 * The inspector in a real browser (Debian's Chromium, driven by playwright-core), mounted in a real
 * Express app over the real PostgreSQL store, with a running worker delivering over real HTTP to
 * loopback receivers. Screenshots of the overview and of a task page are written to
 * test-output/inspector/ for a reviewer to look at.
 */
import assert from 'node:assert/strict'
import { existsSync } from 'node:fs'
import { mkdir, mkdtemp, rm } from 'node:fs/promises'
import { createServer } from 'node:http'
import type { Server } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import express from 'express'
import pg from 'pg'
import { chromium } from 'playwright-core'
import type { BrowserContext, Page } from 'playwright-core'
import { createHttpTransport, createWorker, generateSecret } from 'endpoint-callback'
import type { SenderOptions } from 'endpoint-callback'
import { createInspector, expressInspector } from 'endpoint-callback/inspector'
import { createPostgresStore, migratePostgres } from 'endpoint-callback/postgres'
import { HOSTILE_BODY, HOSTILE_METADATA, seedTasks } from '../support/inspector-seed.ts'
import type { SeededTasks } from '../support/inspector-seed.ts'
import { scriptedResolver } from '../support/ssrf.ts'
import { DATABASE_URL, serviceSkip, serviceTests, uniqueName } from '../support/services.ts'

const CHROMIUM = '/usr/bin/chromium'
const postgresSkip = await serviceSkip('postgres')
const browserSkip = existsSync(CHROMIUM) ? false : `${CHROMIUM} is not installed (apt-get install -y chromium)`
if (browserSkip && process.env.CI === 'true') throw new Error(`${browserSkip}, and CI requires it`)
const OUTPUT = fileURLToPath(new URL('../../test-output/inspector/', import.meta.url))
const BASE = '/admin/callbacks'
const OPERATOR = 'operator-token-for-tests'

/** Polls `check` every 100 ms until it holds, failing with `what` after `ms`. */
async function eventually(what: string, check: () => Promise<boolean>, ms = 10_000): Promise<void> {
  const until = Date.now() + ms
  while (!(await check())) {
    if (Date.now() > until) throw new Error(`${what} did not happen within ${ms} ms`)
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
}

const { after, before, describe, test } = serviceTests(postgresSkip || browserSkip)

describe('the inspector in Chromium over PostgreSQL', () => {
  let pool: pg.Pool
  let schema: string
  let sender: SenderOptions
  let seeded: SeededTasks
  let receiver: Server
  let app: Server
  let origin: string
  let context: BrowserContext
  let page: Page
  let profile: string
  let stopWorker: () => Promise<void>
  let badAnswers = 'hostile' as 'hostile' | 'ok'
  const received: string[] = []
  const consoleErrors: string[] = []

  before(async () => {
    pool = new pg.Pool({ connectionString: DATABASE_URL, max: 6 })
    schema = uniqueName('ec_inspector_browser')
    await migratePostgres(pool, { schema })
    const store = createPostgresStore({ pool, schema })

    // One loopback receiver behind three names: ok.test answers 204, busy.test 503, bad.test 400
    // with markup until the test mends it.
    receiver = createServer((req, res) => {
      const host = (req.headers.host ?? '').split(':')[0]
      received.push(host ?? '')
      req.resume()
      req.on('end', () => {
        if (host === 'busy.test') return void res.writeHead(503).end('busy')
        if (host === 'bad.test' && badAnswers === 'hostile') return void res.writeHead(400, { 'content-type': 'text/html' }).end(HOSTILE_BODY)
        res.writeHead(204).end()
      })
    })
    await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve))
    const port = (receiver.address() as { port: number }).port
    const urlPolicy = { allowHttp: true, allowHosts: ['127.0.0.1'] }
    // every *.test name resolves to loopback: nothing leaves the machine
    const transport = createHttpTransport({ urlPolicy, lookup: scriptedResolver(['127.0.0.1']), timeoutMs: 5000 })
    sender = { store, secret: generateSecret(), transport, urlPolicy, retry: { schedule: [3_600_000], jitter: 0 } }
    seeded = await seedTasks(sender, { ok: `http://ok.test:${port}/hooks`, busy: `http://busy.test:${port}/hooks`, bad: `http://bad.test:${port}/hooks` })

    const web = express()
    web.use(BASE, expressInspector(createInspector({ store, basePath: BASE, authorize: (request) => request.headers.get('x-operator') === OPERATOR, refreshSeconds: 0 })))
    web.use('/readonly', expressInspector(createInspector({ store, basePath: '/readonly', readOnly: true, authorize: (request) => request.headers.get('x-operator') === OPERATOR })))
    web.use('/closed', expressInspector(createInspector({ store, basePath: '/closed', authorize: () => false })))
    app = createServer(web)
    await new Promise<void>((resolve) => app.listen(0, '127.0.0.1', resolve))
    origin = `http://127.0.0.1:${(app.address() as { port: number }).port}`

    const worker = createWorker({ ...sender, pollIntervalMs: 200 })
    worker.start()
    stopWorker = () => worker.stop()

    await mkdir(OUTPUT, { recursive: true })
    profile = await mkdtemp(join(tmpdir(), 'endpoint-callback-chromium-'))
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
      extraHTTPHeaders: { 'x-operator': OPERATOR },
      viewport: { width: 1200, height: 900 },
      timeout: 30_000,
    })
    context.setDefaultTimeout(10_000)
    page = context.pages()[0] ?? (await context.newPage())
    // a script or style the Content-Security-Policy blocked would show here
    page.on('console', (message) => {
      if (message.type() === 'error' && !message.text().startsWith('Failed to load resource')) consoleErrors.push(message.text())
    })
    page.on('response', (response) => {
      // the browser asks the app (not the inspector) for /favicon.ico
      if (response.status() >= 400 && !response.url().endsWith('/favicon.ico')) consoleErrors.push(`${response.status()} ${response.url()}`)
    })
  })

  after(async () => {
    await context?.close()
    if (profile) await rm(profile, { recursive: true, force: true })
    await stopWorker?.()
    await sender?.transport?.close?.()
    await new Promise<void>((resolve) => (app ? app.close(() => resolve()) : resolve()))
    await new Promise<void>((resolve) => (receiver ? receiver.close(() => resolve()) : resolve()))
    await (sender?.store as { close?: () => Promise<void> } | undefined)?.close?.()
    if (pool) {
      await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`)
      await pool.end()
    }
  })

  const count = async (status: string) => (await page.locator(`[data-status="${status}"] .value`).textContent())?.trim()

  test('the overview shows the seeded tasks counted by status, the failing destination and the chart', async () => {
    const response = await page.goto(`${origin}${BASE}/`)
    assert.equal(response?.status(), 200)
    assert.equal(await count('delivered'), '1')
    assert.equal(await count('scheduled'), '1')
    assert.equal(await count('failed'), '1')
    assert.equal(await count('pending'), '0')
    assert.equal((await page.locator('[data-figure="delivered-hour"] .value').textContent())?.trim(), '1')
    assert.equal((await page.locator('[data-figure="failed-hour"] .value').textContent())?.trim(), '2')
    const failing = await page.locator('table.failing tbody tr').evaluateAll((rows) => rows.map((row) => [...row.querySelectorAll('td')].slice(0, 3).map((cell) => cell.textContent)))
    assert.deepEqual(failing.sort(), [['bad.test', '1', 'HTTP 400'], ['busy.test', '1', 'HTTP 503']])
    assert.equal(await page.locator('svg.chart rect.bar-delivered').count(), 24)
    await page.screenshot({ path: join(OUTPUT, 'overview.png'), fullPage: true })
  })

  test('a search by host and by status finds exactly the seeded tasks', async () => {
    await page.goto(`${origin}${BASE}/tasks`)
    await page.fill('input[name="host"]', 'busy.test')
    await page.click('form.search button[type="submit"]')
    assert.deepEqual(await page.locator('tr[data-task]').evaluateAll((rows) => rows.map((row) => row.getAttribute('data-task'))), [seeded.retrying])
    await page.fill('input[name="host"]', '')
    await page.selectOption('select[name="status"]', 'failed')
    await page.click('form.search button[type="submit"]')
    assert.deepEqual(await page.locator('tr[data-task]').evaluateAll((rows) => rows.map((row) => row.getAttribute('data-task'))), [seeded.failed])
    await page.screenshot({ path: join(OUTPUT, 'search.png'), fullPage: true })
    await page.goto(`${origin}${BASE}/tasks?host=ok.test&status=delivered`)
    assert.deepEqual(await page.locator('tr[data-task]').evaluateAll((rows) => rows.map((row) => row.getAttribute('data-task'))), [seeded.delivered])
  })

  test('a task page shows its attempt, and the receiver’s markup and the client’s metadata as text that runs nothing', async () => {
    await page.goto(`${origin}${BASE}/tasks/${seeded.failed}`)
    assert.equal(await page.locator('li.attempt').count(), 1)
    assert.match((await page.locator('li.attempt').textContent()) ?? '', /HTTP 400/)
    assert.equal(await page.locator('li.attempt pre.response').textContent(), HOSTILE_BODY)
    assert.deepEqual(JSON.parse((await page.locator('pre[data-field="metadata"]').textContent()) ?? ''), HOSTILE_METADATA)
    assert.equal(await page.locator('main img, main script, main b').count(), 0, 'no element came out of the answer or the metadata')
    await page.hover('pre[data-field="metadata"]')
    assert.equal(await page.evaluate(() => (globalThis as { __pwned?: unknown }).__pwned), undefined, 'nothing ran')
    assert.match((await page.locator('time').first().textContent()) ?? '', /ago$/, 'the inspector’s own script ran')
    assert.deepEqual(consoleErrors, [], 'nothing was blocked or broke')
    await page.screenshot({ path: join(OUTPUT, 'task.png'), fullPage: true })
  })

  test('clicking redeliver makes the task due, a running worker delivers it, and the page shows the new attempt', async () => {
    badAnswers = 'ok'
    await page.goto(`${origin}${BASE}/tasks/${seeded.failed}`)
    await page.click('button[data-action="redeliver"]')
    await page.waitForURL(/notice=redelivered/)
    assert.match((await page.locator('[role="status"]').textContent()) ?? '', /Redelivered/)
    await eventually('the worker delivering the redelivered task', async () => (await sender.store.get(seeded.failed))?.status === 'delivered')
    await page.reload()
    const attempts = page.locator('li.attempt')
    assert.equal(await attempts.count(), 2)
    assert.match((await attempts.nth(1).textContent()) ?? '', /HTTP 204.*delivered/s)
    assert.equal(await page.locator('button[data-action]').count(), 0, 'a delivered task offers no action')
    await page.screenshot({ path: join(OUTPUT, 'task-redelivered.png'), fullPage: true })
  })

  test('the destinations page, reached from the menu, shows a held destination and its last error as text', async () => {
    const until = new Date(Date.now() + 600_000)
    const destination = 'http://held.test:1'
    await sender.store.setDestination!(destination, { state: 'open', until, reason: `ERR_CALLBACK_TIMEOUT: ${HOSTILE_BODY}`, openings: 3 }, new Date())
    try {
      await page.goto(`${origin}${BASE}/`)
      await page.click('nav a:text("Destinations")')
      await page.waitForURL(/\/destinations$/)
      const row = page.locator(`tr[data-destination="${destination}"]`)
      const cells = await row.locator('td').evaluateAll((tds) => tds.map((td) => td.textContent?.trim()))
      assert.deepEqual([cells[0], cells[1], cells[2], cells[3], cells[5]], [destination, 'open', '0', '0', '3'])
      assert.equal(await row.locator('td.error').textContent(), `ERR_CALLBACK_TIMEOUT: ${HOSTILE_BODY}`)
      assert.equal(await page.locator('main img, main script, main b').count(), 0, 'no element came out of the reason')
      assert.deepEqual(consoleErrors, [], 'nothing was blocked or broke')
      await page.screenshot({ path: join(OUTPUT, 'destinations.png'), fullPage: true })
    } finally {
      await sender.store.setDestination!(destination, null, new Date())
    }
  })

  test('readOnly leaves no action on the page and refuses a posted one', async () => {
    await page.goto(`${origin}/readonly/tasks/${seeded.retrying}`)
    assert.equal(await page.locator('li.attempt').count(), 1)
    assert.equal(await page.locator('form[method="post"], button[data-action]').count(), 0)
    await page.goto(`${origin}/readonly/tasks?status=failed`)
    assert.equal(await page.locator('form[method="post"]').count(), 0)
    const posted = await fetch(`${origin}/readonly/tasks/${seeded.retrying}/cancel`, {
      method: 'POST',
      headers: { 'x-operator': OPERATOR, origin, 'content-type': 'application/x-www-form-urlencoded' },
      body: 'csrf=whatever',
    })
    assert.equal(posted.status, 403)
    assert.equal((await sender.store.get(seeded.retrying))?.status, 'scheduled')
  })

  test('without authorize nothing is served: creating it is refused, and a refusing authorize shows nothing', async () => {
    assert.throws(() => createInspector({ store: sender.store }), (error: Error) => error instanceof TypeError && /authorize/.test(error.message))
    consoleErrors.length = 0 // refusals are expected from here on
    for (const path of ['/closed/', `/closed/tasks/${seeded.failed}`, '/closed/tasks?status=failed']) {
      const response = await page.goto(`${origin}${path}`)
      assert.equal(response?.status(), 403, path)
      const text = await page.content()
      for (const id of Object.values(seeded)) assert.ok(!text.includes(id), `${path} shows no task`)
    }
  })
})
