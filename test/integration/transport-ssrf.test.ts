import { test, describe, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { connect as netConnect } from 'node:net'
import { buildConnector, fetch, request } from 'undici'
import type { Socket } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import { createHttpTransport, UrlPolicyError } from 'endpoint-callback'
import type { CallbackErrorCode, UrlPolicy } from 'endpoint-callback'
import { checkCallbackUrl, compileUrlPolicy } from '../../src/transports/url-policy.ts'
import { afterRequestHead, loopbackServer, refusingConnector, scriptedResolver } from '../support/ssrf.ts'
import type { LoopbackServer, ResolverAnswer } from '../support/ssrf.ts'

const FORBIDDEN: CallbackErrorCode = 'ERR_CALLBACK_URL_FORBIDDEN_ADDRESS'

interface HostileCase {
  url: string
  /** What the injected resolver answers for the URL's name (names only). */
  answers?: ResolverAnswer
  code: CallbackErrorCode
  policy?: UrlPolicy
  /** Refused before any lookup: checkCallbackUrl alone refuses it (task creation). */
  literal: boolean
}

const lit = (url: string, code: CallbackErrorCode = FORBIDDEN, policy?: UrlPolicy): HostileCase => ({ url, code, literal: true, ...(policy ? { policy } : {}) })
const dns = (url: string, answers: ResolverAnswer, code: CallbackErrorCode = FORBIDDEN): HostileCase => ({ url, answers, code, literal: false })

const HOSTILE: HostileCase[] = [
  // schemes
  lit('http://example.com/hook', 'ERR_CALLBACK_URL_PROTOCOL'),
  lit('ftp://example.com/hook', 'ERR_CALLBACK_URL_PROTOCOL'),
  lit('file:///etc/passwd', 'ERR_CALLBACK_URL_PROTOCOL'),
  lit('gopher://127.0.0.1:6379/_FLUSHALL', 'ERR_CALLBACK_URL_PROTOCOL'),
  lit('dict://127.0.0.1:11211/stats', 'ERR_CALLBACK_URL_PROTOCOL'),
  lit('javascript:alert(1)', 'ERR_CALLBACK_URL_PROTOCOL'),
  lit('data:text/plain,hello', 'ERR_CALLBACK_URL_PROTOCOL'),
  lit('wss://example.com/socket', 'ERR_CALLBACK_URL_PROTOCOL'),
  lit('ws://example.com/socket', 'ERR_CALLBACK_URL_PROTOCOL', { allowHttp: true }),
  // malformed, credentials, ports
  lit('not a url', 'ERR_CALLBACK_URL_INVALID'),
  lit('', 'ERR_CALLBACK_URL_INVALID'),
  lit('//example.com/relative', 'ERR_CALLBACK_URL_INVALID'),
  lit('https://[::1', 'ERR_CALLBACK_URL_INVALID'),
  lit('https://exa mple.com/', 'ERR_CALLBACK_URL_INVALID'),
  lit('https://1.2.3.4.5/', 'ERR_CALLBACK_URL_INVALID'),
  lit('https://0x100000000/', 'ERR_CALLBACK_URL_INVALID'),
  lit('https://[fe80::1%25eth0]/', 'ERR_CALLBACK_URL_INVALID'),
  lit(`https://example.com/${'a'.repeat(9000)}`, 'ERR_CALLBACK_URL_INVALID'),
  lit('https://user:hunter2@example.com/hook', 'ERR_CALLBACK_URL_INVALID'),
  lit('https://token@example.com/hook', 'ERR_CALLBACK_URL_INVALID'),
  lit('https://:hunter2@example.com/hook', 'ERR_CALLBACK_URL_INVALID'),
  lit('https://example.com:0/', 'ERR_CALLBACK_URL_PORT'),
  lit('https://example.com:8443/', 'ERR_CALLBACK_URL_PORT', { allowPorts: [443] }),
  lit('https://example.com:22/', 'ERR_CALLBACK_URL_PORT', { allowPorts: [443, 8443] }),
  // IPv4 literals in every notation the URL parser accepts
  lit('https://127.0.0.1/'),
  lit('https://127.1/'),
  lit('https://127.0.1/'),
  lit('https://0x7f.1/'),
  lit('https://0x7f000001/'),
  lit('https://2130706433/'),
  lit('https://0177.0.0.1/'),
  lit('https://017700000001/'),
  lit('https://127.0.0.1./'),
  lit('https://%31%32%37.0.0.1/'),
  lit('https://127。0。0。1/'),
  lit('https://127.255.255.254/'),
  lit('https://0.0.0.0/'),
  lit('https://0/'),
  lit('https://10.0.0.1/'),
  lit('https://012.0.0.1/'),
  lit('https://172.16.0.1/'),
  lit('https://172.31.255.255/'),
  lit('https://192.168.1.1/'),
  lit('https://0xc0.0xa8.1.1/'),
  lit('https://169.254.169.254/latest/meta-data/'),
  lit('https://0xa9fea9fe/'),
  lit('https://2852039166/'),
  lit('https://169.254.170.2/v2/credentials'),
  lit('https://100.64.0.1/'),
  lit('https://100.100.100.200/latest/meta-data/'),
  lit('https://168.63.129.16/machine'),
  lit('https://192.0.0.1/'),
  lit('https://192.0.2.1/'),
  lit('https://198.51.100.7/'),
  lit('https://203.0.113.9/'),
  lit('https://198.18.0.1/'),
  lit('https://224.0.0.1/'),
  lit('https://239.255.255.250/'),
  lit('https://255.255.255.255/'),
  lit('https://240.0.0.1/'),
  // IPv6 literals
  lit('https://[::1]/'),
  lit('https://[0:0:0:0:0:0:0:1]/'),
  lit('https://[::]/'),
  lit('https://[::ffff:127.0.0.1]/'),
  lit('https://[::ffff:7f00:1]/'),
  lit('https://[::ffff:169.254.169.254]/'),
  lit('https://[::ffff:8.8.8.8]/'),
  lit('https://[::127.0.0.1]/'),
  lit('https://[::ffff:0:10.0.0.1]/'),
  lit('https://[64:ff9b::127.0.0.1]/'),
  lit('https://[64:ff9b::a00:1]/'),
  lit('https://[64:ff9b:1::a00:1]/'),
  lit('https://[2002:7f00:1::]/'),
  lit('https://[2002:a9fe:a9fe::1]/'),
  lit('https://[2002:c0a8:101:1::1]/'),
  lit('https://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/'),
  lit('https://[fe80::1]/'),
  lit('https://[febf:ffff::1]/'),
  lit('https://[fc00::1]/'),
  lit('https://[fd00:ec2::254]/'),
  lit('https://[ff02::1]/'),
  lit('https://[fec0::1]/'),
  lit('https://[2001:db8::1]/'),
  lit('https://[100::1]/'),
  lit('https://[3fff::1]/'),
  // names that are never public
  lit('https://localhost/'),
  lit('https://LOCALHOST./'),
  lit('https://api.localhost/'),
  lit('https://metadata.google.internal/computeMetadata/v1/'),
  lit('https://metadata.google.internal./'),
  lit('https://metadata/'),
  lit('https://metadata.goog/'),
  lit('https://instance-data/latest/'),
  lit('https://printer.local/'),
  lit('https://db.internal/'),
  lit('https://router.home.arpa/'),
  // names whose resolver answers are forbidden (refused at connect time)
  dns('https://rebind.example/', ['127.0.0.1']),
  dns('https://rebind.example/', ['10.0.0.5']),
  dns('https://rebind.example/', ['93.184.216.34', '127.0.0.1']),
  dns('https://rebind.example/', ['127.0.0.1', '93.184.216.34']),
  dns('https://rebind.example/', ['2606:2800:220:1:248:1893:25c8:1946', '::1']),
  dns('https://rebind.example/', ['::1']),
  dns('https://rebind.example/', ['::ffff:127.0.0.1']),
  dns('https://rebind.example/', ['::ffff:10.1.1.1']),
  dns('https://rebind.example/', ['169.254.169.254']),
  dns('https://rebind.example/', ['168.63.129.16']),
  dns('https://rebind.example/', ['100.64.1.1']),
  dns('https://rebind.example/', ['fd00::1']),
  dns('https://rebind.example/', ['fe80::1%eth0']),
  dns('https://rebind.example/', ['64:ff9b::a9fe:a9fe']),
  dns('https://rebind.example/', ['2002:0a00:0001::1']),
  dns('https://rebind.example/', ['0.0.0.0']),
  dns('https://rebind.example/', ['0x7f.1']),
  dns('https://rebind.example/', ['not-an-address']),
  dns('https://127.0.0.1.nip.io/', ['127.0.0.1']),
  dns('https://internal.corp.example/', ['192.168.10.20']),
  dns('https://rebind.example/', [], 'ERR_CALLBACK_DNS'),
  dns('https://rebind.example/', { error: 'ENOTFOUND' }, 'ERR_CALLBACK_DNS'),
  dns('https://rebind.example/', { error: 'EAI_AGAIN' }, 'ERR_CALLBACK_DNS'),
]

describe('hostile callback URLs and resolver answers', () => {
  test('the table holds at least 60 cases', () => {
    assert.ok(HOSTILE.length >= 60, `only ${HOSTILE.length} cases`)
  })

  for (const hostile of HOSTILE) {
    const label = hostile.url.length > 80 ? `${hostile.url.slice(0, 60)}…` : hostile.url
    const answers = hostile.answers === undefined ? '' : ` answering ${JSON.stringify(hostile.answers)}`
    test(`${label}${answers} is refused with ${hostile.code} and nothing is dialled`, async () => {
      const lookup = scriptedResolver(hostile.answers ?? ['93.184.216.34'])
      const connect = refusingConnector()
      const transport = createHttpTransport({ lookup, connect, ...(hostile.policy ? { urlPolicy: hostile.policy } : {}) })
      try {
        await assert.rejects(transport.send({ url: hostile.url, headers: { 'webhook-id': 'msg_1' }, body: '{}' }), (error: unknown) => {
          assert.equal((error as { code?: string }).code, hostile.code, String(error))
          return true
        })
        assert.deepEqual(connect.dialled, [], 'a socket was requested')
        if (hostile.literal) {
          assert.deepEqual(lookup.calls, [], 'a literal refusal must not need DNS')
          // The same refusal happens at task creation, before anything is stored.
          assert.throws(() => checkCallbackUrl(hostile.url, compileUrlPolicy(hostile.policy)), (error: unknown) => {
            assert.ok(error instanceof UrlPolicyError)
            assert.equal(error.code, hostile.code)
            return true
          })
        } else {
          assert.equal(checkCallbackUrl(hostile.url, compileUrlPolicy()).hostname, new URL(hostile.url).hostname)
        }
      } finally {
        await transport.close()
      }
    })
  }
})

describe('loopback stays unreachable through the real connector', () => {
  let server: LoopbackServer
  before(async () => {
    server = await loopbackServer()
  })
  after(() => server.close())

  const urls = (port: number) => [
    `http://127.0.0.1:${port}/`,
    `http://127.1:${port}/`,
    `http://0x7f000001:${port}/`,
    `http://2130706433:${port}/`,
    `http://0177.0.0.1:${port}/`,
    `http://[::ffff:127.0.0.1]:${port}/`,
    `http://localhost:${port}/`,
    `http://rebind.example:${port}/`,
  ]

  test('no loopback form reaches a server on 127.0.0.1 without an allowHosts opt-in', async () => {
    const transport = createHttpTransport({ urlPolicy: { allowHttp: true }, lookup: scriptedResolver(['127.0.0.1']) })
    try {
      for (const url of urls(server.port)) {
        await assert.rejects(transport.send({ url, headers: {}, body: '{}' }), { code: FORBIDDEN }, url)
      }
      assert.equal(server.connections, 0)
    } finally {
      await transport.close()
    }
  })

  test('a name resolving to loopback is refused even when another answer is allowed', async () => {
    const transport = createHttpTransport({
      urlPolicy: { allowHttp: true, allowHosts: ['127.0.0.1'] },
      lookup: scriptedResolver(['127.0.0.1', '127.0.0.2']),
    })
    try {
      await assert.rejects(transport.send({ url: `http://rebind.example:${server.port}/`, headers: {}, body: '{}' }), {
        code: FORBIDDEN,
        message: /127\.0\.0\.2/,
      })
      assert.equal(server.connections, 0)
    } finally {
      await transport.close()
    }
  })
})

describe('DNS rebinding', () => {
  test('a resolver that answers public first and loopback next never gets a connection to loopback', async () => {
    // First connection: the public answer is vetted and dialled (by the stub, which refuses).
    // Second connection: the answer flips to loopback and is refused before any dial.
    const lookup = scriptedResolver(['93.184.216.34'], ['127.0.0.1'])
    const connect = refusingConnector()
    const transport = createHttpTransport({ lookup, connect })
    try {
      await assert.rejects(transport.send({ url: 'https://rebind.example/hook', headers: {}, body: '{}' }), { code: 'ERR_CALLBACK_CONNECTION' })
      await assert.rejects(transport.send({ url: 'https://rebind.example/hook', headers: {}, body: '{}' }), { code: FORBIDDEN })
      assert.deepEqual(connect.dialled, [{ hostname: '93.184.216.34', port: '', servername: 'rebind.example' }])
      assert.deepEqual(lookup.calls, ['rebind.example', 'rebind.example'])
    } finally {
      await transport.close()
    }
  })

  test('mixed public and private answers are refused as a whole, so no answer is dialled', async () => {
    for (const answers of [
      ['93.184.216.34', '10.0.0.1'],
      ['10.0.0.1', '93.184.216.34'],
      ['2606:4700::1111', 'fd12::1', '93.184.216.34'],
    ]) {
      const connect = refusingConnector()
      const transport = createHttpTransport({ lookup: scriptedResolver(answers), connect })
      try {
        await assert.rejects(transport.send({ url: 'https://rebind.example/', headers: {}, body: '{}' }), { code: FORBIDDEN })
        assert.deepEqual(connect.dialled, [])
      } finally {
        await transport.close()
      }
    }
  })

  test('the connector is handed the vetted address, never the name, and the Host header keeps the name', async () => {
    // The stub stands in for the network: whatever vetted address it is asked for, it connects
    // to a loopback receiver instead, so the exchange completes without leaving the machine.
    let seenHead = ''
    const receiver = await loopbackServer((socket) =>
      afterRequestHead(socket, (head) => {
        seenHead = head
        socket.end('HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n')
      }),
    )
    const dialled: string[] = []
    const lookup = scriptedResolver(['93.184.216.34', '2606:2800:220:1:248:1893:25c8:1946'], ['10.0.0.7'])
    const transport = createHttpTransport({
      lookup,
      urlPolicy: { allowHttp: true },
      connect: (options, callback) => {
        dialled.push(options.hostname)
        const socket = netConnect({ host: '127.0.0.1', port: receiver.port })
        socket.once('connect', () => callback(null, socket))
        socket.once('error', (error) => callback(error, null))
      },
    })
    try {
      const response = await transport.send({ url: 'http://callbacks.example/hook', headers: {}, body: '{}' })
      assert.equal(response.status, 204)
      assert.deepEqual(dialled, ['93.184.216.34'])
      assert.match(seenHead, /\r\nhost: callbacks\.example\r\n/i)
      // The receiver closed the connection; the next one resolves again and meets the private answer.
      await assert.rejects(transport.send({ url: 'http://callbacks.example/hook', headers: {}, body: '{}' }), { code: FORBIDDEN })
      assert.deepEqual(dialled, ['93.184.216.34'])
      assert.equal(receiver.connections, 1)
    } finally {
      await transport.close()
      await receiver.close()
    }
  })

  test('when the first vetted address refuses, the next vetted one is tried, and only vetted ones', async () => {
    const connect = refusingConnector()
    const transport = createHttpTransport({ lookup: scriptedResolver(['93.184.216.34', '2606:4700::1111']), connect })
    try {
      await assert.rejects(transport.send({ url: 'https://multi.example/', headers: {}, body: '{}' }), { code: 'ERR_CALLBACK_CONNECTION' })
      assert.deepEqual(
        connect.dialled.map((dial) => dial.hostname),
        ['93.184.216.34', '2606:4700::1111'],
      )
    } finally {
      await transport.close()
    }
  })

  test('a policy refusal inside the connector surfaces as UrlPolicyError, not as a wrapped network error', async () => {
    const connect = refusingConnector()
    const transport = createHttpTransport({ lookup: scriptedResolver(['192.168.0.10']), connect })
    try {
      const error = await transport.send({ url: 'https://printer.example/', headers: { authorization: 'Bearer sk_live_secret' }, body: 'x' }).then(
        () => assert.fail('resolved'),
        (error: unknown) => error,
      )
      assert.ok(error instanceof UrlPolicyError)
      assert.equal(error.code, FORBIDDEN)
      assert.match(error.message, /printer\.example resolves to 192\.168\.0\.10/)
      assert.doesNotMatch(error.message, /sk_live_secret|authorization/i)
      assert.deepEqual(connect.dialled, [])
    } finally {
      await transport.close()
    }
  })
})

describe('the exposed dispatcher obeys the same policy', () => {
  test('requests made directly on transport.dispatcher are vetted: scheme, literal address and resolved address', async () => {
    const receiver = await loopbackServer()
    const connect = refusingConnector()
    const transport = createHttpTransport({ urlPolicy: { allowHosts: ['127.0.0.1'] }, lookup: scriptedResolver(['10.9.8.7']), connect })
    try {
      const { dispatcher } = transport
      await assert.rejects(request(`http://127.0.0.1:${receiver.port}/`, { dispatcher }), { code: 'ERR_CALLBACK_URL_PROTOCOL' })
      await assert.rejects(request('https://127.0.0.2/', { dispatcher }), { code: FORBIDDEN })
      await assert.rejects(request('https://jwks.example/.well-known/jwks.json', { dispatcher }), { code: FORBIDDEN })
      assert.equal(receiver.connections, 0)
      assert.deepEqual(connect.dialled, [])
    } finally {
      await transport.close()
      await receiver.close()
    }
  })

  test('a redirect followed by fetch on the dispatcher cannot lead to a forbidden address', async () => {
    const target = await loopbackServer()
    const redirector = await loopbackServer((socket) =>
      afterRequestHead(socket, () => socket.end(`HTTP/1.1 302 Found\r\nlocation: http://localhost:${target.port}/\r\ncontent-length: 0\r\n\r\n`)),
    )
    const transport = createHttpTransport({ urlPolicy: { allowHttp: true, allowHosts: ['127.0.0.1'] } })
    try {
      const error = await fetch(`http://127.0.0.1:${redirector.port}/`, { dispatcher: transport.dispatcher }).catch((error: unknown) => error)
      assert.ok(error instanceof TypeError)
      assert.ok(error.cause instanceof UrlPolicyError)
      assert.equal(redirector.connections, 1)
      assert.equal(target.connections, 0)
    } finally {
      await transport.close()
      await redirector.close()
      await target.close()
    }
  })
})

describe('a name with several addresses (Happy Eyeballs)', () => {
  /**
   * A connector that dials the loopback receiver whatever vetted address it is given, after
   * `plan[address].after` ms; a `hang` address (a route that drops packets) answers only with a
   * connect timeout after 3 s, as a real connector would. No socket goes anywhere but 127.0.0.1.
   */
  function loopbackConnector(plan: Record<string, { after?: number; hang?: true }>) {
    const real = buildConnector({})
    const dialled: string[] = []
    const sockets: Socket[] = []
    const connect: buildConnector.connector = (options, callback) => {
      dialled.push(options.hostname)
      const step = plan[options.hostname] ?? {}
      if (step.hang) {
        const timeout = Object.assign(new Error('connect ETIMEDOUT (test connector)'), { code: 'ETIMEDOUT' })
        setTimeout(() => callback(timeout, null), 3_000).unref()
        return
      }
      setTimeout(() => {
        real({ ...options, hostname: '127.0.0.1' }, (error, socket) => {
          if (socket) sockets.push(socket as Socket)
          if (error) callback(error, null)
          else callback(null, socket!)
        })
      }, step.after ?? 0)
    }
    return Object.assign(connect, { dialled, sockets })
  }

  const answering = () =>
    loopbackServer((socket) => afterRequestHead(socket, () => socket.end('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok')))
  const urlPolicy = { allowHttp: true, allowHosts: ['dual.example'] }

  test('an address that never answers does not cost the attempt: the next one is dialled and used', async () => {
    const receiver = await answering()
    const connect = loopbackConnector({ '2001:db8::1': { hang: true } })
    // 2 s for the whole exchange: waiting for the silent address would time the attempt out
    const transport = createHttpTransport({ urlPolicy, lookup: scriptedResolver(['2001:db8::1', '192.0.2.1']), connect, timeoutMs: 2_000 })
    try {
      const response = await transport.send({ url: `http://dual.example:${receiver.port}/hook`, headers: {}, body: '{}' })
      assert.equal(response.status, 200)
      assert.deepEqual(connect.dialled, ['2001:db8::1', '192.0.2.1'])
    } finally {
      await transport.close()
      await receiver.close()
    }
  })

  test('addresses alternate between IPv6 and IPv4, a refused one handing over at once; all refused is a connection error', async () => {
    const connect = refusingConnector()
    const lookup = scriptedResolver(['2001:db8::1', '2001:db8::2', '192.0.2.1', '192.0.2.2'])
    const transport = createHttpTransport({ urlPolicy, lookup, connect, timeoutMs: 2_000 })
    try {
      await assert.rejects(transport.send({ url: 'http://dual.example/hook', headers: {}, body: '{}' }), { code: 'ERR_CALLBACK_CONNECTION' })
      assert.deepEqual(connect.dialled.map((dial) => dial.hostname), ['2001:db8::1', '192.0.2.1', '2001:db8::2', '192.0.2.2'])
    } finally {
      await transport.close()
    }
  })

  test('a socket that connects after another won is closed, and the request goes over the winner', async () => {
    const receiver = await answering()
    // the first address answers at 600 ms; the second, dialled at 250 ms, answers at once
    const connect = loopbackConnector({ '192.0.2.1': { after: 600 } })
    const transport = createHttpTransport({ urlPolicy, lookup: scriptedResolver(['192.0.2.1', '192.0.2.2']), connect, timeoutMs: 5_000 })
    try {
      const response = await transport.send({ url: `http://dual.example:${receiver.port}/hook`, headers: {}, body: '{}' })
      assert.equal(response.status, 200)
      assert.deepEqual(connect.dialled, ['192.0.2.1', '192.0.2.2'])
      assert.equal(connect.sockets.length, 1, 'only the second address has connected yet')
      await sleep(700)
      assert.equal(connect.sockets.length, 2)
      assert.equal(connect.sockets[1]!.destroyed, true, 'the late socket was closed')
    } finally {
      await transport.close()
      await receiver.close()
    }
  })
})
