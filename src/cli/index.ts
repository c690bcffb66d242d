import { COMMANDS } from '../commands/registry';
import { installInterruptHandlers, interruptedBy, interruptedExitCode } from '../runner/interrupt';
import { runCli } from './main';

// Ctrl-C / kill: the running tools are stopped and the command fails through its own clean-up
// (staging removed, lock released), then exits 130 / 143 (src/runner/interrupt.ts).
installInterruptHandlers((signal) => process.stderr.write(`${signal}: stopping; what is unfinished is removed and the lock released (send it again to exit at once)\n`));

runCli(COMMANDS, process.argv.slice(2)).then(
  (code) => {
    const signal = interruptedBy();
    process.exitCode = signal ? interruptedExitCode(signal) : code;
  },
  (error: unknown) => {
    process.stderr.write(`internal error: ${(error as Error)?.stack ?? String(error)}\n`);
    process.exitCode = 1;
  },
);
