/**
 * `endpoint-callback send`: one callback through the library's own delivery path — a task in a
 * memory store, `deliver` for the first attempt and a worker for the retries — so signing, the URL
 * policy, retries and the classification of answers are exactly what a service gets.
 */
import { readFile } from 'node:fs/promises'
import { UrlPolicyError } from '../errors.ts'
import { deliver } from '../deliver.ts'
import { createMemoryStore } from '../stores/memory.ts'
import { createCallbackTask } from '../task.ts'
import { createHttpTransport } from '../transports/http.ts'
import { checkCallbackUrl, compileUrlPolicy, forbiddenAddressReason } from '../transports/url-policy.ts'
import type { HttpTransportOptions } from '../transports/http.ts'
import type { CallbackStore, DeliveryEvent, UrlPolicy } from '../types.ts'
import { createWorker } from '../worker.ts'
import type { WorkerOptions } from '../worker.ts'
import { CliError, EXIT, printError, printLine } from './exit.ts'

export interface SendCommandOptions {
  url: string
  secret?: string[]
  signingKey?: string[]
  /** JSON text, or `@path` of a file holding it. */
  data: string
  event: string
  id?: string
  allowLocal: boolean
  /** The whole exchange of one attempt, ms. */
  timeout: number
  /** Attempts after the first. */
  retries: number
  /** The resolver and connector of the transport (tests inject them so no socket is opened). */
  network?: Pick<HttpTransportOptions, 'lookup' | 'connect'>
}

/**
 * What `--allow-local` opens past the default URL policy: plain `http:`, the name `localhost`,
 * loopback (127.0.0.0/8, ::1) and private networks (10/8, 172.16/12, 192.168/16, fc00::/7).
 * Link-local, CGNAT, multicast, reserved and cloud metadata addresses stay refused.
 */
export const LOCAL_URL_POLICY: UrlPolicy = Object.freeze({
  allowHttp: true,
  allowHosts: Object.freeze([
    'localhost',
    '127.0.0.0/8',
    '::1/128',
    '10.0.0.0/8',
    '172.16.0.0/12',
    '192.168.0.0/16',
    'fc00::/7',
  ]) as string[],
})

/** First retry after 1 s, doubling up to this. */
const MAX_RETRY_DELAY_MS = 30_000
/** A receiver's `Retry-After` may not hold the terminal for longer than this. */
const MAX_RETRY_AFTER_MS = 30_000
const RESPONSE_PREVIEW_CHARS = 200

/** The delays before the 2nd, 3rd, … attempt: 1 s, 2 s, 4 s, … capped at 30 s. */
export function retrySchedule(retries: number): number[] {
  return Array.from({ length: retries }, (_, i) => Math.min(1000 * 2 ** i, MAX_RETRY_DELAY_MS))
}

const CLI_FAIL_STATUSES = Array.from({ length: 200 }, (_, index) => 300 + index).filter((status) => ![408, 410, 425, 429].includes(status))

/** Sends one callback and prints every attempt. Exit 0 when delivered, 1 when not. */
export async function sendCommand(options: SendCommandOptions): Promise<number> {
  const { url, secret, signingKey, event, id, allowLocal, timeout, retries } = options
  if (secret === undefined && signingKey === undefined) {
    throw new CliError(EXIT.usage, 'send needs --secret or --signing-key (or CALLBACK_SECRET / CALLBACK_SIGNING_KEY)')
  }
  const data = await readData(options.data)
  if (id !== undefined && !/^[\x21-\x7e]{1,255}$/.test(id)) {
    throw new CliError(EXIT.usage, '--id must be 1 to 255 visible ASCII characters without spaces')
  }

  const urlPolicy = allowLocal ? LOCAL_URL_POLICY : undefined
  const transport = createHttpTransport({ timeoutMs: timeout, ...(urlPolicy === undefined ? {} : { urlPolicy }), ...options.network })
  const memory = createMemoryStore()
  // The task id is the webhook-id; the store is where it is chosen, so --id replaces it there.
  const store: CallbackStore = id === undefined ? memory : { ...memory, insert: (task, call) => memory.insert({ ...task, id }, call) }

  let settle: (event: DeliveryEvent) => void = () => {}
  const settled = new Promise<DeliveryEvent>((resolve) => (settle = resolve))
  const sender: WorkerOptions = {
    store,
    transport,
    ...(secret === undefined ? {} : { secret }),
    ...(signingKey === undefined ? {} : { signingKey }),
    ...(urlPolicy === undefined ? {} : { urlPolicy }),
    // At a terminal the answer matters more than the library's patience: a 3xx or a 4xx other
    // than 408, 425 and 429 (a wrong secret, a wrong path) ends the command at once.
    retry: { schedule: retrySchedule(retries), jitter: 0, maxRetryAfterMs: MAX_RETRY_AFTER_MS, failStatuses: CLI_FAIL_STATUSES },
    // Longer than one attempt with its quick reconnects, so the lease never runs out mid-attempt.
    leaseMs: timeout + 5_000,
    pollIntervalMs: 100,
    onEvent(event) {
      printEvent(event)
      if (event.type === 'delivered' || event.type === 'failed' || event.type === 'cancelled') settle(event)
    },
  }

  try {
    let task
    try {
      task = await createCallbackTask({ callbackUrl: url, event }, sender)
    } catch (error) {
      if (error instanceof UrlPolicyError) throw new CliError(EXIT.usage, refusal(error.code, error.message, allowLocal, () => opensLocally(url)), { cause: error })
      throw error
    }
    printLine(`POST ${task.callbackUrl} webhook-id ${task.id} (${event})`)
    const report = await deliver(task, data, sender)
    let outcome: DeliveryEvent
    if (report.status === 'retrying') {
      const worker = createWorker(sender)
      worker.start()
      outcome = await settled
      await worker.stop()
    } else {
      outcome = await settled
    }
    if (outcome.type === 'delivered') return EXIT.ok
    const error = outcome.type === 'failed' ? outcome.reason : 'HTTP 410: the receiver asked to stop (cancelled)'
    // Refused at connect time (a name that resolves to a private address): the policy, not the receiver.
    if (/^ERR_CALLBACK_URL_/.test(error)) {
      const message = error.slice(error.indexOf(':') + 1).trim()
      // the name passed; the address it resolved to did not
      const address = /resolves to (\S+), which/.exec(message)?.[1]
      const opens = () => address !== undefined && forbiddenAddressReason(address, compileUrlPolicy(LOCAL_URL_POLICY)) === undefined
      printError(refusal(error.slice(0, error.indexOf(':')), message, allowLocal, opens))
      return EXIT.usage
    }
    printError(`not delivered: ${error}`)
    return EXIT.failed
  } finally {
    await transport.close()
  }
}

/**
 * The policy's refusal, with a hint in the terms of the command line: `--allow-local` where it
 * would let the URL through (`opens`, asked only without it), and otherwise what it never opens.
 */
function refusal(code: string, message: string, allowLocal: boolean, opens: () => boolean): string {
  // The library's hint names the option (urlPolicy.allowHttp); on the command line it is --allow-local.
  message = message.replace(/\s*\((?:set|add it to|see) urlPolicy[^)]*\)/g, '')
  let hint = ''
  if (code === 'ERR_CALLBACK_URL_PROTOCOL' || code === 'ERR_CALLBACK_URL_FORBIDDEN_ADDRESS') {
    if (!allowLocal && (code === 'ERR_CALLBACK_URL_PROTOCOL' || opens())) hint = ' (--allow-local permits http and loopback/private hosts)'
    else if (code === 'ERR_CALLBACK_URL_FORBIDDEN_ADDRESS') {
      hint = ` (link-local, CGNAT, multicast, reserved and cloud metadata addresses and internal names stay refused ${allowLocal ? 'with' : 'even with'} --allow-local)`
    }
  }
  return `refused by the URL policy: ${code}: ${message}${hint}`
}

/** Whether `--allow-local` would let `url` through the checks made before any name is resolved. */
function opensLocally(url: string): boolean {
  try {
    checkCallbackUrl(url, compileUrlPolicy(LOCAL_URL_POLICY))
    return true
  } catch {
    return false
  }
}

async function readData(text: string): Promise<unknown> {
  let json = text
  if (text.startsWith('@')) {
    const path = text.slice(1)
    try {
      json = await readFile(path, 'utf8')
    } catch (cause) {
      throw new CliError(EXIT.usage, `--data: cannot read ${path}: ${(cause as Error).message}`, { cause })
    }
  }
  try {
    return JSON.parse(json)
  } catch (cause) {
    throw new CliError(EXIT.usage, `--data is not valid JSON: ${(cause as Error).message}`, { cause })
  }
}

function printEvent(event: DeliveryEvent): void {
  switch (event.type) {
    case 'attempt': {
      const { attempt: n, status, durationMs, responseBody, error } = event.attempt
      if (status === undefined) {
        printLine(`attempt ${n}: ${error ?? 'no response'} (${durationMs} ms)`)
      } else {
        const preview = responseBody === undefined ? '' : ` ${JSON.stringify(responseBody.slice(0, RESPONSE_PREVIEW_CHARS))}`
        printLine(`attempt ${n}: HTTP ${status} in ${durationMs} ms${preview}`)
      }
      break
    }
    case 'retry-scheduled': {
      const seconds = Math.max(0, event.nextAttemptAt.getTime() - Date.now()) / 1000
      printLine(`  next attempt in ${seconds.toFixed(1)} s`)
      break
    }
    case 'delivered':
      printLine(`delivered ${event.task.id} after ${event.attempt.attempt} attempt${event.attempt.attempt === 1 ? '' : 's'}`)
      break
    case 'error':
      printError(`worker: ${(event.error as Error)?.message ?? String(event.error)}`)
      break
    default:
      break
  }
}
