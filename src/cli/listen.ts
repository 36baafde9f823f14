/**
 * `endpoint-callback listen`: a local receiver that prints every request it gets. Verification and
 * the answers (400/401/413 with a problem document) are the receiver core's, so what it prints is
 * what the Express, Koa and fetch receivers would do with the same request.
 */
import { createServer } from 'node:http'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { CallbackError } from '../errors.ts'
import { createReceiverCore, readNodeBody } from '../receivers/core.ts'
import type { CallbackReceiverCore, ReceiverAcceptance, ReceiverAnswer } from '../receivers/core.ts'
import { createRemoteJwks } from '../signing/jwks-remote.ts'
import type { RemoteJwks } from '../signing/jwks-remote.ts'
import type { VerifyOptions } from '../types.ts'
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
}

/** What listen prints for one request (one JSON line with `--json`). */
export interface ReceivedCallbackLine {
  receivedAt: string
  method: string
  path: string
  /** The status the receiver answered. */
  status: number
  verified: boolean
  /** Why it did not verify. */
  error?: { code: string; message: string }
  id?: string
  timestamp?: string
  type?: string
  data?: unknown
  /** The raw body as text, only when it did not verify (never presented as data). */
  body?: string
  headers: Record<string, string | string[] | undefined>
}

const HUMAN_BODY_CHARS = 2000

/** Runs the receiver until SIGINT or SIGTERM, then closes it and resolves with exit code 0. */
export async function listenCommand(options: ListenCommandOptions): Promise<number> {
  const { port, host, secret, publicKey, jwks, allowHttp, json, tolerance } = options
  if (secret === undefined && publicKey === undefined && jwks === undefined) {
    throw new CliError(EXIT.usage, 'listen needs --secret, --public-key or --jwks (or CALLBACK_SECRET / CALLBACK_PUBLIC_KEY)')
  }
  const verifyOptions: VerifyOptions = {
    ...(secret === undefined ? {} : { secret }),
    ...(tolerance === undefined ? {} : { toleranceSeconds: tolerance }),
  }
  const receivers = receiverSource(verifyOptions, publicKey, jwks === undefined ? undefined : createRemoteJwks(jwks, { allowHttp }))
  // Fail now, not on the first callback: bad keys, or a JWKS URL that does not answer.
  try {
    await receivers.current(false)
  } catch (error) {
    if (error instanceof CallbackError) throw new CliError(EXIT.usage, `${error.code}: ${error.message}`, { cause: error })
    throw error
  }

  const server = createServer((req, res) => {
    handle(req, res, receivers).then(
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

interface ReceiverSource {
  /** The core for the current keys; with `refresh`, after a JWKS refetch (at most once per cooldown). */
  current(refresh: boolean): Promise<CallbackReceiverCore>
  readonly refreshable: boolean
}

function receiverSource(options: VerifyOptions, publicKey: string[] | undefined, jwks: RemoteJwks | undefined): ReceiverSource {
  if (jwks === undefined) {
    const core = createReceiverCore(publicKey === undefined ? options : { ...options, publicKey })
    return { current: async () => core, refreshable: false }
  }
  // One core per key set: rebuilt only when the sender's published keys changed.
  let cached: { keys: string; core: CallbackReceiverCore } | undefined
  return {
    refreshable: true,
    async current(refresh) {
      const keys = [...(publicKey ?? []), ...(await jwks.publicKeys({ refresh }))]
      const id = keys.join(' ')
      if (cached?.keys !== id) cached = { keys: id, core: createReceiverCore({ ...options, publicKey: keys }) }
      return cached.core
    },
  }
}

async function handle(req: IncomingMessage, res: ServerResponse, receivers: ReceiverSource): Promise<ReceivedCallbackLine> {
  const line: ReceivedCallbackLine = {
    receivedAt: new Date().toISOString(),
    method: req.method ?? '',
    path: req.url ?? '',
    status: 0,
    verified: false,
    headers: req.headers,
  }
  if (req.method !== 'POST') {
    line.status = 405
    line.error = { code: 'METHOD_NOT_ALLOWED', message: 'callbacks are POST requests' }
    res.writeHead(405, { allow: 'POST', connection: 'close' }).end()
    return line
  }

  // Read once, kept: a JWKS retry after a key rotation checks the same bytes again.
  let raw: Buffer | undefined
  let reading: Promise<Buffer> | undefined
  const request = {
    headers: req.headers,
    body: (limit: number) => (reading ??= readNodeBody(req, limit).then((bytes) => (raw = bytes))),
  }
  let outcome: ReceiverAcceptance | ReceiverAnswer
  try {
    const core = await receivers.current(false)
    outcome = await core.admit(request)
    if (!outcome.accepted && receivers.refreshable && outcome.error?.code === 'ERR_CALLBACK_SIGNATURE_MISMATCH') {
      // The sender may have rotated its key: look at its JWKS again (the cooldown bounds refetches).
      const refreshed = await receivers.current(true)
      if (refreshed !== core) outcome = await refreshed.admit(request)
    }
  } catch (error) {
    if (!(error instanceof CallbackError) || error.code !== 'ERR_CALLBACK_JWKS') throw error
    // The sender's keys could not be loaded: a transient failure on our side, worth a retry.
    line.status = 503
    line.error = { code: error.code, message: error.message }
    res.writeHead(503, { 'content-type': 'application/json; charset=utf-8', 'retry-after': '5' })
    res.end(JSON.stringify({ code: error.code }))
    return line
  }

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
  if (outcome.error !== undefined) line.error = { code: outcome.error.code, message: outcome.error.message }
  if (raw !== undefined) line.body = raw.toString('utf8')
  res.writeHead(outcome.status, outcome.headers).end(outcome.body)
  return line
}

function print(line: ReceivedCallbackLine, json: boolean): void {
  if (json) {
    printLine(JSON.stringify(line))
    return
  }
  const verdict = line.verified ? 'verified' : `not verified: ${line.error?.code ?? 'unknown'}: ${line.error?.message ?? ''}`
  const out = [`${line.receivedAt} ${line.method} ${line.path} → ${line.status} ${verdict}`]
  if (line.verified) out.push(`  id: ${line.id}  timestamp: ${line.timestamp}${line.type === undefined ? '' : `  type: ${line.type}`}`)
  out.push('  headers:')
  for (const [name, value] of Object.entries(line.headers)) out.push(`    ${name}: ${Array.isArray(value) ? value.join(', ') : value}`)
  if (line.data !== undefined) out.push(`  data: ${JSON.stringify(line.data)}`)
  if (line.body !== undefined) {
    const shown = line.body.length > HUMAN_BODY_CHARS ? `${line.body.slice(0, HUMAN_BODY_CHARS)}… (${line.body.length} characters)` : line.body
    out.push(`  body${line.verified ? '' : ' (unverified)'}: ${shown}`)
  }
  printLine(out.join('\n'))
}
