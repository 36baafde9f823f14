/**
 * `endpoint-callback/inspector`: a web page to find, read and repair callbacks, mounted in your
 * own app — a framework-free Web `Request` handler, and Express, Koa and Hono mounts.
 *
 * @module endpoint-callback/inspector
 */
export { createInspector } from './inspector.ts'
export type { Inspector, InspectorOptions } from './inspector.ts'
export { expressInspector } from './express.ts'
export { koaInspector } from './koa.ts'
export { honoInspector } from './hono.ts'
export type { HonoContext } from './hono.ts'
