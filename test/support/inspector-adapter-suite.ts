/**
 * The contract every inspector mount passes (bull-board's server-adapter suite, for callbacks):
 * pages under the base path with links that keep it, assets served, search, a task page, an action
 * through a form with its CSRF token, the same action refused without one, `authorize` on every
 * request, and a 404 page for what is not there. Each mount's test calls it in one line.
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { createMemoryStore, generateSecret } from 'endpoint-callback'
import type { SenderOptions } from 'endpoint-callback'
import { createInspector } from 'endpoint-callback/inspector'
import type { Inspector } from 'endpoint-callback/inspector'
import { seedTasks } from './inspector-seed.ts'
import type { SeededTasks } from './inspector-seed.ts'
import { createTestTransport } from './sender.ts'

export const BASE = '/admin/callbacks'

/** A mounted inspector: where it answers, and how to stop it. */
export interface MountedInspector {
  /** Sends a request to the app (`path` includes the base path). */
  fetch(path: string, init?: RequestInit): Promise<Response>
  /** The origin requests are made from (for `Origin`). */
  origin: string
  close(): Promise<void>
}

export type Mount = (inspector: Inspector) => Promise<MountedInspector>

/** The CSRF cookie and field of a page answer (`cookie` to send back, `token` for the form). */
export function csrfOf(response: Response, body: string, cookie?: string): { cookie: string; token: string } {
  const setCookie = response.headers.getSetCookie().find((each) => each.startsWith('ec_inspector_csrf='))
  const pair = setCookie?.split(';')[0] ?? cookie
  assert.ok(pair, 'the page set the CSRF cookie')
  const token = /name="csrf" value="([^"]+)"/.exec(body)?.[1]
  assert.ok(token, 'the page has a form with the CSRF token')
  return { cookie: pair, token }
}

export function inspectorAdapterContract(name: string, mount: Mount): void {
  describe(`inspector mounted with ${name}`, () => {
    let app: MountedInspector
    let seeded: SeededTasks
    let sender: SenderOptions
    let allowed = true

    before(async () => {
      const transport = createTestTransport((request) =>
        request.url.includes('/busy') ? { status: 503, body: 'busy' } : request.url.includes('/bad') ? { status: 400, body: 'no such account' } : { status: 204 }
      )
      sender = { store: createMemoryStore(), secret: generateSecret(), transport, retry: { schedule: [60_000], jitter: 0 } }
      seeded = await seedTasks(sender, { ok: 'https://ok.example/hooks', busy: 'https://busy.example/hooks', bad: 'https://bad.example/hooks' })
      app = await mount(createInspector({ store: sender.store, basePath: BASE, authorize: () => allowed, refreshSeconds: 0 }))
    })

    after(async () => {
      await app?.close()
    })

    test('serves the overview under the base path, every link keeping it, with a strict CSP', async () => {
      const response = await app.fetch(`${BASE}/`)
      assert.equal(response.status, 200)
      assert.match(response.headers.get('content-type') ?? '', /^text\/html/)
      assert.match(response.headers.get('content-security-policy') ?? '', /script-src 'self'/)
      const body = await response.text()
      const links = [...body.matchAll(/(?:href|src|action)="([^"]*)"/g)].map((match) => match[1]!)
      assert.ok(links.length > 5)
      for (const link of links) assert.ok(link.startsWith(`${BASE}/`), `${link} is under the base path`)
      assert.match(body, /data-status="failed"><div class="label">failed<\/div><div class="value">1</)
    })

    test('serves its stylesheet and script', async () => {
      const css = await app.fetch(`${BASE}/assets/inspector.css`)
      assert.equal(css.status, 200)
      assert.match(css.headers.get('content-type') ?? '', /^text\/css/)
      const js = await app.fetch(`${BASE}/assets/inspector.js`)
      assert.equal(js.status, 200)
      assert.match(js.headers.get('content-type') ?? '', /^text\/javascript/)
      assert.match(await js.text(), /datetime/)
    })

    test('searches by host and shows a task with its attempts', async () => {
      const found = await (await app.fetch(`${BASE}/tasks?host=busy.example`)).text()
      assert.ok(found.includes(seeded.retrying))
      assert.ok(!found.includes(seeded.failed) && !found.includes(seeded.delivered))
      const page = await app.fetch(`${BASE}/tasks/${seeded.failed}`)
      assert.equal(page.status, 200)
      const text = await page.text()
      assert.match(text, /data-attempt="1"/)
      assert.match(text, /HTTP 400/)
    })

    test('lists the destinations with their state, attempts in flight, tasks due, hold and last error, escaped', async () => {
      const until = new Date(Date.now() + 3_600_000)
      await sender.store.setDestination!('https://busy.example', { state: 'open', until, reason: '<img src=x onerror=alert(1)> HTTP 503', openings: 2 }, new Date())
      try {
        const response = await app.fetch(`${BASE}/destinations`)
        assert.equal(response.status, 200)
        const body = await response.text()
        const row = /<tr data-destination="https:\/\/busy.example">(.*?)<\/tr>/s.exec(body)?.[1]
        assert.ok(row, 'the held destination has its row')
        const cells = [...row.matchAll(/<td[^>]*>(.*?)<\/td>/gs)].map((cell) => cell[1]!.replace(/<[^>]+>/g, ''))
        assert.deepEqual([cells[1], cells[2], cells[3], cells[5]], ['open', '0', '0', '2'])
        assert.ok(row.includes(until.toISOString()), 'held until')
        assert.ok(row.includes('&lt;img src=x onerror=alert(1)&gt; HTTP 503'), 'the last error, as text')
        assert.ok(!body.includes('<img'), 'no markup from the store')
        assert.ok(row.includes(`href="${BASE}/tasks?host=busy.example"`), 'a link to its tasks')
      } finally {
        await sender.store.setDestination!('https://busy.example', null, new Date())
      }
      const none = await (await app.fetch(`${BASE}/destinations`)).text()
      assert.match(none, /data-destinations="none"/)
    })

    test('redeliver runs from its own form, and is refused without the CSRF token or from another origin', async () => {
      const page = await app.fetch(`${BASE}/tasks/${seeded.failed}`)
      const { cookie, token } = csrfOf(page, await page.text())
      const post = (form: Record<string, string>, headers: Record<string, string> = {}) =>
        app.fetch(`${BASE}/tasks/${seeded.failed}/redeliver`, {
          method: 'POST',
          redirect: 'manual',
          headers: { 'content-type': 'application/x-www-form-urlencoded', cookie, origin: app.origin, ...headers },
          body: new URLSearchParams(form).toString(),
        })
      const forged = await post({})
      assert.equal(forged.status, 403)
      const elsewhere = await post({ csrf: token }, { origin: 'https://evil.example' })
      assert.equal(elsewhere.status, 403)
      assert.equal((await sender.store.get(seeded.failed))?.status, 'failed', 'nothing changed')
      const done = await post({ csrf: token })
      assert.equal(done.status, 303)
      assert.equal(done.headers.get('location'), `${BASE}/tasks/${seeded.failed}?notice=redelivered`)
      assert.equal((await sender.store.get(seeded.failed))?.status, 'scheduled')
    })

    test('answers 404 with a page for what is not there, and 403 with nothing when authorize says no', async () => {
      const missing = await app.fetch(`${BASE}/tasks/msg_unknown`)
      assert.equal(missing.status, 404)
      assert.match(await missing.text(), /No task msg_unknown/)
      const nowhere = await app.fetch(`${BASE}/nowhere`)
      assert.equal(nowhere.status, 404)
      allowed = false
      try {
        const refused = await app.fetch(`${BASE}/tasks?host=busy.example`)
        assert.equal(refused.status, 403)
        assert.ok(!(await refused.text()).includes(seeded.retrying))
      } finally {
        allowed = true
      }
    })
  })
}
