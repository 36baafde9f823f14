import { test, describe } from 'node:test'
import assert from 'node:assert/strict'
import { isIP } from 'node:net'
import { inspect } from 'node:util'
import fc from 'fast-check'
import { UrlPolicyError } from 'endpoint-callback'
import {
  checkCallbackUrl,
  compileUrlPolicy,
  forbiddenAddressReason,
  isForbiddenAddress,
} from '../../src/transports/url-policy.ts'

const DEFAULT = compileUrlPolicy()
const CODES = new Set(['ERR_CALLBACK_URL_INVALID', 'ERR_CALLBACK_URL_PROTOCOL', 'ERR_CALLBACK_URL_PORT', 'ERR_CALLBACK_URL_FORBIDDEN_ADDRESS'])

function refusal(url: string, policy = DEFAULT): string | undefined {
  try {
    checkCallbackUrl(url, policy)
    return undefined
  } catch (error) {
    assert.ok(error instanceof UrlPolicyError, `not a UrlPolicyError: ${String(error)}`)
    return error.code
  }
}

describe('compileUrlPolicy', () => {
  test('bad options are TypeErrors that name the option', () => {
    const cases: Array<[unknown, RegExp]> = [
      ['yes', /^urlPolicy must be an object/],
      [{ allowHttp: 'true' }, /^urlPolicy\.allowHttp /],
      [{ allowHosts: '127.0.0.1' }, /^urlPolicy\.allowHosts must be an array/],
      [{ allowHosts: ['example.com', 42] }, /^urlPolicy\.allowHosts\[1\] /],
      [{ allowHosts: [''] }, /^urlPolicy\.allowHosts\[0\] /],
      [{ allowHosts: ['10.0.0.0/33'] }, /^urlPolicy\.allowHosts\[0\] is not a valid CIDR/],
      [{ allowHosts: ['10.0.0.0/'] }, /^urlPolicy\.allowHosts\[0\] is not a valid CIDR/],
      [{ allowHosts: ['fe80::1%eth0'] }, /^urlPolicy\.allowHosts\[0\] .*zone/],
      [{ allowHosts: ['127.1'] }, /^urlPolicy\.allowHosts\[0\] /],
      [{ allowHosts: ['http://example.com'] }, /^urlPolicy\.allowHosts\[0\] /],
      [{ allowHosts: ['example.com:8080'] }, /^urlPolicy\.allowHosts\[0\] /],
      [{ allowHosts: ['exa mple.com'] }, /^urlPolicy\.allowHosts\[0\] /],
      [{ allowPorts: 443 }, /^urlPolicy\.allowPorts must be an array/],
      [{ allowPorts: [443, 0] }, /^urlPolicy\.allowPorts\[1\] /],
      [{ allowPorts: [65536] }, /^urlPolicy\.allowPorts\[0\] /],
      [{ allowPorts: [44.3] }, /^urlPolicy\.allowPorts\[0\] /],
    ]
    for (const [policy, message] of cases) {
      assert.throws(() => compileUrlPolicy(policy as never), (error: unknown) => error instanceof TypeError && message.test(error.message), JSON.stringify(policy))
    }
  })

  test('any value given as a policy either compiles or is refused with a TypeError', () => {
    fc.assert(
      fc.property(fc.anything(), (policy) => {
        try {
          compileUrlPolicy(policy as never)
        } catch (error) {
          return error instanceof TypeError
        }
        return true
      }),
    )
  })
})

describe('checkCallbackUrl', () => {
  test('a public https URL passes and comes back parsed', () => {
    const url = checkCallbackUrl('https://Example.COM/hooks/42?token=abc', DEFAULT)
    assert.equal(url.hostname, 'example.com')
    assert.equal(url.searchParams.get('token'), 'abc')
    assert.equal(checkCallbackUrl('https://8.8.8.8:8443/', DEFAULT).port, '8443')
    assert.equal(checkCallbackUrl('https://[2606:4700:4700::1111]/', DEFAULT).hostname, '[2606:4700:4700::1111]')
    // NAT64 and 6to4 forms of a public IPv4 address are public too.
    assert.equal(refusal('https://[64:ff9b::8.8.8.8]/'), undefined)
    assert.equal(refusal('https://[2002:808:808::1]/'), undefined)
  })

  test('a non-string URL is a TypeError naming callbackUrl', () => {
    for (const value of [undefined, null, 42, new URL('https://example.com/'), {}]) {
      assert.throws(() => checkCallbackUrl(value as never, DEFAULT), { name: 'TypeError', message: /callbackUrl/ })
    }
  })

  test('plain http needs allowHttp, and no other scheme is ever allowed', () => {
    const http = compileUrlPolicy({ allowHttp: true })
    assert.equal(refusal('http://example.com/'), 'ERR_CALLBACK_URL_PROTOCOL')
    assert.equal(refusal('http://example.com/', http), undefined)
    for (const url of ['ws://example.com/', 'ftp://example.com/', 'file:///etc/passwd', 'blob:https://example.com/x']) {
      assert.equal(refusal(url, http), 'ERR_CALLBACK_URL_PROTOCOL', url)
    }
  })

  test('allowPorts limits the port, counting the scheme default', () => {
    const policy = compileUrlPolicy({ allowPorts: [443, 8443] })
    assert.equal(refusal('https://example.com/', policy), undefined)
    assert.equal(refusal('https://example.com:8443/', policy), undefined)
    assert.equal(refusal('https://example.com:444/', policy), 'ERR_CALLBACK_URL_PORT')
    const http = compileUrlPolicy({ allowHttp: true, allowPorts: [443] })
    assert.equal(refusal('http://example.com/', http), 'ERR_CALLBACK_URL_PORT')
  })

  test('refusal messages never repeat the path, query or credentials', () => {
    for (const url of [
      'https://user:s3cr3t-pass@example.com/hook',
      'https://10.0.0.1/hook?token=s3cr3t-pass',
      'http://example.com/s3cr3t-pass',
      'https://localhost/s3cr3t-pass',
      'https://example.com:1/s3cr3t-pass',
    ]) {
      assert.throws(
        () => checkCallbackUrl(url, compileUrlPolicy({ allowPorts: [443] })),
        (error: unknown) => error instanceof UrlPolicyError && !error.message.includes('s3cr3t'),
        url,
      )
    }
  })
})

describe('allowHosts', () => {
  test('an allowed IP opens that address only, in any spelling', () => {
    const policy = compileUrlPolicy({ allowHosts: ['127.0.0.1'] })
    assert.equal(refusal('https://127.0.0.1:8080/', policy), undefined)
    assert.equal(refusal('https://0x7f.1/', policy), undefined)
    assert.equal(refusal('https://[::ffff:127.0.0.1]/', policy), undefined)
    assert.equal(refusal('https://127.0.0.2/', policy), 'ERR_CALLBACK_URL_FORBIDDEN_ADDRESS')
    assert.equal(refusal('https://[::1]/', policy), 'ERR_CALLBACK_URL_FORBIDDEN_ADDRESS')
    assert.equal(refusal('https://localhost/', policy), 'ERR_CALLBACK_URL_FORBIDDEN_ADDRESS')
  })

  test('a CIDR opens its network, IPv4 and IPv6 alike', () => {
    const policy = compileUrlPolicy({ allowHosts: ['10.20.0.0/16', 'fd00:1::/32', '[::1]'] })
    assert.equal(isForbiddenAddress('10.20.3.4', policy), false)
    assert.equal(isForbiddenAddress('10.21.3.4', policy), true)
    assert.equal(isForbiddenAddress('fd00:1:2::3', policy), false)
    assert.equal(isForbiddenAddress('fd00:2::3', policy), true)
    assert.equal(isForbiddenAddress('::1', policy), false)
  })

  test('an allowed name opens that name only, and all the addresses it resolves to', () => {
    const policy = compileUrlPolicy({ allowHosts: ['localhost', 'Dev.Internal.'] })
    assert.equal(refusal('https://localhost:3000/', policy), undefined)
    assert.equal(refusal('https://dev.internal/', policy), undefined)
    assert.equal(refusal('https://api.localhost/', policy), 'ERR_CALLBACK_URL_FORBIDDEN_ADDRESS')
    assert.equal(refusal('https://127.0.0.1/', policy), 'ERR_CALLBACK_URL_FORBIDDEN_ADDRESS')
    assert.deepEqual([...policy.allowNames], ['localhost', 'dev.internal'])
  })

  test('cloud metadata addresses stay refused inside an allowed network unless named one by one', () => {
    const wide = compileUrlPolicy({ allowHosts: ['169.254.0.0/16', '100.64.0.0/10'] })
    assert.equal(isForbiddenAddress('169.254.1.1', wide), false)
    assert.equal(forbiddenAddressReason('169.254.169.254', wide), 'a cloud metadata address')
    assert.equal(isForbiddenAddress('100.100.100.200', wide), true)
    assert.equal(isForbiddenAddress('169.254.169.254', compileUrlPolicy({ allowHosts: ['169.254.169.254'] })), false)
  })
})

describe('forbiddenAddressReason', () => {
  test('says why an address is refused', () => {
    assert.equal(forbiddenAddressReason('127.0.0.1', DEFAULT), 'a loopback address')
    assert.equal(forbiddenAddressReason('10.1.2.3', DEFAULT), 'a private address')
    assert.equal(forbiddenAddressReason('100.64.0.1', DEFAULT), 'a shared (CGNAT) address')
    assert.equal(forbiddenAddressReason('64:ff9b::7f00:1', DEFAULT), 'the NAT64 form of a loopback address')
    assert.equal(forbiddenAddressReason('2002:a00:1::', DEFAULT), 'the 6to4 form of a private address')
    assert.equal(forbiddenAddressReason('fe80::1%eth0', DEFAULT), 'a scoped address (zone id)')
    assert.equal(forbiddenAddressReason('example.com', DEFAULT), 'not an IP address')
    assert.equal(forbiddenAddressReason('93.184.216.34', DEFAULT), undefined)
    assert.equal(forbiddenAddressReason('2606:2800:220:1:248:1893:25c8:1946', DEFAULT), undefined)
  })
})

// ---------------------------------------------------------------------------------------------
// Fuzzing: every literal form of a forbidden address is refused; no input crashes the policy.

/** Networks whose every address must be refused, as [first address as uint32, prefix length]. */
const FORBIDDEN_V4: Array<[string, number]> = [
  ['0.0.0.0', 8],
  ['10.0.0.0', 8],
  ['100.64.0.0', 10],
  ['127.0.0.0', 8],
  ['169.254.0.0', 16],
  ['172.16.0.0', 12],
  ['192.0.0.0', 24],
  ['192.0.2.0', 24],
  ['192.168.0.0', 16],
  ['198.18.0.0', 15],
  ['198.51.100.0', 24],
  ['203.0.113.0', 24],
  ['224.0.0.0', 4],
  ['240.0.0.0', 4],
]

const toUint32 = (dotted: string) => dotted.split('.').reduce((value, part) => value * 256 + Number(part), 0)
const octets = (n: number) => [n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff] as const
const dotted = (n: number) => octets(n).join('.')
const hex16 = (n: number) => [(n >>> 16).toString(16), (n & 0xffff).toString(16)] as const

const forbiddenV4 = fc.constantFrom(...FORBIDDEN_V4).chain(([base, bits]) =>
  fc.integer({ min: 0, max: 2 ** (32 - bits) - 1 }).map((offset) => toUint32(base) + offset),
)
const publicV4 = fc
  .tuple(fc.constantFrom(1, 8, 9, 31, 45, 64, 93, 104, 151, 185, 212), fc.integer({ min: 0, max: 2 ** 24 - 1 }))
  .map(([first, rest]) => first * 2 ** 24 + rest)

type Radix = 'dec' | 'hex' | 'HEX' | 'oct'
const radix = fc.constantFrom<Radix>('dec', 'hex', 'HEX', 'oct')
function spell(value: number, how: Radix, zeros: number): string {
  if (how === 'dec') return String(value)
  if (how === 'oct') return `0${'0'.repeat(zeros)}${value.toString(8)}`
  const digits = `${'0'.repeat(zeros)}${value.toString(16)}`
  return how === 'hex' ? `0x${digits}` : `0X${digits.toUpperCase()}`
}

/** Every way the WHATWG URL parser accepts to write IPv4 address `n` as a host. */
function ipv4Host(n: number): fc.Arbitrary<string> {
  const [a, b, c, d] = octets(n)
  const partsFor = (parts: number[]) =>
    fc
      .tuple(fc.array(fc.tuple(radix, fc.integer({ min: 0, max: 2 })), { minLength: parts.length, maxLength: parts.length }), fc.boolean())
      .map(([styles, trailingDot]) => parts.map((part, i) => spell(part, styles[i]![0], styles[i]![1])).join('.') + (trailingDot ? '.' : ''))
  return fc.oneof(
    partsFor([n]), // 2130706433, 0x7f000001, 017700000001
    partsFor([a, n & 0xffffff]), // 127.1
    partsFor([a, b, n & 0xffff]), // 127.0.1
    partsFor([a, b, c, d]), // 0x7f.0.0.01
  )
}

/** IPv6 spellings that carry IPv4 address `n`. */
function ipv6CarryingV4(n: number): fc.Arbitrary<string> {
  const [hi, lo] = hex16(n)
  return fc
    .constantFrom(
      `::ffff:${dotted(n)}`,
      `::ffff:${hi}:${lo}`,
      `0:0:0:0:0:ffff:${hi}:${lo}`,
      `::${dotted(n)}`,
      `::${hi}:${lo}`,
      `::ffff:0:${dotted(n)}`,
      `64:ff9b::${dotted(n)}`,
      `64:ff9b::${hi}:${lo}`,
      `64:ff9b:0:0:0:0:${hi}:${lo}`,
      `2002:${hi}:${lo}::1`,
      `2002:${hi}:${lo}:ffff::${lo}`,
    )
    .chain((text) => fc.boolean().map((upper) => (upper ? text.toUpperCase() : text)))
}

const forbiddenV6Native = fc.oneof(
  fc.constantFrom('::1', '::', '0:0:0:0:0:0:0:1'),
  fc.tuple(fc.constantFrom(0xfc00, 0xfd00, 0xfe80, 0xfebf, 0xfec0, 0xff02, 0xff0e), fc.array(fc.integer({ min: 0, max: 0xffff }), { minLength: 7, maxLength: 7 })).map(
    ([first, rest]) => [(first | (rest[0]! & 0x3f)).toString(16), ...rest.map((part) => part.toString(16))].slice(0, 8).join(':'),
  ),
  fc.array(fc.integer({ min: 0, max: 0xffff }), { minLength: 6, maxLength: 6 }).map((rest) => `2001:db8:${rest.map((p) => p.toString(16)).join(':')}`),
)

describe('fuzzing the URL policy', () => {
  test('every spelling of a forbidden IPv4 address in a URL is refused', () => {
    fc.assert(
      fc.property(forbiddenV4.chain(ipv4Host), fc.constantFrom('https', 'http'), (host, scheme) => {
        assert.equal(refusal(`${scheme}://${host}/hook`, compileUrlPolicy({ allowHttp: true })), 'ERR_CALLBACK_URL_FORBIDDEN_ADDRESS', host)
      }),
      { numRuns: 2000 },
    )
  })

  test('the same spellings of a public IPv4 address pass, as its dotted-decimal form', () => {
    fc.assert(
      fc.property(publicV4.chain((n) => ipv4Host(n).map((host) => [n, host] as const)), ([n, host]) => {
        assert.equal(checkCallbackUrl(`https://${host}/`, DEFAULT).hostname, dotted(n), host)
      }),
      { numRuns: 500 },
    )
  })

  test('IPv4-mapped, IPv4-compatible, NAT64 and 6to4 forms of a forbidden address are refused, in a URL and from a resolver', () => {
    fc.assert(
      fc.property(forbiddenV4.chain(ipv6CarryingV4), (address) => {
        assert.equal(refusal(`https://[${address}]/`), 'ERR_CALLBACK_URL_FORBIDDEN_ADDRESS', address)
        assert.ok(isForbiddenAddress(address, DEFAULT), address)
      }),
      { numRuns: 2000 },
    )
  })

  test('forbidden IPv6 ranges (loopback, ULA, link-local, site-local, multicast, documentation) are refused', () => {
    fc.assert(
      fc.property(forbiddenV6Native, (address) => {
        assert.equal(refusal(`https://[${address}]/`), 'ERR_CALLBACK_URL_FORBIDDEN_ADDRESS', address)
        assert.ok(isForbiddenAddress(address, DEFAULT), address)
      }),
      { numRuns: 1000 },
    )
  })

  test('an address with a zone id is refused: invalid in a URL, forbidden from a resolver', () => {
    const zone = fc.stringMatching(/^[a-z0-9]{1,8}$/)
    const address = fc.oneof(forbiddenV6Native, fc.constantFrom('2606:4700::1111', '2001:4860:4860::8888'))
    fc.assert(
      fc.property(address, zone, (ip, id) => {
        assert.equal(refusal(`https://[${ip}%25${id}]/`), 'ERR_CALLBACK_URL_INVALID')
        assert.equal(forbiddenAddressReason(`${ip}%${id}`, DEFAULT), 'a scoped address (zone id)')
      }),
    )
  })

  test('no input string crashes the check: it returns an allowed URL or throws a UrlPolicyError with a documented code', () => {
    const scheme = fc.constantFrom('https://', 'http://', 'HTTPS://', 'ftp://', 'javascript:', '', '//', 'https:')
    const hostish = fc.oneof(
      fc.string(),
      fc.string({ unit: 'grapheme' }),
      fc.domain(),
      fc.ipV4().map(String),
      fc.ipV6().map((ip) => `[${ip}]`),
      forbiddenV4.chain(ipv4Host),
    )
    const rest = fc.oneof(fc.constant('/'), fc.string(), fc.webPath(), fc.string({ unit: 'binary' }))
    const policy = compileUrlPolicy({ allowHttp: true, allowPorts: [443, 8443], allowHosts: ['10.0.0.0/8', 'dev.example'] })
    fc.assert(
      fc.property(fc.oneof(fc.tuple(scheme, hostish, rest).map((parts) => parts.join('')), fc.webUrl(), fc.string({ unit: 'binary' })), (input) => {
        try {
          const url = checkCallbackUrl(input, policy)
          assert.ok(url.protocol === 'https:' || url.protocol === 'http:')
          assert.equal(url.username + url.password, '')
        } catch (error) {
          assert.ok(error instanceof UrlPolicyError, `${String(error)} for ${JSON.stringify(input)}`)
          assert.ok(CODES.has(error.code), error.code)
        }
      }),
      { numRuns: 3000 },
    )
  })

  test('no resolver answer crashes the connect-time check, and anything but a plain IP is refused', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string(), fc.ipV4(), fc.ipV6(), fc.ipV4Extended(), fc.anything()), (answer) => {
        const reason = forbiddenAddressReason(answer as string, DEFAULT)
        // inspect, not String(): an arbitrary value may have no usable toString
        assert.ok(reason === undefined || (typeof reason === 'string' && reason !== ''), `answer ${inspect(answer)} gave ${inspect(reason)}`)
        if (typeof answer !== 'string' || isIP(answer) === 0) assert.notEqual(reason, undefined, `${inspect(answer)} is not an IP address, yet allowed`)
      }),
      { numRuns: 2000 },
    )
  })
})
