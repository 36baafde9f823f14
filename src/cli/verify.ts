/**
 * `endpoint-callback verify`: checks a captured request (headers file + raw body file) with the
 * library's verifier, so a capture verifies here exactly when it would in a receiver.
 */
import { readFile } from 'node:fs/promises'
import { SignatureVerificationError } from '../errors.ts'
import { createVerifier } from '../verify.ts'
import { CliError, EXIT, printError, printLine } from './exit.ts'

export interface VerifyCommandOptions {
  secret?: string[]
  publicKey?: string[]
  headers: string
  body: string
  /** ISO-8601 instant to check the timestamp against instead of the clock. */
  now?: Date
  tolerance?: number
}

/** Verifies the captured request; prints the callback as JSON (exit 0) or a one-line reason (exit 1). */
export async function verifyCommand(options: VerifyCommandOptions): Promise<number> {
  const { secret, publicKey, now, tolerance } = options
  if (secret === undefined && publicKey === undefined) {
    throw new CliError(EXIT.usage, 'verify needs --secret or --public-key (or CALLBACK_SECRET / CALLBACK_PUBLIC_KEY)')
  }
  // Options first: a malformed key is a configuration error (exit 2), whatever the capture holds.
  const verify = createVerifier({
    ...(secret === undefined ? {} : { secret }),
    ...(publicKey === undefined ? {} : { publicKey }),
    ...(tolerance === undefined ? {} : { toleranceSeconds: tolerance }),
    ...(now === undefined ? {} : { now: () => now }),
  })
  const headers = parseHeaderFile(await readInput(options.headers, '--headers'), '--headers')
  // A Buffer, never a string: the signature covers the bytes as captured, whatever their encoding.
  const body = await readFile(options.body).catch((cause: unknown) => {
    throw new CliError(EXIT.usage, `--body: cannot read ${options.body}: ${(cause as Error).message}`, { cause })
  })
  try {
    const callback = await verify({ headers, body })
    const { id, timestamp, type, data } = callback
    printLine(JSON.stringify({ id, timestamp: timestamp.toISOString(), type, data }))
    return EXIT.ok
  } catch (error) {
    if (!(error instanceof SignatureVerificationError)) throw error
    printError(`not verified: ${error.code}: ${error.message}`)
    return EXIT.failed
  }
}

async function readInput(path: string, option: string): Promise<string> {
  try {
    return await readFile(path, 'utf8')
  } catch (cause) {
    throw new CliError(EXIT.usage, `${option}: cannot read ${path}: ${(cause as Error).message}`, { cause })
  }
}

/**
 * Reads a headers file in either of two forms:
 *
 * - a JSON object, `{ "webhook-id": "msg_…", "webhook-timestamp": "1700000000", … }` (values are
 *   strings, numbers, or arrays of strings for repeated headers);
 * - raw HTTP header lines, `name: value` one per line, as `curl -D` or a proxy log shows them. A
 *   leading request or status line (`POST /path HTTP/1.1`) and blank lines are skipped; a repeated
 *   name keeps every value.
 *
 * Names are matched without regard to case. Throws a `CliError` (exit 2) naming the line that is
 * neither.
 */
export function parseHeaderFile(text: string, option = '--headers'): Record<string, string | string[]> {
  const content = text.replace(/^\uFEFF/, '')
  if (content.trimStart().startsWith('{')) return parseJsonHeaders(content, option)
  const headers: Record<string, string | string[]> = {}
  const lines = content.split(/\r?\n/)
  lines.forEach((line, index) => {
    if (line.trim() === '') return
    if (index === 0 && /^(?:[A-Z]+ \S+ HTTP\/\d(?:\.\d)?|HTTP\/\d(?:\.\d)? \d{3}\b.*)$/.test(line.trim())) return
    const colon = line.indexOf(':')
    const name = colon > 0 ? line.slice(0, colon).trim().toLowerCase() : ''
    if (!/^[!#$%&'*+.^_`|~0-9a-z-]+$/.test(name)) {
      throw new CliError(
        EXIT.usage,
        `${option}: line ${index + 1} is not a "name: value" header line (expected a JSON object or one header per line)`
      )
    }
    add(headers, name, line.slice(colon + 1).trim())
  })
  return headers
}

function parseJsonHeaders(text: string, option: string): Record<string, string | string[]> {
  let parsed: unknown
  try {
    parsed = JSON.parse(text)
  } catch (cause) {
    throw new CliError(EXIT.usage, `${option}: not valid JSON: ${(cause as Error).message}`, { cause })
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new CliError(EXIT.usage, `${option}: the JSON must be an object of header names to values`)
  }
  const headers: Record<string, string | string[]> = {}
  for (const [name, value] of Object.entries(parsed)) {
    const values = Array.isArray(value) ? value : [value]
    for (const item of values) {
      if (typeof item !== 'string' && typeof item !== 'number') {
        throw new CliError(EXIT.usage, `${option}: the value of ${JSON.stringify(name)} must be a string, a number or an array of strings`)
      }
      add(headers, name.toLowerCase(), String(item))
    }
  }
  return headers
}

function add(headers: Record<string, string | string[]>, name: string, value: string): void {
  const existing = headers[name]
  if (existing === undefined) headers[name] = value
  else if (Array.isArray(existing)) existing.push(value)
  else headers[name] = [existing, value]
}
