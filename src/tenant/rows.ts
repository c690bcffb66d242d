import { createReadStream } from 'node:fs';
import { createInterface } from 'node:readline';
import { Transform, type TransformCallback } from 'node:stream';

export type ExportFormat = 'ndjson' | 'csv';

export const FILE_EXTENSION: Record<ExportFormat, string> = { ndjson: 'ndjson', csv: 'csv' };

/**
 * Counts records in a stream without parsing them: NDJSON has exactly one newline per record
 * (JSON escapes newlines inside strings); CSV may hold newlines inside quoted fields, so only
 * newlines outside quotes end a record (an escaped quote `""` toggles twice).
 */
export class RecordCounter {
  records = 0;
  private inQuotes = false;
  constructor(private readonly format: ExportFormat) {}

  add(chunk: Buffer): void {
    if (this.format === 'ndjson') {
      for (let i = chunk.indexOf(10); i !== -1; i = chunk.indexOf(10, i + 1)) this.records++;
      return;
    }
    for (const byte of chunk) {
      if (byte === 34) this.inQuotes = !this.inQuotes;
      else if (byte === 10 && !this.inQuotes) this.records++;
    }
  }
}

/** Thrown by ExportMeter when the export outgrows its byte cap. */
export class ByteCapExceeded extends Error {
  constructor(readonly byteCap: number) {
    super(`the export exceeded its byte cap of ${byteCap} bytes`);
  }
}

/** A pass-through that counts records and stops the stream once the export's byte budget is spent. */
export class ExportMeter extends Transform {
  private readonly counter: RecordCounter;
  constructor(
    format: ExportFormat,
    private readonly budget: { used: number; cap: number },
  ) {
    super();
    this.counter = new RecordCounter(format);
  }

  get records(): number {
    return this.counter.records;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.budget.used += chunk.length;
    if (this.budget.used > this.budget.cap) {
      callback(new ByteCapExceeded(this.budget.cap));
      return;
    }
    this.counter.add(chunk);
    callback(null, chunk);
  }
}

/** Data records in an export file (the CSV header excluded); NDJSON lines must each parse. */
export async function countFileRecords(path: string, format: ExportFormat): Promise<{ records: number; badLine?: number }> {
  if (format === 'csv') {
    const counter = new RecordCounter('csv');
    for await (const chunk of createReadStream(path, { highWaterMark: 1024 * 1024 })) counter.add(chunk as Buffer);
    return { records: Math.max(0, counter.records - 1) };
  }
  let records = 0;
  const lines = createInterface({ input: createReadStream(path, { highWaterMark: 1024 * 1024 }), crlfDelay: Infinity });
  for await (const line of lines) {
    records++;
    try {
      JSON.parse(line);
    } catch {
      lines.close();
      return { records, badLine: records };
    }
  }
  return { records };
}
