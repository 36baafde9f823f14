import { test, describe } from 'node:test'
import assert from 'node:assert/strict'
import type { Socket } from 'node:net'
import { buildConnector } from 'undici'
import { createHttpTransport } from 'endpoint-callback'
import { afterRequestHead, loopbackServer } from '../support/ssrf.ts'
import type { LoopbackServer } from '../support/ssrf.ts'
import { within } from '../support/waits.ts'

const LOCAL = { allowHttp: true, allowHosts: ['127.0.0.1'] }
const TIMEOUT_MS = 600
/** Generous: the machine is shared and busy; what matters is that the attempt ends at all. */
const MARGIN_MS = 1500

/** Writes `chunk` every `everyMs` until the socket closes. */
function trickle(socket: Socket, chunk: string, everyMs: number): void {
  const timer = setInterval(() => {
    if (socket.destroyed) clearInterval(timer)
    else socket.write(chunk)
  }, everyMs)
  socket.once('close', () => clearInterval(timer))
}

function closedWithin(server: LoopbackServer, ms: number): Promise<boolean> {
  const socket = server.sockets[0]
  if (socket === undefined) return Promise.resolve(false)
  if (socket.destroyed) return Promise.resolve(true)
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), ms)
    socket.once('close', () => {
      clearTimeout(timer)
      resolve(true)
    })
  })
}

async function timedSend(url: string, options: Parameters<typeof createHttpTransport>[0]) {
  const transport = createHttpTransport(options)
  const started = performance.now()
  // A lost deadline must fail here, in seconds, naming what hung: not as the runner's 180 s cancellation.
  const deadlineMs = options?.timeoutMs ?? 10_000
  const bound = deadlineMs + MARGIN_MS + 5_000
  try {
    const outcome = await within(
      transport.send({ url, headers: {}, body: '{}' }).then(
        (response) => ({ response, error: undefined }),
        (error: unknown) => ({ response: undefined, error: error as { code?: string } }),
      ),
      `the attempt was not ended by its ${deadlineMs} ms deadline`,
      bound,
    )
    return { ...outcome, elapsedMs: performance.now() - started }
  } finally {
    await within(transport.close(), 'the transport did not close', 5_000).catch(() => {})
  }
}

describe('a receiver cannot hold an attempt longer than timeoutMs', () => {
  test('a receiver that trickles its headers is cut off with ERR_CALLBACK_TIMEOUT', async () => {
    const receiver = await loopbackServer((socket) =>
      afterRequestHead(socket, () => {
        socket.write('HTTP/1.1 200 OK\r\n')
        trickle(socket, 'x', 50)
      }),
    )
    try {
      const { error, elapsedMs } = await timedSend(`http://127.0.0.1:${receiver.port}/`, { urlPolicy: LOCAL, timeoutMs: TIMEOUT_MS })
      assert.equal(error?.code, 'ERR_CALLBACK_TIMEOUT')
      assert.ok(elapsedMs < TIMEOUT_MS + MARGIN_MS, `took ${elapsedMs} ms`)
      assert.ok(await closedWithin(receiver, 1000), 'the slow connection was not closed')
    } finally {
      await receiver.close()
    }
  })

  test('a receiver that sends headers at once and then trickles the body is cut off with ERR_CALLBACK_TIMEOUT', async () => {
    const receiver = await loopbackServer((socket) =>
      afterRequestHead(socket, () => {
        socket.write('HTTP/1.1 200 OK\r\ncontent-length: 1000000\r\n\r\n')
        trickle(socket, 'y', 20)
      }),
    )
    try {
      const { error, elapsedMs } = await timedSend(`http://127.0.0.1:${receiver.port}/`, { urlPolicy: LOCAL, timeoutMs: TIMEOUT_MS })
      assert.equal(error?.code, 'ERR_CALLBACK_TIMEOUT')
      assert.ok(elapsedMs < TIMEOUT_MS + MARGIN_MS, `took ${elapsedMs} ms`)
      assert.ok(await closedWithin(receiver, 1000), 'the slow connection was not closed')
    } finally {
      await receiver.close()
    }
  })

  test('a receiver that accepts the connection and never answers is cut off with ERR_CALLBACK_TIMEOUT', async () => {
    const receiver = await loopbackServer(() => {})
    try {
      const { error, elapsedMs } = await timedSend(`http://127.0.0.1:${receiver.port}/`, { urlPolicy: LOCAL, timeoutMs: TIMEOUT_MS })
      assert.equal(error?.code, 'ERR_CALLBACK_TIMEOUT')
      assert.ok(elapsedMs < TIMEOUT_MS + MARGIN_MS, `took ${elapsedMs} ms`)
    } finally {
      await receiver.close()
    }
  })

  test('a resolver that never answers is cut off with ERR_CALLBACK_TIMEOUT', async () => {
    const { error, elapsedMs } = await timedSend('https://slow-dns.example/', { timeoutMs: TIMEOUT_MS, lookup: () => {} })
    assert.equal(error?.code, 'ERR_CALLBACK_TIMEOUT')
    assert.ok(elapsedMs < TIMEOUT_MS + MARGIN_MS, `took ${elapsedMs} ms`)
  })
})

describe('a receiver cannot make the sender hold more than maxResponseBytes', () => {
  test('an endless body is read up to maxResponseBytes, then the connection is dropped', async () => {
    const block = 'z'.repeat(64 * 1024)
    let written = 0
    const receiver = await loopbackServer((socket) =>
      afterRequestHead(socket, () => {
        socket.write('HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n')
        const pump = () => {
          // Write as fast as the socket takes it, forever.
          while (!socket.destroyed && socket.write(`${block.length.toString(16)}\r\n${block}\r\n`)) written += block.length
          if (!socket.destroyed) socket.once('drain', pump)
        }
        pump()
      }),
    )
    // Record the sockets the transport opens, to see how much it read from them.
    const sockets: Socket[] = []
    const base = buildConnector({})
    const maxResponseBytes = 16 * 1024
    try {
      const { response, error, elapsedMs } = await timedSend(`http://127.0.0.1:${receiver.port}/`, {
        urlPolicy: LOCAL,
        timeoutMs: 5_000,
        maxResponseBytes,
        connect: (options, callback) =>
          base(options, (err, socket) => {
            if (socket) sockets.push(socket as Socket)
            callback(err as null, socket as Socket)
          }),
      })
      assert.equal(error, undefined)
      assert.equal(response?.status, 200)
      assert.equal(response?.body.length, maxResponseBytes)
      assert.ok(elapsedMs < 5_000, `took ${elapsedMs} ms`)
      assert.ok(await closedWithin(receiver, 1000), 'the endless connection was not closed')
      // What the sender took in is bounded by the cap plus socket buffering, not by what was sent.
      const bytesRead = sockets.reduce((sum, socket) => sum + socket.bytesRead, 0)
      assert.ok(bytesRead < maxResponseBytes + 1024 * 1024, `read ${bytesRead} bytes`)
      await new Promise((resolve) => setTimeout(resolve, 200))
      const after = written
      await new Promise((resolve) => setTimeout(resolve, 200))
      assert.equal(written, after, 'the receiver could keep writing')
    } finally {
      await receiver.close()
    }
  })

  test('endless headers are refused instead of buffered', async () => {
    const receiver = await loopbackServer((socket) =>
      afterRequestHead(socket, () => {
        socket.write('HTTP/1.1 200 OK\r\n')
        const header = `x-filler: ${'h'.repeat(1000)}\r\n`
        const pump = () => {
          while (!socket.destroyed && socket.write(header));
          if (!socket.destroyed) socket.once('drain', pump)
        }
        pump()
      }),
    )
    try {
      const { error, elapsedMs } = await timedSend(`http://127.0.0.1:${receiver.port}/`, { urlPolicy: LOCAL, timeoutMs: 5_000 })
      assert.equal(error?.code, 'ERR_CALLBACK_CONNECTION')
      assert.ok(elapsedMs < 5_000, `took ${elapsedMs} ms`)
    } finally {
      await receiver.close()
    }
  })

  test('many endless-body attempts in a row leave the heap about where it was', async () => {
    const block = Buffer.alloc(64 * 1024, 'w')
    const receiver = await loopbackServer((socket) =>
      afterRequestHead(socket, () => {
        socket.write('HTTP/1.1 200 OK\r\n\r\n')
        const pump = () => {
          while (!socket.destroyed && socket.write(block));
          if (!socket.destroyed) socket.once('drain', pump)
        }
        pump()
      }),
    )
    const transport = createHttpTransport({ urlPolicy: LOCAL, maxResponseBytes: 4096, timeoutMs: 5_000 })
    try {
      const url = `http://127.0.0.1:${receiver.port}/`
      await transport.send({ url, headers: {}, body: '{}' })
      const heapBefore = process.memoryUsage().heapUsed
      const bodies: string[] = []
      for (let i = 0; i < 40; i++) bodies.push((await transport.send({ url, headers: {}, body: '{}' })).body)
      const grown = process.memoryUsage().heapUsed - heapBefore
      assert.ok(bodies.every((body) => body.length === 4096))
      // 40 attempts at an endless body: unbounded reading would grow the heap by far more.
      assert.ok(grown < 32 * 1024 * 1024, `heap grew by ${grown} bytes`)
    } finally {
      await transport.close()
      await receiver.close()
    }
  })
})
