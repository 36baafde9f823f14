/**
 * What published keys and encrypted payloads cost a receiver and a sender, each beside its
 * baseline in one run:
 *
 * - `v1a` verification with the keys of a remote JWKS (fetched once over loopback, then cached)
 *   against the same verification with the `whpk_` key configured statically;
 * - `encryptPayload` + `decryptPayload` of a 1 KiB envelope against bare jose `CompactEncrypt` +
 *   `compactDecrypt` with the same keys and algorithms (ECDH-ES + A256GCM, X25519).
 *
 * Rounds alternate between the contenders so noise hits all alike; the median round is reported.
 * Stops by itself in about 20 s.
 *
 *   node --conditions=endpoint-callback-source --import tsx --expose-gc bench/jwks-jwe.ts
 */
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { CompactEncrypt, compactDecrypt } from 'jose'
import {
  createJwksHandler,
  createRemoteJwks,
  decryptPayload,
  encryptPayload,
  generateEncryptionKey,
  generateSigningKey,
  signPayload,
  verifySignature
} from 'endpoint-callback'
import { measureRounds, type Contender } from './support/rounds.ts'

const ROUNDS = 7
const ROUND_MS = 300

const measure = (contenders: Contender[]) => measureRounds(contenders, { rounds: ROUNDS, roundMs: ROUND_MS })

function row(label: string, ops: number): string {
  return `  ${label.padEnd(26)} ${Math.round(ops).toLocaleString('en-US').padStart(10)} ops/s ${(1e6 / ops).toFixed(2).padStart(9)} µs/op`
}

const envelope = JSON.stringify({ type: 'report.ready', timestamp: new Date().toISOString(), data: { text: 'x'.repeat(950) } })

// --- v1a with remote JWKS keys vs static keys
const sender = generateSigningKey()
const server = createServer(createJwksHandler(sender.signingKey))
await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
const { port } = server.address() as AddressInfo
const remote = createRemoteJwks(`http://127.0.0.1:${port}/jwks`, { allowHttp: true })
const staticOptions = { publicKey: sender.publicKey }
const request = { headers: signPayload({ id: 'task_1', timestamp: new Date(), body: envelope }, { signingKey: sender.signingKey }), body: envelope }
await remote.publicKeys() // the one fetch; every call below is served from the cache

const verifyResults = await measure([
  {
    name: 'static publicKey',
    run: async (n) => {
      for (let i = 0; i < n; i++) await verifySignature(request, staticOptions)
    }
  },
  {
    name: 'remote JWKS (cached)',
    run: async (n) => {
      // As a receiver would: the options object is rebuilt only when the key list changes.
      let keys = await remote.publicKeys()
      let options = { publicKey: keys }
      for (let i = 0; i < n; i++) {
        const current = await remote.publicKeys()
        if (current !== keys) options = { publicKey: (keys = current) }
        await verifySignature(request, options)
      }
    }
  }
])
server.close()

// --- JWE: ours vs bare jose
const { privateJwk, publicJwk } = await generateEncryptionKey()
const plaintext = new TextEncoder().encode(envelope)
const jweResults = await measure([
  {
    name: 'bare jose encrypt+decrypt',
    run: async (n) => {
      for (let i = 0; i < n; i++) {
        const jwe = await new CompactEncrypt(plaintext).setProtectedHeader({ alg: 'ECDH-ES', enc: 'A256GCM', cty: 'application/json' }).encrypt(publicJwk)
        await compactDecrypt(jwe, privateJwk, { keyManagementAlgorithms: ['ECDH-ES'], contentEncryptionAlgorithms: ['A256GCM'] })
      }
    }
  },
  {
    name: 'encryptPayload+decrypt',
    run: async (n) => {
      for (let i = 0; i < n; i++) {
        const { body } = await encryptPayload(envelope, publicJwk)
        await decryptPayload(body, privateJwk)
      }
    }
  }
])

const staticOps = verifyResults.get('static publicKey')!
const remoteOps = verifyResults.get('remote JWKS (cached)')!
console.log('v1a verify, 1 KiB body')
console.log(row('static publicKey', staticOps))
console.log(row('remote JWKS (cached)', remoteOps))
console.log(`  ratio remote/static: ${(remoteOps / staticOps).toFixed(2)}`)
const bareOps = jweResults.get('bare jose encrypt+decrypt')!
const oursOps = jweResults.get('encryptPayload+decrypt')!
console.log('JWE round trip (ECDH-ES X25519 + A256GCM), 1 KiB envelope')
console.log(row('bare jose', bareOps))
console.log(row('encryptPayload+decrypt', oursOps))
console.log(`  ratio ours/bare: ${(oursOps / bareOps).toFixed(2)}`)
