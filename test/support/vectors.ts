/**
 * Published Standard Webhooks test vectors (data only). Source: the reference libraries' test
 * suites in github.com/standard-webhooks/standard-webhooks, `libraries/`:
 * - `javascript/src/webhook.test.ts`, `python/tests/test_webhooks.py`, `go/webhook_test.go`,
 *   `php/tests/WebhookTest.php`, `java/.../WebhookTest.java`, `csharp/.../WebhookTest.cs`,
 *   `ruby/spec/webhook_spec.rb` all share the first HMAC vector and the verify cases;
 * - `rust/src/lib.rs` (tests module) has the second HMAC vector and its non-matching signatures;
 * - `go/webhook_asymmetric_test.go` has the Ed25519 (`v1a`) vector, whose key is a 32-byte seed.
 */

/** Signing vectors: these inputs must give exactly `signature`. */
export const signingVectors = [
  {
    source: 'libraries/{javascript,python,go,php,java,csharp,ruby} "sign function works"',
    secret: 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw',
    id: 'msg_p5jXN8AQM9LWM0D4loKWxJek',
    timestamp: 1614265330,
    payload: '{"test": 2432232314}',
    signature: 'v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=',
  },
  {
    source: 'libraries/rust/src/lib.rs test_sign',
    secret: 'whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD',
    id: 'msg_27UH4WbU6Z5A5EzD8u03UvzRbpk',
    timestamp: 1649367553,
    payload: '{"email":"test@example.com","username":"test_user"}',
    signature: 'v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=',
  },
] as const

/** The Ed25519 vector (`TestAsymmetricWebhookSign`): the key is the base64 of a 32-byte seed. */
export const asymmetricVector = {
  source: 'libraries/go/webhook_asymmetric_test.go TestAsymmetricWebhookSign',
  seed: 'VEVTVFNJR05JTkdLRVlET05PVFVTRVRISVNGT1JBTlk=',
  id: 'msg_p5jXN8AQM9LWM0D4loKWxJek',
  timestamp: 1614265330,
  payload: '{"test": 2432232314}',
  signature: 'v1a,tQ9V2XOqn7jL/DQenEFpqIugdBVtiMmER5mhSkXBNwM0mkATuDe6KYYUuxqtaiHeYGb7KaaBRdM5WqyeFiL8Ag==',
} as const

/** Signatures the suites put in a header next to (or instead of) the valid one; none may match. */
export const decoySignatures = {
  /** "multi sig payload is valid": surround the valid entry with these. */
  multi: [
    'v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=',
    'v2,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=',
    'v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=',
  ],
  /** rust `test_no_verify_with_multiple_signatures`: none matches. */
  rustMulti: [
    'v1,tFtCZ5RDCPxzWQRWXWPgrCgE2frDBe9gjpbWQxnVfsQ=',
    'v1,Mm7xgUVICxZfQ3bgf0h0Dof65L/IFx+PnZvnDWPCX6Q=',
    'v1,9DfC1c3eeOrXB6w/5dIDydLNQaEyww5KalE5jLBZucE=',
  ],
  /** rust `test_no_verify`. */
  rustSingle: 'v1,R3PTzyfHASBKHH98a7yexTwaJ4yNIcGhFQc1yuN+BPU=',
  /** python `test_invalid_signature_raises_error`: the valid vector with its last data character changed. */
  lastCharChanged: 'v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA=',
  /** javascript/php "invalid signature": not base64 of 32 bytes. */
  garbage: 'v1,dawfeoifkpqwoekfpqoekf',
  /** ruby/csharp "invalid signature". */
  truncatedTail: 'v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLawdd',
  /** javascript "partial signature": the header cut to 8 characters, and a bare version. */
  partial: ['v1,g0hM9', 'v1,'],
  /** java: no version at all. */
  noVersion: 'invalid_signature',
} as const

/** Timestamps the suites reject: not a number at all. */
export const malformedTimestamps = ['hello', 'teadwd'] as const
