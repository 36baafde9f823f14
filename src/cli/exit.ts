/**
 * How the CLI ends: exit codes, the one-line error, and the error a command throws to choose them.
 */

/** Exit codes of every command. */
export const EXIT = Object.freeze({
  /** The command did what it was asked: printed, verified, delivered, or stopped on a signal. */
  ok: 0,
  /** The check failed: the request did not verify, or the callback was not delivered. */
  failed: 1,
  /** Usage or configuration error: unknown option, bad value or key, unreadable file, URL refused by the policy. */
  usage: 2,
})

/** The exit codes as `--help` shows them. */
export const EXIT_CODES_HELP = `
Exit codes:
  0  ok (printed, verified, delivered; listen: stopped by SIGINT/SIGTERM)
  1  failed: not verified (verify) or not delivered (send)
  2  usage or configuration error: bad option or key, unreadable file,
     URL refused by the URL policy, port in use`

/** Ends a command with `exitCode` and a one-line `message` on stderr. */
export class CliError extends Error {
  readonly exitCode: number

  constructor(exitCode: number, message: string, options?: { cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause })
    this.name = 'CliError'
    this.exitCode = exitCode
  }
}

/** Writes one line to stdout. */
export function printLine(text: string): void {
  process.stdout.write(`${text}\n`)
}

/** `endpoint-callback: <reason>` on stderr, on one line whatever the reason holds. */
export function printError(reason: string): void {
  process.stderr.write(`endpoint-callback: ${oneLine(reason)}\n`)
}

/** Collapses line breaks (and the spaces around them) so a message stays on one line. */
export function oneLine(text: string): string {
  return text.replace(/\s*[\r\n]+\s*/g, ' ').trim()
}
