import { test } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { decodeBase64Strict, decodePublicKey, decodeSecret, decodeSigningKey } from '../../src/signing/secrets.ts'
import { generateSecret, generateSigningKey } from 'endpoint-callback'

test('canonical base64 decodes to its bytes, with or without padding', () => {
  for (let length = 0; length <= 66; length++) {
    const bytes = randomBytes(length)
    const padded = bytes.toString('base64')
    assert.deepEqual(decodeBase64Strict(padded), bytes)
    assert.deepEqual(decodeBase64Strict(padded.replace(/=+$/, '')), bytes)
  }
})

test('text that a lenient decoder would silently shorten or alter is refused', () => {
  // Each of these decodes to *something* with Buffer.from(text, 'base64').
  for (const text of [
    'YWJj ZGVm', // space inside
    'YWJj\nZGVm', // line break
    'YWJj!ZGVm', // a character outside the alphabet
    'YWJjZGVm-_', // base64url characters
    'YWJjZA=', // one padding character where two are needed
    'YWJjZGU==', // two where one is needed
    'YWJjZ', // a length no encoding has
    'YW=JjZGVm', // padding in the middle
    'YR==', // stray bits after the last byte ('YQ==' is canonical)
    'YWI=YWI=', // two encodings glued together
  ]) {
    assert.ok(Buffer.from(text, 'base64').length > 0, `Node decodes ${JSON.stringify(text)} leniently`)
    assert.equal(decodeBase64Strict(text), undefined, JSON.stringify(text))
  }
})

test('a secret is checked for its prefix, its base64 and, to sign with, 24 to 64 bytes', () => {
  const of = (length: number) => 'whsec_' + randomBytes(length).toString('base64')
  assert.equal(decodeSecret(of(24), 'secret', 'sign').symmetricKeySize, 24)
  assert.equal(decodeSecret(of(64), 'secret', 'sign').symmetricKeySize, 64)
  assert.throws(() => decodeSecret(of(23), 'secret', 'sign'), /secret must hold 24 to 64 bytes to sign with, not 23/)
  assert.throws(() => decodeSecret(of(65), 'secret', 'sign'), /not 65/)
  assert.equal(decodeSecret(of(1), 'secret', 'verify').symmetricKeySize, 1)
  assert.equal(decodeSecret(of(128), 'secret', 'verify').symmetricKeySize, 128)
  assert.throws(() => decodeSecret(undefined, 'sender.secret', 'verify'), /^TypeError: sender\.secret must be a string/)
  assert.throws(() => decodeSecret('WHSEC_' + randomBytes(32).toString('base64'), 'secret', 'verify'), /must start with "whsec_"/)
})

test('a signing key must hold 64 bytes whose halves belong together, a public key 32 bytes', () => {
  const { signingKey, publicKey } = generateSigningKey()
  assert.equal(decodeSigningKey(signingKey, 'signingKey').asymmetricKeyType, 'ed25519')
  assert.equal(decodePublicKey(publicKey, 'publicKey').asymmetricKeyType, 'ed25519')
  const seedOnly = 'whsk_' + Buffer.from(signingKey.slice(5), 'base64').subarray(0, 32).toString('base64')
  assert.throws(() => decodeSigningKey(seedOnly, 'signingKey'), /must hold 64 bytes .*not 32/)
  assert.throws(() => decodeSigningKey(publicKey, 'signingKey'), /must start with "whsk_"/)
  assert.throws(() => decodePublicKey('whpk_' + randomBytes(33).toString('base64'), 'publicKey'), /not 33/)
})

test('error messages name the option but never contain the key material', () => {
  const secret = generateSecret()
  const broken = secret.slice(0, 20) + '*' + secret.slice(21)
  for (const attempt of [
    () => decodeSecret(broken, 'secret', 'sign'),
    () => decodeSecret(secret.slice(6), 'secret', 'sign'),
    () => decodePublicKey(secret, 'publicKey'),
    () => decodeSigningKey(secret.replace('whsec_', 'whsk_'), 'signingKey'),
  ]) {
    assert.throws(attempt, (error: Error) => {
      assert.ok(error instanceof TypeError)
      assert.ok(!error.message.includes(secret.slice(6, 20)), error.message)
      return true
    })
  }
})
