import { open, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

/**
 * Writes the metrics file the way node_exporter's textfile collector needs: a temporary file in the
 * same directory, then a rename, so a scrape never reads half a file. Mode 0644: the collector
 * usually runs as another user, and the file holds no secret (no URL, no key).
 */
export async function writeMetricsFile(path: string, text: string): Promise<void> {
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.tmp`);
  try {
    const handle = await open(tmp, 'w', 0o644);
    try {
      await handle.chmod(0o644);
      await handle.writeFile(text);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(tmp, path);
  } catch (error) {
    await rm(tmp, { force: true });
    throw error;
  }
}
