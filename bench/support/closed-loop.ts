/**
 * A closed loop: `concurrency` loops each awaiting `one()` again as soon as it settles, for `ms`.
 * Gives the rate (per second) and this process's CPU µs per call.
 */

/** One measured round: calls per second and this process's CPU µs per call. */
export interface Sample {
  rate: number
  cpu: number
}

export async function closedLoop(one: () => Promise<void>, ms: number, concurrency: number): Promise<Sample> {
  let done = 0
  const cpu = process.cpuUsage()
  const start = performance.now()
  const end = start + ms
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < end) {
        await one()
        done++
      }
    })
  )
  const { user, system } = process.cpuUsage(cpu)
  return { rate: (done / (performance.now() - start)) * 1000, cpu: (user + system) / done }
}
