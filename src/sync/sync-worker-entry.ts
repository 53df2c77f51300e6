import { parentPort } from 'node:worker_threads';
import { SYNC_TASKS, type SyncTaskName } from './sync-tasks';

// The sync worker thread: runs one task per message, in order, and answers with its id.
parentPort!.on('message', (msg: { id: number; task: SyncTaskName; input: unknown }) => {
  try {
    const value = (SYNC_TASKS[msg.task] as (input: unknown) => unknown)(msg.input);
    parentPort!.postMessage({ id: msg.id, ok: true, value });
  } catch (err) {
    parentPort!.postMessage({ id: msg.id, ok: false, error: { name: (err as Error).name, message: (err as Error).message } });
  }
});
