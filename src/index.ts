/**
 * The sending side (tasks, delivery, workers, the memory store), signing and verification, secrets
 * and keys, and the errors every part throws. The receivers for Express, Koa and Web `Request`s,
 * the PostgreSQL and Redis stores and the store conformance suite are their own subpath entries.
 *
 * @module endpoint-callback
 */
export * from './errors.ts'
export type * from './types.ts'
export { VERSION } from './version.ts'
export { generateSecret, generateSigningKey } from './signing/secrets.ts'
export { createSigner, signPayload } from './signing/standard-webhooks.ts'
export type { SignableMessage, SignatureHeaders, SignOptions, Signer } from './signing/standard-webhooks.ts'
export { createVerifier, verifySignature } from './verify.ts'
export type { VerifiableRequest, Verifier } from './verify.ts'
export type { ReceiverOptions } from './receivers/core.ts'
export { createMemoryReplayGuard } from './receivers/replay-guard.ts'
export type { MemoryReplayGuardOptions } from './receivers/replay-guard.ts'
export { createHttpTransport } from './transports/http.ts'
export type { HttpTransport, HttpTransportOptions, LookupFunction } from './transports/http.ts'
export { createCallbackTask, createCallbackTasks } from './task.ts'
export type { CallbackTaskInput, CallbackTaskResult, CreatedCallbackTask } from './task.ts'
export { deliver } from './deliver.ts'
export { createWorker } from './worker.ts'
export type { Worker, WorkerOptions } from './worker.ts'
export type { BreakerOptions } from './destinations/breaker.ts'
export type { DestinationOptions } from './destinations/policy.ts'
export { createMemoryStore } from './stores/memory.ts'
export type { MemoryStoreOptions } from './stores/memory.ts'
export { createJwksHandler, createKeyRing, jwkToPublicKey, jwkToSigningKey, keyId, publicJwks, publicKeyToJwk, signingKeyToJwk } from './signing/jws.ts'
export type { JwksHandler, JwksHandlerOptions, JwksSource, KeyRing, KeyRingEntry, KeyRingOptions, PublishedSigningJwk, SigningJwks } from './signing/jws.ts'
export { createRemoteJwks } from './signing/jwks-remote.ts'
export type { JwksFetch, JwksFetchOptions, RemoteJwks, RemoteJwksOptions } from './signing/jwks-remote.ts'
export { checkEncryptionKey, createRemoteEncryptionKey, decryptCallback, decryptPayload, encryptPayload, generateEncryptionKey, JOSE_CONTENT_TYPE } from './signing/jwe.ts'
export type { DecryptedPayload, DecryptionKey, EncryptedPayload, EncryptionKey, EncryptionKeyPair, EncryptionKeySource, EncryptionRecipient, EncryptPayloadOptions, JweAlgorithmOptions } from './signing/jwe.ts'
export { answerIntentChallenge, INTENT_EVENT, INTENT_HEADER, verifyIntent } from './intent.ts'
export type { IntentAnswer, IntentClaim, IntentMessage, VerifyIntentOptions } from './intent.ts'
export { cancelTask, listAttempts, listDestinations, listFailedTasks, listTasks, redeliverFailed, redeliverTask } from './inspect.ts'
export type { InspectOptions, RedeliverFailedOptions, RedeliverFailedResult } from './inspect.ts'
