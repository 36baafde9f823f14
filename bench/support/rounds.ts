/**
 * Alternating rounds for CPU-bound contenders: each is warmed up, given a batch size of about
 * 10 ms, then measured in rounds of `roundMs` of this process's CPU time, so that time another
 * process held the core is not counted. Rounds alternate between contenders so that noise hits all
 * alike; the median round of each is returned, in operations per second.
 */
export interface Contender {
  name: string
  run: (iterations: number) => void | Promise<void>
}

const cpuMs = (since: NodeJS.CpuUsage) => {
  const used = process.cpuUsage(since)
  return (used.user + used.system) / 1000
}

export async function measureRounds(contenders: Contender[], options: { rounds: number; roundMs: number }): Promise<Map<string, number>> {
  const batch = new Map<string, number>()
  for (const contender of contenders) {
    // about 100 ms each first, so that every contender is measured with its code optimised
    const warm = process.cpuUsage()
    while (cpuMs(warm) < 100) await contender.run(64)
    let n = 1
    for (;;) {
      const start = process.cpuUsage()
      await contender.run(n)
      if (cpuMs(start) > 10) break
      n *= 2
    }
    batch.set(contender.name, n)
  }
  const samples = new Map<string, number[]>(contenders.map((c) => [c.name, []]))
  for (let round = 0; round < options.rounds; round++) {
    for (const contender of contenders) {
      globalThis.gc?.()
      const n = batch.get(contender.name)!
      let done = 0
      const start = process.cpuUsage()
      let elapsed = 0
      while (elapsed < options.roundMs) {
        await contender.run(n)
        done += n
        elapsed = cpuMs(start)
      }
      samples.get(contender.name)!.push((done / elapsed) * 1000)
    }
  }
  const medians = new Map<string, number>()
  for (const [name, values] of samples) {
    values.sort((a, b) => a - b)
    medians.set(name, values[Math.floor(values.length / 2)]!)
  }
  return medians
}
