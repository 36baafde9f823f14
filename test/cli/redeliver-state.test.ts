import { test } from 'node:test'
import assert from 'node:assert/strict'
import { redeliveredState } from '../../src/cli/inspect.ts'
import type { CallbackTask } from 'endpoint-callback'

const task = (status: CallbackTask['status'], nextAttemptAt?: Date): CallbackTask => ({
  id: 'msg_1',
  status,
  callbackUrl: 'https://client.example.com/cb',
  event: 'e',
  attempts: 3,
  createdAt: new Date(0),
  updatedAt: new Date(0),
  ...(nextAttemptAt === undefined ? {} : { nextAttemptAt }),
})

test('after redeliver, a task a worker has already claimed is shown as being sent, not due at its lease expiry', () => {
  const leaseExpiry = new Date('2030-01-01T00:01:00Z')
  assert.equal(redeliveredState(task('delivering', leaseExpiry)), 'a worker is sending it now')
  assert.ok(!redeliveredState(task('delivering', leaseExpiry)).includes(leaseExpiry.toISOString()))
  assert.equal(redeliveredState(task('scheduled', new Date('2030-01-01T00:00:00Z'))), 'due 2030-01-01T00:00:00.000Z')
  assert.equal(redeliveredState(task('delivered')), 'already delivered')
})
