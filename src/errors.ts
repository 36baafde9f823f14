/**
 * Every error this library throws on purpose is a {@link CallbackError} with a stable `code`.
 * Bad arguments are plain `TypeError`s naming the option, thrown at once.
 *
 * @example
 * ```ts
 * try {
 *   await verifySignature({ headers, body }, { secret })
 * } catch (error) {
 *   if (error instanceof SignatureVerificationError) console.log(error.code)
 * }
 * ```
 */

/** The closed set of error codes. A code, once published, keeps its meaning. */
export type CallbackErrorCode =
  // receiving side: verification
  | 'ERR_CALLBACK_SIGNATURE_HEADERS_MISSING'
  | 'ERR_CALLBACK_SIGNATURE_TIMESTAMP_MALFORMED'
  | 'ERR_CALLBACK_SIGNATURE_TIMESTAMP_TOO_OLD'
  | 'ERR_CALLBACK_SIGNATURE_TIMESTAMP_TOO_NEW'
  | 'ERR_CALLBACK_SIGNATURE_MALFORMED'
  | 'ERR_CALLBACK_SIGNATURE_MISMATCH'
  // receiving side: the HTTP request around it
  | 'ERR_CALLBACK_BODY_TOO_LARGE'
  | 'ERR_CALLBACK_CONTENT_TYPE'
  | 'ERR_CALLBACK_RAW_BODY_UNAVAILABLE'
  | 'ERR_CALLBACK_DUPLICATE_IN_FLIGHT'
  | 'ERR_CALLBACK_DECRYPTION_FAILED'
  | 'ERR_CALLBACK_DECRYPTION_KEY_MISSING'
  | 'ERR_CALLBACK_JWKS'
  // sending side: the callback URL
  | 'ERR_CALLBACK_URL_INVALID'
  | 'ERR_CALLBACK_URL_PROTOCOL'
  | 'ERR_CALLBACK_URL_PORT'
  | 'ERR_CALLBACK_URL_FORBIDDEN_ADDRESS'
  | 'ERR_CALLBACK_INTENT_NOT_VERIFIED'
  // sending side: tasks and delivery
  | 'ERR_CALLBACK_TASK_NOT_FOUND'
  | 'ERR_CALLBACK_TASK_STATE'
  | 'ERR_CALLBACK_IDEMPOTENCY_CONFLICT'
  | 'ERR_CALLBACK_PAYLOAD_INVALID'
  | 'ERR_CALLBACK_DEADLINE_EXCEEDED'
  | 'ERR_CALLBACK_PENDING_EXPIRED'
  | 'ERR_CALLBACK_TIMEOUT'
  | 'ERR_CALLBACK_CONNECTION'
  | 'ERR_CALLBACK_DNS'
  | 'ERR_CALLBACK_TLS'
  | 'ERR_CALLBACK_STORE'
  | 'ERR_CALLBACK_WORKER_STOPPING'

/** Base class of every error the library throws on purpose. */
export class CallbackError extends Error {
  /** Stable, machine-readable reason. */
  readonly code: CallbackErrorCode

  constructor(code: CallbackErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause })
    this.name = 'CallbackError'
    this.code = code
  }
}

/**
 * A received callback did not verify: headers missing or malformed, timestamp out of tolerance,
 * or no signature matched. Receivers answer 400 or 401 for it.
 */
export class SignatureVerificationError extends CallbackError {
  constructor(code: CallbackErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options)
    this.name = 'SignatureVerificationError'
  }
}

/** A callback URL, or an address it resolved to, is refused by the URL policy. */
export class UrlPolicyError extends CallbackError {
  constructor(code: CallbackErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options)
    this.name = 'UrlPolicyError'
  }
}

/** One delivery attempt failed on the network: timeout, reset, DNS or TLS. */
export class DeliveryError extends CallbackError {
  constructor(code: CallbackErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options)
    this.name = 'DeliveryError'
  }
}

/** A task is unknown or in a state that does not allow the call. */
export class TaskError extends CallbackError {
  constructor(code: CallbackErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options)
    this.name = 'TaskError'
  }
}

/** The receiving HTTP request cannot be processed (too large, wrong type, raw body gone). */
export class ReceiverError extends CallbackError {
  constructor(code: CallbackErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options)
    this.name = 'ReceiverError'
  }
}

/** A store could not carry out an operation. */
export class StoreError extends CallbackError {
  constructor(code: CallbackErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options)
    this.name = 'StoreError'
  }
}
