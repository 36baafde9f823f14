/**
 * `send --allow-local` opens loopback and private networks for local testing, never link-local or
 * cloud metadata addresses: by literal or by a name resolving there. Run in process with a scripted
 * resolver and a connector that records and refuses, so no socket is ever opened.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { generateSecret } from 'endpoint-callback'
import { sendCommand } from '../../src/cli/send.ts'
import type { SendCommandOptions } from '../../src/cli/send.ts'
import { CliError, EXIT } from '../../src/cli/exit.ts'
import { refusingConnector, scriptedResolver } from '../support/ssrf.ts'
import { within } from '../support/waits.ts'

const forbidden = ['169.254.169.254', '169.254.170.2', '169.254.0.1', '169.254.255.254', 'fe80::1', 'fd00:ec2::254', '100.100.100.200']

function options(url: string, network: NonNullable<SendCommandOptions['network']>): SendCommandOptions {
  return { url, secret: [generateSecret()], data: '{}', event: 'report.ready', allowLocal: true, timeout: 2000, retries: 0, network }
}

/** Runs `send` (its lines go to this process's output): the exit code, or that of the CliError it ended with. */
async function send(opts: SendCommandOptions): Promise<number> {
  try {
    return await within(sendCommand(opts), `send ${opts.url} did not end`, 10_000)
  } catch (error) {
    if (error instanceof CliError) return error.exitCode
    throw error
  }
}

test('send --allow-local refuses link-local and metadata addresses given literally, and dials nothing', async () => {
  const connect = refusingConnector()
  const lookup = scriptedResolver(['10.0.0.1'])
  for (const address of forbidden) {
    const host = address.includes(':') ? `[${address}]` : address
    assert.equal(await send(options(`http://${host}/latest/meta-data`, { lookup, connect })), EXIT.usage, `http://${host}/ was not refused`)
  }
  assert.equal(await send(options('http://metadata.google.internal/computeMetadata/v1/', { lookup, connect })), EXIT.usage)
  assert.deepEqual(connect.dialled, [], 'a forbidden address was dialled')
})

test('send --allow-local refuses a name that resolves to a link-local or metadata address, and dials nothing', async () => {
  for (const address of forbidden) {
    const connect = refusingConnector()
    const lookup = scriptedResolver([address])
    assert.equal(await send(options('http://callbacks.example/hooks', { lookup, connect })), EXIT.usage, `a name resolving to ${address} was not refused`)
    assert.deepEqual(lookup.calls.slice(0, 1), ['callbacks.example'], 'the name was resolved')
    assert.deepEqual(connect.dialled, [], `${address} was dialled`)
  }
})

test('send --allow-local does dial a private address, so the connector above would have seen a forbidden one', async () => {
  const connect = refusingConnector()
  const lookup = scriptedResolver(['10.1.2.3'])
  assert.equal(await send(options('http://callbacks.example/hooks', { lookup, connect })), EXIT.failed)
  assert.ok(connect.dialled.length > 0, 'nothing was dialled')
  assert.ok(connect.dialled.every((dial) => dial.hostname === '10.1.2.3'), JSON.stringify(connect.dialled))
})

/** Runs a `send` that must be refused (exit 2): what it printed on stderr, or the message it ended with. */
async function refusalText(opts: SendCommandOptions): Promise<string> {
  const printed: string[] = []
  const write = process.stderr.write
  process.stderr.write = ((chunk: string | Uint8Array) => printed.push(String(chunk)) > 0) as typeof process.stderr.write
  try {
    assert.equal(await within(sendCommand(opts), `send ${opts.url} did not end`, 10_000), EXIT.usage, `${opts.url} was not refused`)
    return printed.join('')
  } catch (error) {
    if (!(error instanceof CliError)) throw error
    assert.equal(error.exitCode, EXIT.usage, `${opts.url} was not refused`)
    return error.message
  } finally {
    process.stderr.write = write
  }
}

test('the refusal hint says what --allow-local opens, and that it does not open link-local or metadata addresses, with it or without it', async () => {
  const connect = refusingConnector()
  const local = (url: string, addresses: string[]) => options(url, { lookup: scriptedResolver(addresses), connect })
  const plain = (url: string, addresses: string[]) => ({ ...local(url, addresses), allowLocal: false })
  const opens = /--allow-local permits http and loopback\/private hosts/
  const staysRefused = /link-local, CGNAT, multicast, reserved and cloud metadata addresses and internal names stay refused/

  // given --allow-local: never told to pass what was passed, but why it did not help
  for (const text of [
    await refusalText(local('http://169.254.169.254/latest/meta-data', [])),
    await refusalText(local('http://[fe80::1]/hooks', [])),
    await refusalText(local('http://callbacks.example/hooks', ['169.254.0.1'])),
  ]) {
    assert.doesNotMatch(text, opens, text)
    assert.match(text, staysRefused, text)
    assert.match(text, /with --allow-local/, text)
  }
  // without it: pointed at --allow-local only where it would help
  for (const text of [await refusalText(plain('http://127.0.0.1/hooks', [])), await refusalText(plain('https://callbacks.example/hooks', ['10.1.2.3']))]) {
    assert.match(text, opens, text)
  }
  for (const text of [await refusalText(plain('https://169.254.169.254/latest', [])), await refusalText(plain('https://callbacks.example/hooks', ['169.254.0.1']))]) {
    assert.doesNotMatch(text, opens, text)
    assert.match(text, staysRefused, text)
  }
  assert.deepEqual(connect.dialled, [], 'nothing was dialled')
})
