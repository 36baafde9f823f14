/**
 * A Hono app that accepts callbacks at POST /callbacks, only when they verify, each id once. The
 * same `callbackHandler` works in Next.js route handlers, Bun, Deno and workers: anything that
 * hands you a Web `Request`.
 *
 *   CALLBACK_SECRET=whsec_… PORT=3000 node --import tsx examples/hono-receiver.ts
 *
 * Without CALLBACK_SECRET it makes a throwaway one for this run and prints it, so that you can sign
 * test callbacks with it.
 */
import { once } from 'node:events'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { Readable } from 'node:stream'
import { pathToFileURL } from 'node:url'
import { Hono } from 'hono'
import { generateSecret } from 'endpoint-callback'
import { callbackHandler } from 'endpoint-callback/fetch'

export function createApp(secret: string): Hono {
  const handle = callbackHandler({ secret, replayGuard: true }, (callback) => {
    console.log(`received ${callback.type} ${callback.id} ${JSON.stringify(callback.data)}`)
    return new Response(null, { status: 204 })
  })
  const app = new Hono()
  // c.req.raw is the untouched Request: nothing has read its body yet.
  app.post('/callbacks', (c) => handle(c.req.raw))
  return app
}

export async function start(options: { port?: number; secret: string }) {
  const app = createApp(options.secret)
  // Bun and Deno serve app.fetch directly; on Node, @hono/node-server's serve(app) does what these
  // few lines do.
  const server = createServer(async (req, res) => {
    const headers = new Headers()
    for (const [name, value] of Object.entries(req.headers)) {
      for (const item of Array.isArray(value) ? value : value === undefined ? [] : [value]) headers.append(name, item)
    }
    const hasBody = req.method !== 'GET' && req.method !== 'HEAD'
    const request = new Request(`http://${req.headers.host ?? '127.0.0.1'}${req.url ?? '/'}`, {
      method: req.method ?? 'GET',
      headers,
      body: hasBody ? (Readable.toWeb(req) as ReadableStream<Uint8Array>) : null,
      duplex: 'half',
    } as RequestInit)
    const response = await app.fetch(request)
    res.writeHead(response.status, Object.fromEntries(response.headers))
    if (response.body === null) res.end()
    else Readable.fromWeb(response.body as import('node:stream/web').ReadableStream).pipe(res)
  })
  server.listen(options.port ?? 0, '127.0.0.1')
  await once(server, 'listening')
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/callbacks`
  return { url, close: () => new Promise<void>((resolve) => server.close(() => resolve())) }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  let secret = process.env.CALLBACK_SECRET
  if (secret === undefined) {
    secret = generateSecret()
    console.log(`no CALLBACK_SECRET set; throwaway secret for this run: ${secret}`)
  }
  const { url } = await start({ port: Number(process.env.PORT ?? 0), secret })
  console.log(`Hono receiver listening on ${url}`)
}
