// Re-hashes one backup directory's files against SHA256SUMS, as `lifeline verify` does first,
// and prints the seconds the hashing took (without Node's start-up); exits 1 on a mismatch.
import { checkSums } from '../../src/catalog/sums';

const started = process.hrtime.bigint();
const results = await checkSums(process.argv[2]!);
process.stdout.write(`${Number(process.hrtime.bigint() - started) / 1e9}\n`);
if (!results.every((r) => r.ok)) process.exit(1);
