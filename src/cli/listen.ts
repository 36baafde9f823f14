/**
 * `endpoint-callback listen`: a local receiver that prints every request it gets. Verification and
 * the answers (400/401/413 with a problem document, 503 when the sender's JWKS cannot be loaded,
 * the echo of an intent challenge) are the receiver core's, so what it prints is what the Express,
 * Koa and fetch receivers would do with the same request.
 */
import { mkdir, writeFile } from 'node:fs/promises'
import { createServer } from 'node:http'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join, resolve } from 'node:path'
import { CallbackError } from '../errors.ts'
import { INTENT_HEADER } from '../intent.ts'
import { createReceiverCore, nodeBodyConsumed, readNodeBody } from '../receivers/core.ts'
import type { CallbackReceiverCore } from '../receivers/core.ts'
import { createRemoteJwks } from '../signing/jwks-remote.ts'
import type { RemoteJwks } from '../signing/jwks-remote.ts'
import { CliError, EXIT, printError, printLine } from './exit.ts'

export interface ListenCommandOptions {
  port: number
  host: string
  secret?: string[]
  publicKey?: string[]
  jwks?: string
  /** Fetch `jwks` over plain http. */
  allowHttp: boolean
  json: boolean
  tolerance?: number
  /** Write each request's raw headers and body to files in this directory. */
  save?: string
}

/** What listen prints for one request (one JSON line with `--json`). */
export interface ReceivedCallbackLine {
  receivedAt: string
  /**
   * `intent`: a sender's intent challenge (`webhook-intent`), answered by echoing it once its
   * signature verified; `callback`: anything else.
   */
  kind: 'callback' | 'intent'
  method: string
  path: string
  /** The peer's address. */
  from: string
  /** The status the receiver answered. */
  status: number
  verified: boolean
  /** Why it did not verify, or why a verified intent challenge was refused. */
  error?: { code: string; message: string }
  id?: string
  timestamp?: string
  type?: string
  data?: unknown
  /** The raw body as text, only when it did not verify (never presented as data). */
  body?: string
  headers: Record<string, string | string[] | undefined>
  /**
   * With `--save`: the files holding the request's raw header lines and its body, byte for byte, as
   * `verify --headers … --body …` reads them. No `body` when it was not read (over the size limit).
   */
  saved?: { headers: string; body?: string }
}

const HUMAN_BODY_CHARS = 2000

/** Runs the receiver until SIGINT or SIGTERM, then closes it and resolves with exit code 0. */
export async function listenCommand(options: ListenCommandOptions): Promise<number> {
  const { port, host, secret, publicKey, jwks, allowHttp, json, tolerance } = options
  if (secret === undefined && publicKey === undefined && jwks === undefined) {
    throw new CliError(EXIT.usage, 'listen needs --secret, --public-key or --jwks (or CALLBACK_SECRET / CALLBACK_PUBLIC_KEY)')
  }
  const save = options.save === undefined ? undefined : await captureDirectory(options.save)
  const senderKeys = jwks === undefined ? undefined : remoteJwks(jwks, allowHttp)
  const core = createReceiverCore({
    ...(secret === undefined ? {} : { secret }),
    ...(publicKey === undefined ? {} : { publicKey }),
    ...(senderKeys === undefined ? {} : { jwks: senderKeys }),
    ...(tolerance === undefined ? {} : { toleranceSeconds: tolerance }),
  })
  if (senderKeys !== undefined) await loadAtStart(senderKeys)

  const server = createServer((req, res) => {
    handle(req, res, core, save).then(
      (line) => print(line, json),
      (error: unknown) => {
        printError(`${req.method} ${req.url}: ${(error as Error)?.message ?? String(error)}`)
        if (!res.headersSent) res.writeHead(500, { connection: 'close' }).end()
      }
    )
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', (error: NodeJS.ErrnoException) =>
      reject(new CliError(EXIT.usage, `cannot listen on ${host}:${port}: ${error.code ?? error.message}`, { cause: error }))
    )
    server.listen(port, host, resolve)
  })
  const address = server.address() as AddressInfo
  const url = `http://${address.family === 'IPv6' ? `[${address.address}]` : address.address}:${address.port}`
  printLine(json ? JSON.stringify({ listening: url }) : `listening on ${url} (Ctrl-C to stop)`)

  await new Promise<void>((resolve) => {
    const stop = () => {
      process.off('SIGINT', stop)
      process.off('SIGTERM', stop)
      resolve()
    }
    process.on('SIGINT', stop)
    process.on('SIGTERM', stop)
  })
  await new Promise<void>((resolve) => {
    server.close(() => resolve())
    server.closeAllConnections()
  })
  return EXIT.ok
}

/**
 * The sender's key set for the receiver core. Always a key set of our own rather than the URL, so
 * that the start-up fetch below fills the very cache the core verifies with.
 */
function remoteJwks(url: string, allowHttp: boolean): RemoteJwks {
  try {
    return createRemoteJwks(url, { allowHttp })
  } catch (error) {
    if (!(error instanceof TypeError)) throw error
    const reason = error.message.replace(/^url /, '').replace('(allowHttp permits http:)', '(--allow-http permits http: for local development)')
    throw new CliError(EXIT.usage, `--jwks ${reason}`, { cause: error })
  }
}

/**
 * The core fetches the JWKS only when a v1a callback arrives, and answers 503 while it cannot:
 * a sender retries that without anyone seeing why. A wrong URL, or a JWKS without an Ed25519 key,
 * is a configuration error, so it is found now and ends listen with exit 2.
 */
async function loadAtStart(keys: RemoteJwks): Promise<void> {
  try {
    await keys()
  } catch (error) {
    if (error instanceof CallbackError) throw new CliError(EXIT.usage, `${error.code}: ${error.message}`, { cause: error })
    throw error
  }
}

/** Creates the `--save` directory up front, so that a wrong path ends listen at once (exit 2). */
async function captureDirectory(path: string): Promise<CaptureDirectory> {
  const dir = resolve(path)
  try {
    await mkdir(dir, { recursive: true })
  } catch (error) {
    throw new CliError(EXIT.usage, `--save: cannot create ${dir}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`, { cause: error })
  }
  return { dir, count: 0 }
}

interface CaptureDirectory {
  dir: string
  count: number
}

/** The largest body read only to be saved (of a request refused before its body was read). */
const SAVE_BODY_LIMIT = 16 * 1024 * 1024

/**
 * Writes `<time>-<n>[-<webhook-id>].headers`, the request line and the header lines exactly as
 * received (names in their case, repeated headers repeated), and `….body`, the raw bytes.
 */
async function saveCapture(capture: CaptureDirectory, req: IncomingMessage, body: Buffer | undefined): Promise<{ headers: string; body?: string }> {
  capture.count += 1
  const id = req.headers['webhook-id'] ?? req.headers['svix-id']
  const safeId = typeof id === 'string' ? `-${id.replace(/[^A-Za-z0-9_.-]/g, '_').slice(0, 80)}` : ''
  const stamp = new Date().toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z')
  const base = join(capture.dir, `${stamp}-${capture.count}${safeId}`)
  const lines = [`${req.method} ${req.url} HTTP/${req.httpVersion}`]
  for (let index = 0; index + 1 < req.rawHeaders.length; index += 2) lines.push(`${req.rawHeaders[index]}: ${req.rawHeaders[index + 1]}`)
  await writeFile(`${base}.headers`, `${lines.join('\r\n')}\r\n`)
  if (body === undefined) return { headers: `${base}.headers` }
  await writeFile(`${base}.body`, body)
  return { headers: `${base}.headers`, body: `${base}.body` }
}

/** The body of a request the receiver refused before reading it, read now only to be saved. */
async function remainingBody(req: IncomingMessage): Promise<Buffer | undefined> {
  if (nodeBodyConsumed(req)) return undefined
  try {
    return await readNodeBody(req, SAVE_BODY_LIMIT)
  } catch {
    return undefined
  }
}

async function handle(req: IncomingMessage, res: ServerResponse, core: CallbackReceiverCore, save: CaptureDirectory | undefined): Promise<ReceivedCallbackLine> {
  const line: ReceivedCallbackLine = {
    receivedAt: new Date().toISOString(),
    // The core answers challenges of POST requests only; anything else is refused as a callback.
    kind: req.method === 'POST' && req.headers[INTENT_HEADER] !== undefined ? 'intent' : 'callback',
    method: req.method ?? '',
    path: req.url ?? '',
    from: req.socket.remoteAddress ?? '',
    status: 0,
    verified: false,
    headers: req.headers,
  }
  if (req.method !== 'POST') {
    line.status = 405
    line.error = { code: 'METHOD_NOT_ALLOWED', message: 'callbacks are POST requests' }
    if (save !== undefined) line.saved = await saveCapture(save, req, await remainingBody(req))
    res.writeHead(405, { allow: 'POST', connection: 'close' }).end()
    return line
  }

  // Kept to print the body of a request that did not verify.
  let raw: Buffer | undefined
  const outcome = await core.admit({
    method: req.method,
    headers: req.headers,
    body: async (limit) => (raw = await readNodeBody(req, limit)),
  })
  if (save !== undefined) line.saved = await saveCapture(save, req, raw ?? (await remainingBody(req)))

  if (outcome.accepted) {
    const { callback } = outcome
    line.status = 204
    line.verified = true
    line.id = callback.id
    line.timestamp = callback.timestamp.toISOString()
    if (callback.type !== undefined) line.type = callback.type
    line.data = callback.data
    if (callback.data === undefined) line.body = callback.body
    res.writeHead(204).end()
    return line
  }
  line.status = outcome.status
  if (outcome.error !== undefined) {
    line.error = { code: outcome.error.code, message: outcome.error.message }
    // The core refuses hopeless headers before reading the body; a local debugging receiver still
    // shows what was sent, within the same limit.
    if (raw === undefined && outcome.status !== 413 && !req.readableDidRead) {
      raw = await readNodeBody(req, core.maxBodyBytes).catch(() => undefined)
    }
    if (raw !== undefined) line.body = raw.toString('utf8')
  } else if (line.kind === 'intent') {
    // The core answers an intent challenge only once its signature verified: the echo, or a
    // problem document for a challenge it will not echo.
    line.verified = true
    const id = req.headers['webhook-id']
    if (typeof id === 'string') line.id = id
    if (outcome.status >= 300) line.error = problemOf(outcome.body)
  }
  res.writeHead(outcome.status, outcome.headers).end(outcome.body)
  return line
}

/** The code and title of a problem document the core answered with. */
function problemOf(body: string): { code: string; message: string } {
  try {
    const problem = JSON.parse(body) as { code?: unknown; title?: unknown }
    return { code: String(problem.code ?? 'unknown'), message: String(problem.title ?? '') }
  } catch {
    return { code: 'unknown', message: body.slice(0, 200) }
  }
}

function verdict(line: ReceivedCallbackLine): string {
  const reason = `${line.error?.code ?? 'unknown'}: ${line.error?.message ?? ''}`
  if (line.kind === 'intent') {
    const challenge = `intent challenge from ${line.from}`
    if (!line.verified) return `${challenge} not answered: not verified: ${reason}`
    return line.error === undefined ? `${challenge} answered` : `${challenge} refused: ${reason}`
  }
  return line.verified ? 'verified' : `not verified: ${reason}`
}

function print(line: ReceivedCallbackLine, json: boolean): void {
  if (json) {
    printLine(JSON.stringify(line))
    return
  }
  const out = [`${line.receivedAt} ${line.method} ${line.path} → ${line.status} ${verdict(line)}`]
  if (line.kind === 'intent' && line.verified) out.push(`  id: ${line.id}`)
  else if (line.verified) out.push(`  id: ${line.id}  timestamp: ${line.timestamp}${line.type === undefined ? '' : `  type: ${line.type}`}`)
  out.push('  headers:')
  for (const [name, value] of Object.entries(line.headers)) out.push(`    ${name}: ${Array.isArray(value) ? value.join(', ') : value}`)
  if (line.data !== undefined) out.push(`  data: ${JSON.stringify(line.data)}`)
  if (line.saved !== undefined) out.push(`  saved: ${line.saved.headers}${line.saved.body === undefined ? ' (body not read: over the size limit)' : ` ${line.saved.body}`}`)
  if (line.body !== undefined) {
    const shown = line.body.length > HUMAN_BODY_CHARS ? `${line.body.slice(0, HUMAN_BODY_CHARS)}… (${line.body.length} characters)` : line.body
    out.push(`  body${line.verified ? '' : ' (unverified)'}: ${shown}`)
  }
  printLine(out.join('\n'))
}
