import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFile } from 'node:fs/promises'
import { VERSION, CallbackError, SignatureVerificationError } from 'endpoint-callback'

test('the user-agent version is the package version', async () => {
  const pkg = JSON.parse(await readFile(new URL('../package.json', import.meta.url), 'utf8'))
  assert.equal(VERSION, pkg.version)
})

test('errors keep their code and cause and are CallbackErrors', () => {
  const cause = new Error('inner')
  const error = new SignatureVerificationError('ERR_CALLBACK_SIGNATURE_MISMATCH', 'no signature matched', { cause })
  assert.ok(error instanceof CallbackError)
  assert.equal(error.code, 'ERR_CALLBACK_SIGNATURE_MISMATCH')
  assert.equal(error.cause, cause)
  assert.equal(error.name, 'SignatureVerificationError')
})
