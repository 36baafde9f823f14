/**
 * The `endpoint-callback` binary, built with tsc and run as child processes, the way a user runs it.
 * All traffic stays on 127.0.0.1.
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import type { ChildProcess } from 'node:child_process'
import { createServer as createHttpServer } from 'node:http'
import { createServer as createTcpServer } from 'node:net'
import type { AddressInfo } from 'node:net'
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import {
  createCallbackTask,
  createHttpTransport,
  createJwksHandler,
  createMemoryStore,
  deliver,
  generateSecret,
  generateSigningKey,
  signPayload,
  verifySignature,
} from 'endpoint-callback'
import type { SenderOptions } from 'endpoint-callback'
import { buildCli, runCli, startListen } from '../support/cli-binary.ts'
import type { BuiltCli, ListenProcess } from '../support/cli-binary.ts'

let cli: BuiltCli
let files: string
const running = new Set<ChildProcess>()

before(async () => {
  cli = await buildCli()
  files = await mkdtemp(join(tmpdir(), 'endpoint-callback-cli-files-'))
})

after(async () => {
  for (const child of running) child.kill('SIGKILL')
  await cli?.remove()
  if (files !== undefined) await rm(files, { recursive: true, force: true })
})

const run = (...args: string[]) => runCli(cli.bin, args)

/** The warning a key given on the command line earns, once, before anything else on stderr. */
const KEY_WARNING = /^endpoint-callback: warning: --(?:secret|signing-key)\b[^\n]*\n/

/** stderr holds exactly one line, `endpoint-callback: …` (after the warning about a key on the command line). */
function assertOneLineError(stderr: string, pattern: RegExp): void {
  const rest = stderr.replace(KEY_WARNING, '')
  assert.match(rest, /^endpoint-callback: [^\n]+\n$/, `stderr is not one line: ${JSON.stringify(stderr)}`)
  assert.match(rest, pattern)
}

function jsonLines(listen: ListenProcess): Array<Record<string, any>> {
  return listen.lines.slice(1).map((line) => JSON.parse(line) as Record<string, any>)
}

describe('help and usage', () => {
  test('--help works for the program and every command, on stdout, with the exit codes', async () => {
    for (const command of [[], ['secret'], ['listen'], ['send'], ['verify']]) {
      const result = await run(...command, '--help')
      assert.equal(result.code, 0, `${command.join(' ')} --help: ${result.stderr}`)
      assert.match(result.stdout, new RegExp(`^Usage: endpoint-callback ${command.join(' ')}`))
      assert.match(result.stdout, /Exit codes:\n {2}0 .*\n {2}1 .*not verified.*not delivered.*\n {2}2 .*usage or configuration/)
      assert.equal(result.stderr, '')
    }
  })

  test('a usage error exits 2 with one line on stderr', async () => {
    const unknown = await run('listen', '--port', '0', '--secret', generateSecret(), '--colour')
    assert.equal(unknown.code, 2)
    assertOneLineError(unknown.stderr, /unknown option '--colour'/)

    const missing = await run('send', 'https://example.com/hooks', '--secret', generateSecret())
    assert.equal(missing.code, 2)
    assertOneLineError(missing.stderr, /required option '--data <json>' not specified/)

    const typo = await run('lisen')
    assert.equal(typo.code, 2)
    assertOneLineError(typo.stderr, /unknown command 'lisen' \(Did you mean listen\?\)/)

    const none = await run()
    assert.equal(none.code, 2)
    assertOneLineError(none.stderr, /missing command/)
  })

  test('a malformed secret is a configuration error (exit 2) that does not echo the secret', async () => {
    const result = await run('verify', '--secret', 'whsec_s3cr3t*not*base64', '--headers', 'h', '--body', 'b')
    assert.equal(result.code, 2)
    assertOneLineError(result.stderr, /secret is not valid base64/)
    assert.doesNotMatch(result.stderr, /s3cr3t/)

    const short = await run('send', 'https://example.com/hooks', '--secret', 'whsec_c2hvcnQ=', '--data', '{}')
    assert.equal(short.code, 2)
    assertOneLineError(short.stderr, /secret must hold 24 to 64 bytes to sign with/)
    assert.doesNotMatch(short.stderr, /c2hvcnQ/)
  })
})

describe('secret', () => {
  test('secret prints a whsec_ secret that signPayload signs with and verifySignature accepts', async () => {
    const result = await run('secret')
    assert.equal(result.code, 0)
    const secret = result.stdout.trim()
    assert.match(secret, /^whsec_[A-Za-z0-9+/]+=*$/)
    assert.equal(Buffer.from(secret.slice('whsec_'.length), 'base64').byteLength, 32)
    const body = '{"type":"t","timestamp":"2025-01-01T00:00:00.000Z","data":1}'
    const headers = signPayload({ id: 'msg_1', timestamp: new Date(), body }, { secret })
    const callback = await verifySignature({ headers, body }, { secret })
    assert.equal(callback.data, 1)
    assert.notEqual((await run('secret')).stdout.trim(), secret, 'two runs print different secrets')
  })

  test('secret --ed25519 prints a labelled key pair, and --json the same pair as JSON that signs and verifies', async () => {
    const text = await run('secret', '--ed25519')
    assert.equal(text.code, 0)
    assert.match(text.stdout, /^signingKey: whsk_\S+\npublicKey: {2}whpk_\S+\n$/)

    const json = await run('secret', '--ed25519', '--json')
    const { signingKey, publicKey } = JSON.parse(json.stdout) as { signingKey: string; publicKey: string }
    const body = '{"type":"t","timestamp":"2025-01-01T00:00:00.000Z","data":2}'
    const headers = signPayload({ id: 'msg_2', timestamp: new Date(), body }, { signingKey })
    assert.match(headers['webhook-signature'], /^v1a,/)
    assert.equal((await verifySignature({ headers, body }, { publicKey })).data, 2)
  })
})

describe('listen and send', () => {
  test('listen receives and verifies a callback from send, and reports one signed with the wrong secret as not verified', async () => {
    const secret = generateSecret()
    const listen = await startListen(cli.bin, ['--port', '0', '--secret', secret, '--json'], running)
    assert.match(listen.url, /^http:\/\/127\.0\.0\.1:\d+$/)

    const sent = await run('send', `${listen.url}/callbacks`, '--secret', secret, '--allow-local', '--event', 'report.ready', '--data', '{"report":"r-1","pages":3}')
    assert.equal(sent.code, 0, sent.stderr)
    assert.match(sent.stdout, /^attempt 1: HTTP 204 in \d+ ms$/m)
    const id = /webhook-id (msg_\S+)/.exec(sent.stdout)?.[1]
    assert.ok(id, sent.stdout)
    assert.match(sent.stdout, new RegExp(`delivered ${id} after 1 attempt`))

    const good = JSON.parse(await listen.waitForLine((line) => line.includes(id))) as Record<string, any>
    assert.equal(good.verified, true)
    assert.equal(good.status, 204)
    assert.equal(good.method, 'POST')
    assert.equal(good.path, '/callbacks')
    assert.equal(good.id, id)
    assert.equal(good.type, 'report.ready')
    assert.deepEqual(good.data, { report: 'r-1', pages: 3 })
    assert.equal(good.headers['webhook-id'], id)
    assert.match(good.headers['webhook-signature'], /^v1,/)
    assert.match(good.headers['user-agent'], /^endpoint-callback\//)

    const forged = await run('send', `${listen.url}/callbacks`, '--secret', generateSecret(), '--allow-local', '--id', 'msg_forged', '--data', '{"report":"r-2"}')
    assert.equal(forged.code, 1)
    assert.match(forged.stdout, /^attempt 1: HTTP 401 in \d+ ms .*ERR_CALLBACK_SIGNATURE_MISMATCH/m)
    assert.doesNotMatch(forged.stdout, /attempt 2/, 'a 401 is not retried')
    assertOneLineError(forged.stderr, /not delivered: HTTP 401/)

    const bad = JSON.parse(await listen.waitForLine((line) => line.includes('msg_forged'))) as Record<string, any>
    assert.equal(bad.verified, false)
    assert.equal(bad.status, 401)
    assert.equal(bad.error.code, 'ERR_CALLBACK_SIGNATURE_MISMATCH')
    assert.equal(bad.headers['webhook-id'], 'msg_forged')
    assert.equal(bad.data, undefined, 'an unverified body is never presented as data')
    assert.equal(JSON.parse(bad.body).data.report, 'r-2')
    assert.equal(jsonLines(listen).length, 2)

    const exit = await listen.stop('SIGTERM')
    assert.deepEqual(exit, { code: 0, signal: null }, listen.stderr())
  })

  test('listen without --json prints headers, the verdict and the data of an Ed25519-signed callback, and stops on SIGINT', async () => {
    const { signingKey, publicKey } = generateSigningKey()
    const listen = await startListen(cli.bin, ['--port', '0', '--public-key', publicKey], running)
    assert.match(listen.lines[0]!, /^listening on http:\/\/127\.0\.0\.1:\d+/)

    const sent = await run('send', `${listen.url}/hooks`, '--signing-key', signingKey, '--allow-local', '--id', 'msg_ed25519', '--data', '[1,2]')
    assert.equal(sent.code, 0, sent.stderr)
    await listen.waitForLine((line) => line.startsWith('  data: '))
    const output = listen.lines.join('\n')
    assert.match(output, /POST \/hooks → 204 verified/)
    assert.match(output, /id: msg_ed25519 {2}timestamp: \S+ {2}type: test\.callback/)
    assert.match(output, /^ {4}webhook-signature: v1a,\S+$/m)
    assert.match(output, /^ {2}data: \[1,2\]$/m)

    const exit = await listen.stop('SIGINT')
    assert.deepEqual(exit, { code: 0, signal: null }, listen.stderr())
  })

  test('listen answers what the receivers answer: 400 with a problem document for missing signature headers, 405 for a GET', async () => {
    const listen = await startListen(cli.bin, ['--port', '0', '--secret', generateSecret(), '--json'], running)
    const unsigned = await fetch(`${listen.url}/callbacks`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"data":1}' })
    assert.equal(unsigned.status, 400)
    assert.equal(unsigned.headers.get('content-type'), 'application/problem+json; charset=utf-8')
    assert.equal(((await unsigned.json()) as { code: string }).code, 'ERR_CALLBACK_SIGNATURE_HEADERS_MISSING')
    const get = await fetch(`${listen.url}/callbacks`)
    assert.equal(get.status, 405)
    await listen.waitForLine((line) => line.includes('"method":"GET"'))
    const [first, second] = jsonLines(listen)
    assert.equal(first!.verified, false)
    assert.equal(first!.error.code, 'ERR_CALLBACK_SIGNATURE_HEADERS_MISSING')
    assert.equal(first!.body, '{"data":1}')
    assert.equal(second!.status, 405)

    const taken = await runCli(cli.bin, ['listen', '--port', new URL(listen.url).port, '--secret', generateSecret()])
    assert.equal(taken.code, 2)
    assertOneLineError(taken.stderr, /cannot listen on 127\.0\.0\.1:\d+: EADDRINUSE/)
    assert.deepEqual(await listen.stop(), { code: 0, signal: null })
  })

  test("listen --jwks verifies Ed25519 callbacks with the keys the sender publishes, and refuses a JWKS it cannot use at start (exit 2)", async () => {
    const { signingKey } = generateSigningKey()
    const publish = createJwksHandler([signingKey])
    let fetches = 0
    const jwks = createHttpServer((req, res) => {
      fetches += 1
      publish(req, res)
    })
    await new Promise<void>((resolve) => jwks.listen(0, '127.0.0.1', resolve))
    const { port } = jwks.address() as AddressInfo
    try {
      const jwksUrl = `http://127.0.0.1:${port}/.well-known/jwks.json`
      const listen = await startListen(cli.bin, ['--port', '0', '--jwks', jwksUrl, '--allow-http', '--json'], running)
      const sent = await run('send', listen.url, '--signing-key', signingKey, '--allow-local', '--id', 'msg_jwks', '--data', '{"ok":true}')
      assert.equal(sent.code, 0, sent.stderr)
      const line = JSON.parse(await listen.waitForLine((text) => text.includes('msg_jwks'))) as Record<string, any>
      assert.equal(line.verified, true)
      assert.deepEqual(line.data, { ok: true })
      const forged = await run('send', listen.url, '--signing-key', generateSigningKey().signingKey, '--allow-local', '--id', 'msg_jwks_forged', '--data', '{}')
      assert.equal(forged.code, 1)
      assert.equal(JSON.parse(await listen.waitForLine((text) => text.includes('msg_jwks_forged'))).error.code, 'ERR_CALLBACK_SIGNATURE_MISMATCH')
      // The keys fetched at start served the callback, and the forged one's refetch fell in the cooldown.
      assert.equal(fetches, 1)
      assert.deepEqual(await listen.stop(), { code: 0, signal: null })

      const plain = await runCli(cli.bin, ['listen', '--port', '0', '--jwks', jwksUrl])
      assert.equal(plain.code, 2)
      assertOneLineError(plain.stderr, /^endpoint-callback: --jwks must use https: \(--allow-http permits http: for local development\)\n$/)
      assert.equal(fetches, 1, 'a refused URL is not fetched')
    } finally {
      jwks.closeAllConnections()
      await new Promise((resolve) => jwks.close(resolve))
    }
    // The same address with nobody listening any more: refused at start, not at the first callback.
    const gone = await runCli(cli.bin, ['listen', '--port', '0', '--jwks', `http://127.0.0.1:${port}/jwks.json`, '--allow-http'])
    assert.equal(gone.code, 2)
    assertOneLineError(gone.stderr, /ERR_CALLBACK_JWKS: could not fetch the JWKS from http:\/\/127\.0\.0\.1:\d+\/jwks\.json/)
  })

  test('listen answers the intent challenge of a sender with verifyIntent, prints it as one, and then receives the verified callback', async () => {
    const secret = generateSecret()
    const urlPolicy = { allowHttp: true, allowHosts: ['127.0.0.1'] }
    const transport = createHttpTransport({ urlPolicy })
    const sender: SenderOptions = { store: createMemoryStore(), transport, secret, urlPolicy, verifyIntent: true }
    const json = await startListen(cli.bin, ['--port', '0', '--secret', secret, '--json'], running)
    const text = await startListen(cli.bin, ['--port', '0', '--secret', secret], running)
    try {
      const task = await createCallbackTask({ callbackUrl: `${json.url}/hooks`, event: 'report.ready' }, sender)
      const report = await deliver(task, { report: 'r-9' }, sender)
      assert.equal(report.status, 'delivered', report.error)
      await json.waitForLine((line) => line.includes(task.id))
      const [challenge, callback] = jsonLines(json)
      assert.equal(challenge!.kind, 'intent')
      assert.equal(challenge!.verified, true)
      assert.equal(challenge!.status, 200)
      assert.equal(challenge!.from, '127.0.0.1')
      assert.match(challenge!.id, /^intent_/)
      assert.match(challenge!.headers['webhook-intent'], /^[\w-]{43}$/)
      assert.equal(challenge!.error, undefined)
      assert.equal(callback!.kind, 'callback')
      assert.equal(callback!.verified, true)
      assert.equal(callback!.id, task.id)
      assert.deepEqual(callback!.data, { report: 'r-9' })
      assert.equal(jsonLines(json).length, 2)

      const second = await createCallbackTask({ callbackUrl: `${text.url}/hooks`, event: 'report.ready' }, sender)
      assert.equal((await deliver(second, { report: 'r-10' }, sender)).status, 'delivered')
      await text.waitForLine((line) => line.startsWith('  data: '))
      const output = text.lines.join('\n')
      assert.match(output, /POST \/hooks → 200 intent challenge from 127\.0\.0\.1 answered\n {2}id: intent_\S+\n {2}headers:\n/)
      assert.doesNotMatch(output, /not verified/)
      assert.ok(output.indexOf('intent challenge') < output.indexOf(`→ 204 verified\n  id: ${second.id}`), output)

      // A challenge signed with another secret is not echoed: the sender never sends that URL its
      // payload. The 401 is retried on the schedule like any 4xx (the secret may be mid-rotation).
      const stranger: SenderOptions = { ...sender, store: createMemoryStore(), secret: generateSecret() }
      const refused = await deliver(await createCallbackTask({ callbackUrl: json.url, event: 'report.ready' }, stranger), { report: 'r-11' }, stranger)
      assert.equal(refused.status, 'retrying')
      assert.match(refused.error!, /ERR_CALLBACK_INTENT_NOT_VERIFIED/)
      const unverified = JSON.parse(await json.waitForLine((line) => line.includes('"status":401'))) as Record<string, any>
      assert.equal(unverified.kind, 'intent')
      assert.equal(unverified.verified, false)
      assert.equal(unverified.error.code, 'ERR_CALLBACK_SIGNATURE_MISMATCH')
      assert.equal(jsonLines(json).length, 3, 'no payload followed the refused challenge')
    } finally {
      await transport.close()
      await json.stop()
      await text.stop()
    }
  })

  test('send retries a 503 on the library schedule and exits 0 once the receiver takes it', async () => {
    let requests = 0
    const bodies: string[] = []
    const server = createHttpServer((req, res) => {
      requests += 1
      let body = ''
      req.setEncoding('utf8').on('data', (chunk: string) => (body += chunk))
      req.on('end', () => {
        bodies.push(body)
        if (requests === 1) res.writeHead(503).end('busy')
        else res.writeHead(204).end()
      })
    })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    try {
      const { port } = server.address() as AddressInfo
      const data = join(files, 'payload.json')
      await writeFile(data, '{"from":"a file"}')
      const sent = await run('send', `http://127.0.0.1:${port}/`, '--secret', generateSecret(), '--allow-local', '--retries', '1', '--data', `@${data}`)
      assert.equal(sent.code, 0, sent.stderr)
      assert.match(sent.stdout, /^attempt 1: HTTP 503 in \d+ ms "busy"\n {2}next attempt in 1\.\d s\nattempt 2: HTTP 204 in \d+ ms\ndelivered msg_\S+ after 2 attempts$/m)
      assert.equal(requests, 2)
      assert.deepEqual(bodies.map((body) => JSON.parse(body).data), [{ from: 'a file' }, { from: 'a file' }])
      assert.equal(bodies[0], bodies[1], 'every attempt sends the same bytes')
    } finally {
      server.closeAllConnections()
      await new Promise((resolve) => server.close(resolve))
    }
  })

  test('send refuses http, loopback addresses and localhost without --allow-local (exit 2) and opens no connection', async () => {
    let connections = 0
    const server = createTcpServer((socket) => {
      connections += 1
      socket.destroy()
    })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    try {
      const { port } = server.address() as AddressInfo
      const secret = generateSecret()
      const cases: Array<[string, RegExp]> = [
        [`https://127.0.0.1:${port}/hooks`, /refused by the URL policy: ERR_CALLBACK_URL_FORBIDDEN_ADDRESS: .*loopback.*--allow-local/],
        [`https://2130706433:${port}/hooks`, /ERR_CALLBACK_URL_FORBIDDEN_ADDRESS/],
        [`https://localhost:${port}/hooks`, /ERR_CALLBACK_URL_FORBIDDEN_ADDRESS: callback host localhost/],
        [`http://127.0.0.1:${port}/hooks`, /ERR_CALLBACK_URL_PROTOCOL/],
      ]
      for (const [url, reason] of cases) {
        const sent = await run('send', url, '--secret', secret, '--data', '{}')
        assert.equal(sent.code, 2, `${url}: ${sent.stderr}`)
        assertOneLineError(sent.stderr, reason)
        assert.equal(sent.stdout, '', 'no attempt is printed')
      }
      assert.equal(connections, 0)

      // The counter does count: with --allow-local the same address is dialled.
      const allowed = await run('send', `http://127.0.0.1:${port}/hooks`, '--secret', secret, '--data', '{}', '--allow-local', '--retries', '0')
      assert.equal(allowed.code, 1)
      assert.match(allowed.stdout, /attempt 1: ERR_CALLBACK_CONNECTION/)
      assert.ok(connections > 0)
    } finally {
      await new Promise((resolve) => server.close(resolve))
    }
  })
})

describe('verify', () => {
  const secret = generateSecret()
  const sentAt = new Date('2024-05-01T12:00:00Z')
  // Not UTF-8 (0xE9 is Latin-1 é) and with CRLF: any re-encoding of the bytes breaks the signature.
  const body = Buffer.concat([
    Buffer.from('{"type":"report.ready",\r\n"timestamp":"2024-05-01T12:00:00.000Z","data":{"name":"Ren'),
    Buffer.from([0xe9]),
    Buffer.from('e","pages":3}}'),
  ])
  const captured = signPayload({ id: 'msg_captured', timestamp: sentAt, body }, { secret })

  async function capture(name: string, headers: string, bytes: Buffer = body) {
    const headersFile = join(files, `${name}.headers`)
    const bodyFile = join(files, `${name}.body`)
    await writeFile(headersFile, headers)
    await writeFile(bodyFile, bytes)
    return ['--headers', headersFile, '--body', bodyFile]
  }

  test('verify accepts a captured genuine request and prints the callback as JSON', async () => {
    const paths = await capture('genuine', JSON.stringify({ ...captured, 'content-type': 'application/json' }))
    const result = await runCli(cli.bin, ['verify', ...paths, '--now', '2024-05-01T12:03:00Z'], { env: { CALLBACK_SECRET: secret } })
    assert.equal(result.code, 0, result.stderr)
    assert.equal(result.stderr, '')
    assert.deepEqual(JSON.parse(result.stdout), {
      id: 'msg_captured',
      timestamp: '2024-05-01T12:00:00.000Z',
      type: 'report.ready',
      data: { name: 'Ren\uFFFDe', pages: 3 },
    })
  })

  test('verify reads raw header lines, with a request line and CRLF, as well as JSON', async () => {
    const lines = [
      'POST /callbacks HTTP/1.1',
      'Host: 127.0.0.1:3000',
      'Content-Type: application/json',
      `Webhook-Id: ${captured['webhook-id']}`,
      `Webhook-Timestamp: ${captured['webhook-timestamp']}`,
      `Webhook-Signature: v1,${Buffer.alloc(32).toString('base64')} ${captured['webhook-signature']}`,
      '',
    ].join('\r\n')
    const result = await run('verify', '--secret', secret, ...(await capture('lines', lines)), '--now', '2024-05-01T11:58:00Z')
    assert.equal(result.code, 0, result.stderr)
    assert.equal(JSON.parse(result.stdout).id, 'msg_captured')
  })

  test('verify rejects a tampered request with exit 1 and a one-line reason with the error code', async () => {
    const tampered = Buffer.from(body)
    tampered[tampered.indexOf('3')] = '4'.charCodeAt(0)
    const paths = await capture('tampered', JSON.stringify(captured), tampered)
    const result = await run('verify', '--secret', secret, ...paths, '--now', '2024-05-01T12:03:00Z')
    assert.equal(result.code, 1)
    assert.equal(result.stdout, '')
    assertOneLineError(result.stderr, /^endpoint-callback: not verified: ERR_CALLBACK_SIGNATURE_MISMATCH: no signature matched\n$/)

    const otherSecret = await run('verify', '--secret', generateSecret(), ...(await capture('other', JSON.stringify(captured))), '--now', '2024-05-01T12:03:00Z')
    assert.equal(otherSecret.code, 1)
    assertOneLineError(otherSecret.stderr, /ERR_CALLBACK_SIGNATURE_MISMATCH/)
  })

  test('verify refuses an old capture unless --now places the check at the time it was sent', async () => {
    const paths = await capture('old', JSON.stringify(captured))
    const now = await run('verify', '--secret', secret, ...paths)
    assert.equal(now.code, 1)
    assertOneLineError(now.stderr, /not verified: ERR_CALLBACK_SIGNATURE_TIMESTAMP_TOO_OLD: webhook-timestamp is more than 300 s in the past/)

    const late = await run('verify', '--secret', secret, ...paths, '--now', '2024-05-01T12:10:00Z')
    assert.equal(late.code, 1, 'ten minutes later is past the default tolerance')
    const tolerant = await run('verify', '--secret', secret, ...paths, '--now', '2024-05-01T12:10:00Z', '--tolerance', '900')
    assert.equal(tolerant.code, 0, tolerant.stderr)
  })

  test('verify reports missing signature headers and unreadable input as such', async () => {
    const { 'webhook-signature': _, ...unsigned } = captured
    const missing = await run('verify', '--secret', secret, ...(await capture('unsigned', JSON.stringify(unsigned))), '--now', '2024-05-01T12:00:00Z')
    assert.equal(missing.code, 1)
    assertOneLineError(missing.stderr, /ERR_CALLBACK_SIGNATURE_HEADERS_MISSING: missing webhook-signature header/)

    const garbage = await run('verify', '--secret', secret, ...(await capture('garbage', 'not a header line\n')))
    assert.equal(garbage.code, 2)
    assertOneLineError(garbage.stderr, /--headers: line 1 is not a "name: value" header line/)

    const absent = await run('verify', '--secret', secret, '--headers', join(files, 'nope.json'), '--body', join(files, 'nope.body'))
    assert.equal(absent.code, 2)
    assertOneLineError(absent.stderr, /--headers: cannot read/)
  })

  test('verify checks v1a signatures with --public-key', async () => {
    const { signingKey, publicKey } = generateSigningKey()
    const headers = signPayload({ id: 'msg_v1a', timestamp: sentAt, body }, { signingKey })
    const paths = await capture('v1a', JSON.stringify(headers))
    const result = await run('verify', '--public-key', publicKey, ...paths, '--now', '2024-05-01T12:00:00Z')
    assert.equal(result.code, 0, result.stderr)
    assert.equal(JSON.parse(result.stdout).id, 'msg_v1a')
    const wrongKey = await run('verify', '--public-key', generateSigningKey().publicKey, ...paths, '--now', '2024-05-01T12:00:00Z')
    assert.equal(wrongKey.code, 1)
  })
})

describe('keys on the command line', () => {
  test('--secret on the command line warns once on stderr that CALLBACK_SECRET is safer, never echoing it; the variable alone does not warn', async () => {
    const secret = generateSecret()
    const body = '{"type":"t","timestamp":"2025-01-01T00:00:00.000Z","data":7}'
    const headers = signPayload({ id: 'msg_keys', timestamp: new Date(), body }, { secret })
    const headersFile = join(files, 'keys.headers')
    const bodyFile = join(files, 'keys.body')
    await writeFile(headersFile, JSON.stringify(headers))
    await writeFile(bodyFile, body)

    const flagged = await run('verify', '--secret', secret, '--secret', generateSecret(), '--headers', headersFile, '--body', bodyFile)
    assert.equal(flagged.code, 0, flagged.stderr)
    assert.equal(JSON.parse(flagged.stdout).data, 7)
    const warnings = flagged.stderr.split('\n').filter((line) => line !== '')
    assert.equal(warnings.length, 1, `one warning, not ${JSON.stringify(flagged.stderr)}`)
    assert.match(warnings[0]!, /^endpoint-callback: warning: --secret on the command line can be read by other users of this machine \(ps\).*set CALLBACK_SECRET in the environment instead$/)
    assert.ok(!flagged.stderr.includes(secret.slice(6, 20)), 'the warning shows the secret')

    const fromEnv = await runCli(cli.bin, ['verify', '--headers', headersFile, '--body', bodyFile], { env: { CALLBACK_SECRET: secret } })
    assert.equal(fromEnv.code, 0)
    assert.equal(fromEnv.stderr, '')

    // send: both key flags, one warning naming both, then the command's own error (no connection is opened)
    const { signingKey } = generateSigningKey()
    const both = await run('send', 'https://127.0.0.1/hooks', '--secret', secret, '--signing-key', signingKey, '--data', '{}')
    assert.equal(both.code, 2)
    const lines = both.stderr.split('\n').filter((line) => line !== '')
    assert.equal(lines.length, 2, both.stderr)
    assert.match(lines[0]!, /warning: --secret and --signing-key on the command line .* set CALLBACK_SECRET \/ CALLBACK_SIGNING_KEY in the environment instead/)
    assert.match(lines[1]!, /ERR_CALLBACK_URL_FORBIDDEN_ADDRESS|127\.0\.0\.1/)
    assert.ok(!both.stderr.includes(signingKey.slice(5, 20)), 'the warning shows the signing key')
  })
})

describe('listen --save and verify', () => {
  test('listen --save writes each request as raw header lines and body bytes, prints their paths, and verify passes the genuine capture and refuses a tampered one', async () => {
    const secret = generateSecret()
    const dir = join(files, 'captures')
    const listen = await startListen(cli.bin, ['--port', '0', '--json', '--save', dir], running, { CALLBACK_SECRET: secret })
    const sent = await runCli(
      cli.bin,
      ['send', `${listen.url}/hooks?tenant=7`, '--allow-local', '--event', 'report.ready', '--data', '{"report":"r-9","name":"Ren\u00e9e \u2603"}'],
      { env: { CALLBACK_SECRET: secret } }
    )
    assert.equal(sent.code, 0, sent.stderr)
    const line = JSON.parse(await listen.waitForLine((text) => text.includes('"saved"'))) as Record<string, any>
    assert.equal(line.verified, true)
    const saved = line.saved as { headers: string; body: string }
    assert.ok(saved.headers.startsWith(dir) && saved.body.startsWith(dir), JSON.stringify(saved))
    assert.match(saved.headers, new RegExp(`-${line.id}\\.headers$`))
    assert.deepEqual((await readdir(dir)).sort(), [saved.body, saved.headers].map((path) => path.slice(dir.length + 1)).sort())
    assert.match(await readFile(saved.headers, 'utf8'), /^POST \/hooks\?tenant=7 HTTP\/1\.1\r\n(?:.*\r\n)*webhook-signature: v1,\S+\r\n/i)

    const genuine = await runCli(cli.bin, ['verify', '--headers', saved.headers, '--body', saved.body], { env: { CALLBACK_SECRET: secret } })
    assert.equal(genuine.code, 0, genuine.stderr)
    const verified = JSON.parse(genuine.stdout) as Record<string, unknown>
    assert.equal(verified.id, line.id)
    assert.deepEqual(verified.data, { report: 'r-9', name: 'Ren\u00e9e \u2603' })

    const bytes = await readFile(saved.body)
    const tamperedBody = join(files, 'tampered-capture.body')
    await writeFile(tamperedBody, Buffer.from(bytes.toString('utf8').replace('r-9', 'r-8')))
    const tampered = await runCli(cli.bin, ['verify', '--headers', saved.headers, '--body', tamperedBody], { env: { CALLBACK_SECRET: secret } })
    assert.equal(tampered.code, 1)
    assert.equal(tampered.stdout, '')
    assertOneLineError(tampered.stderr, /not verified: ERR_CALLBACK_SIGNATURE_MISMATCH/)
    assert.deepEqual(await listen.stop(), { code: 0, signal: null })
  })

  test('listen --save keeps a refused request too, body byte for byte, and prints the paths in its text output', async () => {
    const dir = join(files, 'refused-captures')
    const listen = await startListen(cli.bin, ['--port', '0', '--save', dir], running, { CALLBACK_SECRET: generateSecret() })
    const body = Buffer.from([0x7b, 0xff, 0x00, 0x7d])
    const answer = await fetch(`${listen.url}/hooks`, { method: 'POST', headers: { 'content-type': 'application/json' }, body })
    assert.equal(answer.status, 400)
    const saved = /^ {2}saved: (\S+\.headers) (\S+\.body)$/m.exec(await listen.waitForLine((text) => text.includes('saved:')))
    assert.ok(saved, listen.lines.join('\n'))
    assert.deepEqual(await readFile(saved[2]!), body)
    const unsigned = await runCli(cli.bin, ['verify', '--headers', saved[1]!, '--body', saved[2]!], { env: { CALLBACK_SECRET: generateSecret() } })
    assert.equal(unsigned.code, 1)
    assertOneLineError(unsigned.stderr, /ERR_CALLBACK_SIGNATURE_HEADERS_MISSING/)
    await listen.stop()
  })

  test('listen --save into a path that cannot be a directory is exit 2 before listening', async () => {
    const file = join(files, 'not-a-directory')
    await writeFile(file, '')
    const result = await runCli(cli.bin, ['listen', '--port', '0', '--save', join(file, 'captures')], { env: { CALLBACK_SECRET: generateSecret() } })
    assert.equal(result.code, 2)
    assertOneLineError(result.stderr, /--save: cannot create .*not-a-directory\/captures: ENOTDIR/)
  })
})
