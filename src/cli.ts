/**
 * The `endpoint-callback` command: `secret`, `listen`, `send` and `verify`, and the inspection
 * commands `tasks`, `attempts`, `redeliver` and `cancel`, over the library. Each
 * command is a thin layer: signing, verification, reading bodies and delivery are the library's.
 */
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander'
import { CallbackError, UrlPolicyError } from './errors.ts'
import { generateSecret, generateSigningKey } from './signing/secrets.ts'
import { VERSION } from './version.ts'
import { listenCommand } from './cli/listen.ts'
import { sendCommand } from './cli/send.ts'
import { verifyCommand } from './cli/verify.ts'
import { addInspectCommands } from './cli/inspect.ts'
import { CliError, EXIT, EXIT_CODES_HELP, printError, printLine } from './cli/exit.ts'

/**
 * Runs the CLI with `argv` (the arguments after the program name) and resolves with the exit code.
 * Never rejects: every failure is printed as one `endpoint-callback: <reason>` line on stderr.
 *
 * @example
 * ```sh
 * endpoint-callback verify --secret "$CALLBACK_SECRET" --headers headers.txt --body body.bin
 * ```
 * which `bin/endpoint-callback.js` runs as `process.exitCode = await main(process.argv.slice(2))`.
 */
export async function main(argv: readonly string[]): Promise<number> {
  let exitCode: number = EXIT.ok
  const program = buildProgram((code) => (exitCode = code))
  try {
    await program.parseAsync([...argv], { from: 'user' })
    return exitCode
  } catch (error) {
    return report(error)
  }
}

function report(error: unknown): number {
  if (error instanceof CommanderError) {
    if (error.code === 'commander.helpDisplayed' || error.code === 'commander.version') return EXIT.ok
    if (error.code === 'commander.help') {
      printError('missing command: secret, listen, send, verify, tasks, attempts, redeliver or cancel (see endpoint-callback --help)')
      return EXIT.usage
    }
    printError(error.message.replace(/^error: /, ''))
    return EXIT.usage
  }
  if (error instanceof CliError) {
    printError(error.message)
    return error.exitCode
  }
  // Bad keys and option values from the library: TypeErrors that name the option, never the secret.
  if (error instanceof TypeError) {
    printError(error.message)
    return EXIT.usage
  }
  if (error instanceof UrlPolicyError) {
    printError(`${error.code}: ${error.message}`)
    return EXIT.usage
  }
  if (error instanceof CallbackError) {
    printError(`${error.code}: ${error.message}`)
    return EXIT.failed
  }
  printError(error instanceof Error ? error.message : String(error))
  return EXIT.failed
}

/** Several values from repeated flags, or from one value separated by spaces (an environment variable). */
function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), ...value.split(/\s+/).filter((item) => item !== '')]
}

function integer(name: string, min: number, max: number) {
  return (value: string): number => {
    const number = Number(value)
    if (!/^\d+$/.test(value) || number < min || number > max) {
      throw new InvalidArgumentError(`${name} must be an integer from ${min} to ${max}.`)
    }
    return number
  }
}

function seconds(value: string): number {
  const number = Number(value)
  if (value.trim() === '' || !Number.isFinite(number) || number < 0) throw new InvalidArgumentError('tolerance must be seconds, 0 or more.')
  return number
}

function instant(value: string): Date {
  const date = new Date(value)
  if (Number.isNaN(date.getTime())) throw new InvalidArgumentError('expected an ISO-8601 date and time, e.g. 2025-01-31T12:00:00Z.')
  return date
}

const secretOption = (what: string) =>
  new Option('--secret <whsec>', `${what} (repeatable)`).env('CALLBACK_SECRET').argParser(collect)
const publicKeyOption = () =>
  new Option('--public-key <whpk>', 'Ed25519 public key whpk_… for v1a signatures (repeatable)').env('CALLBACK_PUBLIC_KEY').argParser(collect)
const toleranceOption = () =>
  new Option('--tolerance <seconds>', 'allowed clock skew of webhook-timestamp, both ways (default: 300)').argParser(seconds)

/** The options that carry a secret key, and the environment variable that is safer for each. */
const SECRET_OPTIONS = [
  { option: 'secret', flag: '--secret', variable: 'CALLBACK_SECRET' },
  { option: 'signingKey', flag: '--signing-key', variable: 'CALLBACK_SIGNING_KEY' },
] as const

/**
 * A key typed on the command line shows in `ps` and /proc to every user of the machine, and lands in
 * shell history: say so once, whatever the number of such flags, and go on.
 */
function warnAboutKeysInArguments(command: Command): void {
  const given = SECRET_OPTIONS.filter(({ option }) => command.getOptionValueSource(option) === 'cli')
  if (given.length === 0) return
  printError(
    `warning: ${given.map(({ flag }) => flag).join(' and ')} on the command line can be read by other users of this machine (ps) ` +
      `and stays in your shell history; set ${given.map(({ variable }) => variable).join(' / ')} in the environment instead`
  )
}

function buildProgram(exit: (code: number) => void): Command {
  const program = new Command('endpoint-callback')
    .description('Sign, send, receive and verify Standard Webhooks callbacks on your machine; inspect and redeliver the tasks of a PostgreSQL or Redis store.')
    .version(VERSION, '-v, --version')
    .exitOverride()
    // Errors are printed by report(), on one line; help goes to stdout only when asked for.
    .configureOutput({ writeErr: () => {}, outputError: () => {} })
    .showSuggestionAfterError(true)
    .addHelpText('after', EXIT_CODES_HELP)
    .hook('preAction', (_program, command) => warnAboutKeysInArguments(command))

  program
    .command('secret')
    .description('Print a new whsec_ secret, or with --ed25519 a signing key pair.')
    .option('--ed25519', 'print an Ed25519 key pair: signingKey (whsk_, keep it secret) and publicKey (whpk_, share it)')
    .option('--json', 'print JSON: {"secret"} or {"signingKey","publicKey"}')
    .addHelpText('after', EXIT_CODES_HELP)
    .action((options: { ed25519?: boolean; json?: boolean }) => {
      if (options.ed25519) {
        const pair = generateSigningKey()
        printLine(options.json ? JSON.stringify(pair) : `signingKey: ${pair.signingKey}\npublicKey:  ${pair.publicKey}`)
      } else {
        const secret = generateSecret()
        printLine(options.json ? JSON.stringify({ secret }) : secret)
      }
    })

  program
    .command('listen')
    .description(
      'Run a local receiver: verify every POST and print its headers, whether it verified (and why not) and its data. ' +
        'Answers 204 when verified, otherwise 400/401/413 like the Express, Koa and fetch receivers (503 while the --jwks keys ' +
        'cannot be loaded). Answers a signed intent challenge (webhook-intent) by echoing it, and prints it as such. ' +
        'Prints the URL it listens on first; runs until SIGINT/SIGTERM.'
    )
    .addOption(new Option('--port <n>', 'port to listen on (0: any free port)').argParser(integer('port', 0, 65535)).makeOptionMandatory())
    .option('--host <address>', 'address to listen on', '127.0.0.1')
    .addOption(secretOption('whsec_ secret to verify v1 signatures with'))
    .addOption(publicKeyOption())
    .option(
      '--jwks <url>',
      "the sender's JWKS URL: verify v1a signatures with the Ed25519 keys it publishes (fetched at start: exit 2 if it " +
        'cannot be; fetched again when no key matches, at most every 30 s)'
    )
    .option('--allow-http', 'allow a plain http: --jwks URL (local development)')
    .option('--json', 'print one JSON line per request (the first line is {"listening": url})')
    .option(
      '--save <dir>',
      'write each request to <dir> as two files, its raw header lines (.headers) and its body byte for byte (.body), ' +
        'and print their paths: `verify --headers <file> --body <file>` checks them as they are'
    )
    .addOption(toleranceOption())
    .addHelpText('after', EXIT_CODES_HELP)
    .action(async (options: { port: number; host: string; secret?: string[]; publicKey?: string[]; jwks?: string; allowHttp?: boolean; json?: boolean; tolerance?: number; save?: string }) => {
      exit(
        await listenCommand({
          port: options.port,
          host: options.host,
          allowHttp: options.allowHttp === true,
          json: options.json === true,
          ...(options.secret === undefined ? {} : { secret: options.secret }),
          ...(options.publicKey === undefined ? {} : { publicKey: options.publicKey }),
          ...(options.jwks === undefined ? {} : { jwks: options.jwks }),
          ...(options.tolerance === undefined ? {} : { tolerance: options.tolerance }),
          ...(options.save === undefined ? {} : { save: options.save }),
        })
      )
    })

  program
    .command('send')
    .description(
      'Sign and POST one callback, the Standard Webhooks envelope {"type","timestamp","data"}, through the library\'s delivery ' +
        'path, printing every attempt (status, duration, first bytes of the answer). Retries 408, 425, 429, 5xx and network ' +
        'errors after 1 s, 2 s, 4 s, … (at most 30 s); other answers end it.'
    )
    .argument('<url>', 'the callback URL')
    .addOption(secretOption('whsec_ secret to sign with (v1)'))
    .addOption(new Option('--signing-key <whsk>', 'Ed25519 signing key whsk_… to sign with (v1a, repeatable)').env('CALLBACK_SIGNING_KEY').argParser(collect))
    .addOption(new Option('--data <json>', 'the payload: JSON text, or @file to read it from a file').makeOptionMandatory())
    .option('--event <type>', 'the event type', 'test.callback')
    .option('--id <msg-id>', 'webhook-id to send (default: a new msg_… id)')
    .option(
      '--allow-local',
      'allow plain http: and the hosts localhost, 127.0.0.0/8, ::1, 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16 and fc00::/7 ' +
        '(link-local, CGNAT and cloud metadata addresses stay refused)'
    )
    .addOption(new Option('--timeout <ms>', 'time for one whole attempt').default(10_000).argParser(integer('timeout', 1, 600_000)))
    .addOption(new Option('--retries <n>', 'attempts after the first').default(2).argParser(integer('retries', 0, 20)))
    .addHelpText('after', EXIT_CODES_HELP)
    .action(async (url: string, options: { secret?: string[]; signingKey?: string[]; data: string; event: string; id?: string; allowLocal?: boolean; timeout: number; retries: number }) => {
      exit(
        await sendCommand({
          url,
          data: options.data,
          event: options.event,
          allowLocal: options.allowLocal === true,
          timeout: options.timeout,
          retries: options.retries,
          ...(options.secret === undefined ? {} : { secret: options.secret }),
          ...(options.signingKey === undefined ? {} : { signingKey: options.signingKey }),
          ...(options.id === undefined ? {} : { id: options.id }),
        })
      )
    })

  program
    .command('verify')
    .description(
      'Check a captured request. Prints the callback as JSON {"id","timestamp","type","data"} when it verifies, ' +
        'otherwise one line with the error code. The headers file is a JSON object ({"webhook-id": "…", …}) or raw ' +
        'header lines ("name: value" per line; a leading request line is skipped). The body file is read as raw bytes.'
    )
    .addOption(secretOption('whsec_ secret to verify v1 signatures with'))
    .addOption(publicKeyOption())
    .addOption(new Option('--headers <file>', 'the request headers: JSON object or "name: value" lines').makeOptionMandatory())
    .addOption(new Option('--body <file>', 'the raw request body, byte for byte').makeOptionMandatory())
    .addOption(new Option('--now <iso>', 'check the timestamp against this instant instead of the clock (old captures)').argParser(instant))
    .addOption(toleranceOption())
    .addHelpText('after', EXIT_CODES_HELP)
    .action(async (options: { secret?: string[]; publicKey?: string[]; headers: string; body: string; now?: Date; tolerance?: number }) => {
      exit(
        await verifyCommand({
          headers: options.headers,
          body: options.body,
          ...(options.secret === undefined ? {} : { secret: options.secret }),
          ...(options.publicKey === undefined ? {} : { publicKey: options.publicKey }),
          ...(options.now === undefined ? {} : { now: options.now }),
          ...(options.tolerance === undefined ? {} : { tolerance: options.tolerance }),
        })
      )
    })

  addInspectCommands(program, exit)

  return program
}
