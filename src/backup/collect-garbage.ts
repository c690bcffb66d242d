/**
 * Young-generation collections for the backup's stream, every COLLECT_EVERY bytes of short-lived
 * buffers. Streaming an archive allocates buffers (pipe reads; with Lifeline's own compression also
 * segments and zlib's output) but few JS objects, so V8 lets them pile up to its external-memory
 * limit (~64 MB over the live set) before it collects: 170-180 MB peak RSS for a gzip:6 backup of
 * the 1 GB bench dataset and 153-156 MB for a default one at 3.5 GB, against 132-137 MB and
 * 97-98 MB with a scavenge (well under 1 ms) every 4 MB.
 */
import v8 from 'node:v8';
import vm from 'node:vm';

export const COLLECT_EVERY = 4 * 1024 * 1024;

let scavenge: ((options: object) => void) | null | undefined;

export function collectYoungGarbage(): void {
  if (scavenge === undefined) {
    try {
      // Node offers no API to ask for a collection: expose V8's gc() to this module only.
      v8.setFlagsFromString('--expose-gc');
      scavenge = vm.runInNewContext('gc') as (options: object) => void;
    } catch {
      scavenge = null;
    }
  }
  try {
    scavenge?.({ type: 'minor', execution: 'sync' });
  } catch {
    scavenge = null;
  }
}
