/**
 * Tasks for the inspector's tests, made through the library as a service would make them: one
 * delivered, one retrying (503), one failed (400) whose receiver answered with markup that must
 * stay text on every page.
 */
import { randomUUID } from 'node:crypto'
import { createCallbackTask, deliver } from 'endpoint-callback'
import type { SenderOptions } from 'endpoint-callback'

/** What the failing receiver answers: a script and an image with an onerror handler. */
export const HOSTILE_BODY = '<script>window.__pwned = 1</script><img src="x" onerror="window.__pwned = 2">'

/** Metadata a client gave, with markup in it. */
export const HOSTILE_METADATA = { note: '<b onmouseover="window.__pwned = 3">bold</b>' }

export interface SeededTasks {
  delivered: string
  retrying: string
  failed: string
}

/**
 * `urls` name the three receivers: `ok` answers 2xx, `busy` 503, `bad` 400 with {@link HOSTILE_BODY}
 * (the sender's transport decides; see the tests). The failed task gets no retries: its sender
 * lists 400 in `retry.failStatuses`, so its `lastError` is the answer alone.
 */
export async function seedTasks(sender: SenderOptions, urls: { ok: string; busy: string; bad: string }): Promise<SeededTasks> {
  const make = async (url: string, event: string, key: string, once = false) => {
    const task = await createCallbackTask({ callbackUrl: url, event, idempotencyKey: `${key}-${randomUUID()}`, metadata: HOSTILE_METADATA }, sender)
    // A 400 is retried like any non-2xx unless the sender lists it in failStatuses: this one fails at once.
    await deliver(task, { report: key }, once ? { ...sender, retry: { ...sender.retry, schedule: [], failStatuses: [400] } } : sender)
    return task.id
  }
  return {
    delivered: await make(urls.ok, 'report.ready', 'seed-delivered'),
    retrying: await make(urls.busy, 'report.ready', 'seed-retrying'),
    failed: await make(urls.bad, 'invoice.paid', 'seed-failed', true),
  }
}
