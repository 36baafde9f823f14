/**
 * The receiver the delivery benchmarks send to: a plain node:http server answering 204, in its own
 * process, so that process.cpuUsage() in the benchmark counts the sending side only.
 */
import { spawn } from 'node:child_process'

const source = `
const { createServer } = require('node:http')
const server = createServer((req, res) => {
  req.on('data', () => {})
  req.on('end', () => { res.statusCode = 204; res.end() })
})
server.keepAliveTimeout = 60_000
server.listen(0, '127.0.0.1', () => console.log(server.address().port))
process.stdin.on('end', () => process.exit(0)).resume()
`

export async function startLoopbackReceiver(): Promise<{ url: string; stop: () => Promise<void> }> {
  const receiver = spawn(process.execPath, ['-e', source], { stdio: ['pipe', 'pipe', 'inherit'] })
  const port = await new Promise<number>((resolve) => receiver.stdout.once('data', (chunk: Buffer) => resolve(Number(chunk.toString().trim()))))
  return {
    url: `http://127.0.0.1:${port}/callbacks`,
    stop: async () => {
      receiver.stdin.end()
      await new Promise((resolve) => receiver.once('exit', resolve))
    },
  }
}
