import { afterAll } from 'vitest';
import { removeTrackedTempDirs } from './temp-dirs';

// A setup file of both vitest configs: runs in every test file's own module graph.
afterAll(() => removeTrackedTempDirs());
