/**
 * How long one attempt may take: its exchanges (the intent challenge, the callback, the quick
 * retries of a refused connection) all end inside this part of the lease, and the rest is left to
 * record the attempt. A lease that ran out while the attempt still sends would let a second worker
 * claim the task and send it at the same time.
 */

/** The lease minus what recording needs: a tenth of it, at most 1 s. */
export function attemptBudgetMs(leaseMs: number): number {
  return leaseMs - Math.min(1000, Math.floor(leaseMs / 10))
}

/** The shortest lease whose budget holds `exchanges` exchanges of `timeoutMs` each. */
export function minimumLeaseMs(exchanges: number, timeoutMs: number): number {
  const sending = exchanges * timeoutMs
  return Math.ceil(sending + Math.min(1000, sending / 9))
}
