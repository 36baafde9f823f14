export * from './errors.ts'
export type * from './types.ts'
export { VERSION } from './version.ts'
