/**
 * An Express 5 app that accepts callbacks at POST /callbacks, only when they verify, each id once.
 *
 *   CALLBACK_SECRET=whsec_… PORT=3000 node --import tsx examples/express-receiver.ts
 *
 * Without CALLBACK_SECRET it makes a throwaway one for this run and prints it, so that you can sign
 * test callbacks with it.
 */
import { once } from 'node:events'
import type { AddressInfo } from 'node:net'
import { pathToFileURL } from 'node:url'
import express from 'express'
import { generateSecret } from 'endpoint-callback'
import { callbackReceiver } from 'endpoint-callback/express'

export async function start(options: { port?: number; secret: string }) {
  const app = express()
  // No express.json() before it: the receiver reads the raw bytes the signature covers.
  app.post('/callbacks', callbackReceiver({ secret: options.secret, replayGuard: true }), (req, res) => {
    const callback = req.callback!
    console.log(`received ${callback.type} ${callback.id} ${JSON.stringify(callback.data)}`)
    res.sendStatus(204)
  })
  const server = app.listen(options.port ?? 0, '127.0.0.1')
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
  console.log(`Express receiver listening on ${url}`)
}
