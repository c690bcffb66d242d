import { stringify } from 'yaml';

/**
 * The Compose override file that pins each service to an image. Passed as the last `-f`, it
 * wins over the operator's files for `image:` and leaves everything else as they wrote it.
 */
export function renderOverride(images: Record<string, string>, comment: string): string {
  const services: Record<string, { image: string }> = {};
  for (const [service, image] of Object.entries(images)) services[service] = { image };
  const header = comment
    .split('\n')
    .map((line) => `# ${line}`)
    .join('\n');
  return `${header}\n${stringify({ services })}`;
}
