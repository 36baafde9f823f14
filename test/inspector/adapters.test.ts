/**
 * Every way to mount the inspector runs the same contract: the bare Web handler, Express, Koa and
 * Hono (the Node frameworks over a real loopback socket).
 */
import { createServer } from 'node:http'
import type { Server } from 'node:http'
import express from 'express'
import Koa from 'koa'
import { Hono } from 'hono'
import { expressInspector, honoInspector, koaInspector } from 'endpoint-callback/inspector'
import { BASE, inspectorAdapterContract } from '../support/inspector-adapter-suite.ts'
import type { MountedInspector } from '../support/inspector-adapter-suite.ts'

async function served(server: Server): Promise<MountedInspector> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const address = server.address()
  if (address === null || typeof address === 'string') throw new Error('no TCP address')
  const origin = `http://127.0.0.1:${address.port}`
  return {
    origin,
    fetch: (path, init) => fetch(`${origin}${path}`, init),
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  }
}

/** A handler called in-process with Web requests, as on a serverless platform. */
function inProcess(handle: (request: Request) => Response | Promise<Response>): MountedInspector {
  const origin = 'http://inspector.test'
  return { origin, fetch: async (path, init) => handle(new Request(`${origin}${path}`, init)), close: async () => {} }
}

inspectorAdapterContract('the Web Request handler', async (inspector) => inProcess(inspector))

inspectorAdapterContract('Express', async (inspector) => {
  const app = express()
  app.use(express.urlencoded({ extended: false })) // a parser before the mount is fine
  app.use(BASE, expressInspector(inspector))
  return served(createServer(app))
})

inspectorAdapterContract('Koa', async (inspector) => {
  const app = new Koa()
  app.silent = true
  app.use(koaInspector(inspector))
  return served(createServer(app.callback()))
})

inspectorAdapterContract('Hono', async (inspector) => {
  const app = new Hono()
  app.all(`${BASE}/*`, honoInspector(inspector))
  app.all(BASE, honoInspector(inspector))
  return inProcess((request) => app.fetch(request))
})
