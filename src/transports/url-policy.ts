/**
 * The SSRF guard: which callback URLs and which resolved addresses a sender may call.
 *
 * A service that POSTs to URLs its clients choose must not become a way into its own network, so
 * by default only `https:` URLs on globally routable addresses are called. The URL is checked when
 * a task is created (no DNS: literal addresses and forbidden names) and every address a name
 * resolves to is checked again at connect time by the HTTP transport.
 */
import { isIP } from 'node:net'
import ipaddr from 'ipaddr.js'
import { UrlPolicyError } from '../errors.ts'
import type { UrlPolicy } from '../types.ts'
import { checkOptionNames } from '../option-names.ts'

type IPv4 = ipaddr.IPv4
type IPv6 = ipaddr.IPv6
type Address = IPv4 | IPv6

/**
 * A {@link UrlPolicy} validated and pre-parsed once by {@link compileUrlPolicy}. Treat it as opaque.
 */
export interface CompiledUrlPolicy {
  readonly allowHttp: boolean
  /** `undefined`: every port. */
  readonly allowPorts: ReadonlySet<number> | undefined
  /** Lower-case hostnames, without a trailing dot, whose resolved addresses are all trusted. */
  readonly allowNames: ReadonlySet<string>
  /** Addresses and networks allowed although not globally routable. */
  readonly allowRanges: ReadonlyArray<readonly [Address, number]>
}

/** Longest callback URL accepted; longer ones are refused as invalid rather than stored. */
const MAX_URL_LENGTH = 8192

/**
 * Names that never belong to a public endpoint: loopback names (RFC 6761), special-use and private
 * top-level domains, and the names cloud providers give their instance-metadata services.
 */
const FORBIDDEN_NAMES = new Set([
  'localhost',
  'metadata',
  'metadata.goog',
  'metadata.google.internal',
  'instance-data',
  'instance-data.ec2.internal',
  'metadata.azure.internal',
  'kubernetes.default',
  'kubernetes.default.svc',
])
const FORBIDDEN_SUFFIXES = ['.localhost', '.local', '.internal', '.home.arpa', '.localdomain']

/**
 * Metadata endpoints that sit on otherwise public (or otherwise allowed) addresses. The common
 * `169.254.169.254`, `fd00:ec2::254` and `100.100.100.200` are link-local, ULA and CGNAT and refused
 * by range anyway; they are listed so that they stay refused even when a user allows those ranges.
 */
const METADATA_ADDRESSES: ReadonlyArray<Address> = [
  '169.254.169.254', // AWS, GCP, Azure, OCI, DigitalOcean, ...
  '169.254.170.2', // AWS ECS task metadata
  '168.63.129.16', // Azure wire server (public address, reachable only from inside Azure)
  '100.100.100.200', // Alibaba Cloud
  'fd00:ec2::254', // AWS IMDS over IPv6
].map((text) => ipaddr.parse(text))

const IPV4_PUBLIC_RANGES = new Set(['unicast', 'as112', 'amt'])
const IPV6_PUBLIC_RANGES = new Set(['unicast', 'as112v6', 'amt', 'droneRemoteIdProtocolEntityTags'])

const IPV4_REASONS: Record<string, string> = {
  unspecified: 'an unspecified',
  broadcast: 'a broadcast',
  multicast: 'a multicast',
  linkLocal: 'a link-local',
  loopback: 'a loopback',
  carrierGradeNat: 'a shared (CGNAT)',
  private: 'a private',
  reserved: 'a reserved (documentation, benchmarking or future use)',
}

/**
 * Validates the URL policy options once and pre-parses `allowHosts` (hostnames, IP addresses and
 * CIDRs). Throws a `TypeError` naming the offending option.
 *
 * @example
 * ```ts
 * const policy = compileUrlPolicy({ allowHttp: true, allowHosts: ['127.0.0.1', '10.1.0.0/16', 'localhost'] })
 * checkCallbackUrl('http://127.0.0.1:3000/callbacks', policy) // a URL
 * ```
 */
const URL_POLICY_OPTION_NAMES: ReadonlySet<string> = new Set(['allowHttp', 'allowHosts', 'allowPorts'])

export function compileUrlPolicy(policy?: UrlPolicy): CompiledUrlPolicy {
  if (policy === undefined) return { allowHttp: false, allowPorts: undefined, allowNames: new Set(), allowRanges: [] }
  if (policy === null || typeof policy !== 'object') throw new TypeError('urlPolicy must be an object')
  checkOptionNames(policy, URL_POLICY_OPTION_NAMES, 'urlPolicy')
  const { allowHttp = false, allowHosts = [], allowPorts } = policy
  if (typeof allowHttp !== 'boolean') throw new TypeError('urlPolicy.allowHttp must be a boolean')
  if (!Array.isArray(allowHosts)) throw new TypeError('urlPolicy.allowHosts must be an array of hostnames, IP addresses or CIDRs')
  let ports: Set<number> | undefined
  if (allowPorts !== undefined) {
    if (!Array.isArray(allowPorts)) throw new TypeError('urlPolicy.allowPorts must be an array of port numbers')
    ports = new Set()
    allowPorts.forEach((port, i) => {
      if (!Number.isInteger(port) || port < 1 || port > 65535) {
        throw new TypeError(`urlPolicy.allowPorts[${i}] must be an integer from 1 to 65535`)
      }
      ports!.add(port)
    })
  }
  const allowNames = new Set<string>()
  const allowRanges: Array<readonly [Address, number]> = []
  allowHosts.forEach((entry: unknown, i) => {
    const option = `urlPolicy.allowHosts[${i}]`
    if (typeof entry !== 'string' || entry.length === 0) {
      throw new TypeError(`${option} must be a non-empty string: a hostname, an IP address or a CIDR`)
    }
    if (entry.includes('/')) {
      const [address, bits] = entry.split('/', 2) as [string, string]
      const parsed = parseStrictAddress(address)
      if (parsed === undefined || !/^\d{1,3}$/.test(bits) || Number(bits) > (parsed.kind() === 'ipv4' ? 32 : 128)) {
        throw new TypeError(`${option} is not a valid CIDR (expected e.g. "10.0.0.0/8" or "fd00::/8")`)
      }
      allowRanges.push([parsed, Number(bits)])
      return
    }
    const bare = entry.startsWith('[') && entry.endsWith(']') ? entry.slice(1, -1) : entry
    if (isIP(bare) !== 0) {
      const parsed = parseStrictAddress(bare)
      if (parsed === undefined) throw new TypeError(`${option} is not a valid IP address (zone ids are not allowed)`)
      allowRanges.push([parsed, parsed.kind() === 'ipv4' ? 32 : 128])
      return
    }
    allowNames.add(hostnameOf(entry, option))
  })
  return { allowHttp, allowPorts: ports, allowNames, allowRanges }
}

/** Dotted-decimal IPv4 or IPv6 without a zone id; the lenient forms are for URLs, not options. */
function parseStrictAddress(text: string): Address | undefined {
  if (isIP(text) === 0 || text.includes('%')) return undefined
  try {
    return ipaddr.parse(text)
  } catch {
    return undefined
  }
}

function hostnameOf(entry: string, option: string): string {
  let url: URL | undefined
  try {
    url = new URL(`http://${entry}/`)
  } catch {
    url = undefined
  }
  const name = stripTrailingDots(entry.toLowerCase())
  if (url === undefined || url.host !== url.hostname || stripTrailingDots(url.hostname) !== name || url.username !== '' || name === '') {
    throw new TypeError(`${option} must be a hostname, an IP address or a CIDR`)
  }
  return name
}

function stripTrailingDots(name: string): string {
  let end = name.length
  while (end > 0 && name.charCodeAt(end - 1) === 46) end--
  return name.slice(0, end)
}

/**
 * Checks a callback URL against the policy without any DNS lookup, and returns it parsed.
 *
 * Refused: anything but `https:` (`http:` too with `allowHttp`), credentials in the URL, ports
 * outside `allowPorts`, literal addresses that are not globally routable in any notation the URL
 * parser accepts (decimal, octal, hex, shortened IPv4; IPv4-mapped, NAT64 and 6to4 IPv6), and
 * names that never denote a public endpoint (`localhost`, `*.localhost`, `*.internal`, `*.local`,
 * cloud metadata names) — unless `allowHosts` opts them in. Names that resolve to forbidden
 * addresses are refused later, at connect time, by the transport.
 *
 * Throws a `UrlPolicyError` with code `ERR_CALLBACK_URL_INVALID`, `ERR_CALLBACK_URL_PROTOCOL`,
 * `ERR_CALLBACK_URL_PORT` or `ERR_CALLBACK_URL_FORBIDDEN_ADDRESS`; a `TypeError` when `url` is not
 * a string. Messages name the host at most, never the path or query (they may carry tokens).
 *
 * @example
 * ```ts
 * const policy = compileUrlPolicy()
 * checkCallbackUrl('https://example.com/hooks', policy) // URL
 * checkCallbackUrl('https://169.254.169.254/latest', policy) // throws ERR_CALLBACK_URL_FORBIDDEN_ADDRESS
 * ```
 */
export function checkCallbackUrl(url: string, policy: CompiledUrlPolicy): URL {
  if (typeof url !== 'string') throw new TypeError('callbackUrl must be a string')
  if (url.length > MAX_URL_LENGTH) {
    throw new UrlPolicyError('ERR_CALLBACK_URL_INVALID', `callback URL is longer than ${MAX_URL_LENGTH} characters`)
  }
  let parsed: URL
  try {
    parsed = new URL(url)
  } catch (cause) {
    throw new UrlPolicyError('ERR_CALLBACK_URL_INVALID', 'callback URL is not a valid absolute URL', { cause })
  }
  checkProtocol(parsed.protocol, policy)
  if (parsed.username !== '' || parsed.password !== '') {
    throw new UrlPolicyError('ERR_CALLBACK_URL_INVALID', 'callback URL must not contain credentials')
  }
  checkPort(parsed.protocol, parsed.port, policy)
  checkHost(parsed.hostname, policy)
  return parsed
}

/**
 * The scheme and port parts of {@link checkCallbackUrl}, for a connection about to be opened
 * (`protocol` as `'https:'`, `port` as a URL spells it, `''` for the default).
 *
 * @example
 * ```ts
 * checkTarget('http:', '8080', compileUrlPolicy()) // throws ERR_CALLBACK_URL_PROTOCOL
 * ```
 */
export function checkTarget(protocol: string, port: string | number, policy: CompiledUrlPolicy): void {
  checkProtocol(protocol, policy)
  checkPort(protocol, String(port), policy)
}

function checkProtocol(protocol: string, policy: CompiledUrlPolicy): void {
  if (protocol === 'https:' || (protocol === 'http:' && policy.allowHttp)) return
  const hint = protocol === 'http:' ? ' (set urlPolicy.allowHttp to allow plain http)' : ''
  throw new UrlPolicyError('ERR_CALLBACK_URL_PROTOCOL', `callback URL must use https:, not ${protocolName(protocol)}${hint}`)
}

function checkPort(protocol: string, text: string, policy: CompiledUrlPolicy): void {
  const port = text === '' ? (protocol === 'https:' ? 443 : 80) : Number(text)
  if (port === 0 || (policy.allowPorts !== undefined && !policy.allowPorts.has(port))) {
    throw new UrlPolicyError('ERR_CALLBACK_URL_PORT', `callback URL port ${port} is not allowed`)
  }
}

/**
 * The host part of {@link checkCallbackUrl}: `host` as a URL spells it (`[::1]`, `127.0.0.1`,
 * `example.com`). Literal addresses and local names are refused; other names pass (their addresses
 * are vetted at connect time).
 *
 * @example
 * ```ts
 * checkHost('[::ffff:7f00:1]', compileUrlPolicy()) // throws ERR_CALLBACK_URL_FORBIDDEN_ADDRESS
 * ```
 */
export function checkHost(host: string, policy: CompiledUrlPolicy): void {
  if (host.startsWith('[') && host.endsWith(']')) {
    checkAddress(host.slice(1, -1), policy, host)
    return
  }
  // The URL parser has already turned every IPv4 notation (0x7f.1, 2130706433, 0177.0.0.1, ...)
  // into dotted decimal, so a name that looks like one is one.
  if (isIP(host) !== 0) {
    checkAddress(host, policy, host)
    return
  }
  const name = stripTrailingDots(host.toLowerCase())
  if (name === '') throw new UrlPolicyError('ERR_CALLBACK_URL_INVALID', 'callback URL has no host')
  if (policy.allowNames.has(name)) return
  if (FORBIDDEN_NAMES.has(name) || FORBIDDEN_SUFFIXES.some((suffix) => name.endsWith(suffix))) {
    throw new UrlPolicyError(
      'ERR_CALLBACK_URL_FORBIDDEN_ADDRESS',
      `callback host ${name} is a local or internal name (add it to urlPolicy.allowHosts to allow it)`,
    )
  }
}

function protocolName(protocol: string): string {
  // Only a short, printable scheme goes into the message; the rest of the URL never does.
  return /^[a-z][a-z0-9+.-]{0,20}:$/.test(protocol) ? protocol : 'this scheme'
}

/**
 * Why `address` (an IP address in text) must not be called under `policy`, or `undefined` when it
 * may. Anything that is not a plain IP address (including IPv6 with a zone id) is refused.
 *
 * @example
 * ```ts
 * forbiddenAddressReason('10.0.0.7', compileUrlPolicy()) // 'a private address'
 * forbiddenAddressReason('93.184.216.34', compileUrlPolicy()) // undefined
 * ```
 */
export function forbiddenAddressReason(address: string, policy: CompiledUrlPolicy): string | undefined {
  if (typeof address !== 'string' || isIP(address) === 0) return 'not an IP address'
  let parsed: Address
  try {
    parsed = ipaddr.parse(address)
  } catch {
    return 'not an IP address'
  }
  if (parsed.kind() === 'ipv6' && (parsed as IPv6).zoneId !== undefined) return 'a scoped address (zone id)'
  if (METADATA_ADDRESSES.some((metadata) => sameAddress(metadata, parsed)) && !isAllowedExactly(parsed, policy)) {
    return 'a cloud metadata address'
  }
  if (isAllowed(parsed, policy)) return undefined
  return parsed.kind() === 'ipv4' ? ipv4Reason(parsed as IPv4) : ipv6Reason(parsed as IPv6)
}

/**
 * `true` when `address` must not be called under `policy`; the transport asks this for every
 * address a resolver returns, before a socket is opened.
 *
 * @example
 * ```ts
 * isForbiddenAddress('::ffff:127.0.0.1', compileUrlPolicy()) // true
 * ```
 */
export function isForbiddenAddress(address: string, policy: CompiledUrlPolicy): boolean {
  return forbiddenAddressReason(address, policy) !== undefined
}

/**
 * Throws `UrlPolicyError` `ERR_CALLBACK_URL_FORBIDDEN_ADDRESS` when `address` is forbidden; `host`
 * names the callback host in the message.
 */
export function checkAddress(address: string, policy: CompiledUrlPolicy, host: string): void {
  const reason = forbiddenAddressReason(address, policy)
  if (reason === undefined) return
  const target = host === address || host === `[${address}]` ? `callback address ${host}` : `callback host ${host} resolves to ${address}, which`
  throw new UrlPolicyError(
    'ERR_CALLBACK_URL_FORBIDDEN_ADDRESS',
    `${target} is ${reason}${reason.endsWith('address') ? '' : ' address'} and not allowed (see urlPolicy.allowHosts)`,
  )
}

function isAllowed(address: Address, policy: CompiledUrlPolicy): boolean {
  if (policy.allowRanges.length === 0) return false
  // An allowed IPv4 network also allows its IPv4-mapped IPv6 spelling: same destination.
  const mapped = address.kind() === 'ipv6' && (address as IPv6).isIPv4MappedAddress() ? (address as IPv6).toIPv4Address() : undefined
  return policy.allowRanges.some(([network, bits]) => {
    if (network.kind() === address.kind() && address.match(network, bits)) return true
    return mapped !== undefined && network.kind() === 'ipv4' && mapped.match(network, bits)
  })
}

/** Metadata addresses pass only when named one by one, never as part of an allowed network. */
function isAllowedExactly(address: Address, policy: CompiledUrlPolicy): boolean {
  const full = address.kind() === 'ipv4' ? 32 : 128
  return policy.allowRanges.some(([network, bits]) => bits === full && sameAddress(network, address))
}

function sameAddress(a: Address, b: Address): boolean {
  return a.kind() === b.kind() && a.toNormalizedString() === b.toNormalizedString()
}

function ipv4Reason(address: IPv4): string | undefined {
  const range = address.range()
  if (IPV4_PUBLIC_RANGES.has(range)) return undefined
  return `${IPV4_REASONS[range] ?? 'a non-public'} address`
}

function ipv6Reason(address: IPv6): string | undefined {
  const p = address.parts as [number, number, number, number, number, number, number, number]
  const embedded = (hi: number, lo: number) => new ipaddr.IPv4([hi >> 8, hi & 0xff, lo >> 8, lo & 0xff])
  if (p[0] === 0 && p[1] === 0 && p[2] === 0 && p[3] === 0 && p[4] === 0) {
    if (p[5] === 0xffff) return 'an IPv4-mapped IPv6 address'
    if (p[5] === 0) {
      if (p[6] === 0 && p[7] === 0) return 'an unspecified address'
      if (p[6] === 0 && p[7] === 1) return 'a loopback address'
      return 'an IPv4-compatible IPv6 address'
    }
  }
  const range = address.range()
  switch (range) {
    case 'rfc6145':
      return 'an IPv4-translated IPv6 address'
    case 'rfc6052': {
      // 64:ff9b::/96 reaches the public IPv4 internet through NAT64; the local-use /48 does not.
      if (p[1] !== 0xff9b || p[2] !== 0) return 'a local-use NAT64 address'
      const reason = ipv4Reason(embedded(p[6], p[7]))
      return reason === undefined ? undefined : `the NAT64 form of ${reason}`
    }
    case '6to4': {
      const reason = ipv4Reason(embedded(p[1], p[2]))
      return reason === undefined ? undefined : `the 6to4 form of ${reason}`
    }
    case 'teredo':
      return 'a Teredo address'
  }
  // Global unicast is 2000::/3; everything outside it is special (ULA, link-local, multicast, ...).
  if ((p[0] & 0xe000) !== 0x2000) {
    const names: Record<string, string> = {
      linkLocal: 'a link-local address',
      multicast: 'a multicast address',
      uniqueLocal: 'a unique local (ULA) address',
      deprecatedSiteLocal: 'a site-local address',
      discard: 'a discard-only address',
    }
    return names[range] ?? 'a non-global IPv6 address'
  }
  if (IPV6_PUBLIC_RANGES.has(range)) return undefined
  return 'a reserved (documentation, benchmarking or protocol) IPv6 address'
}
