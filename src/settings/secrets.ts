import { usageError } from '../errors';
import { redactSecretsInText } from '../logger';

/** URL query parameters that libpq (and most clients) read as credentials. */
const SECRET_PARAMS = ['password', 'sslpassword'];

/** Decodes a percent-escaped component; a malformed escape is kept as written (it is still the secret). */
function decodeLenient(value: string): string {
  try {
    return decodeURIComponent(value);
  } catch {
    return value;
  }
}

/**
 * Decodes one percent-escaped part of a database URL; a malformed escape is bad usage (exit 2) that
 * names the part, never its value (it may be the password).
 */
export function decodeUrlPart(url: 'PostgreSQL' | 'Redis', part: string, value: string): string {
  try {
    return decodeURIComponent(value);
  } catch {
    throw usageError('BAD_URL', `the ${url} URL's ${part} has a malformed percent-escape`, 'percent-encode it correctly (a literal % is %25), e.g. with encodeURIComponent');
  }
}

/** Returns the URL with its password (userinfo and `?password=` / `?sslpassword=`) replaced by `***`. */
export function redactUrl(url: string): string {
  return redactSecretsInText(url);
}

/** Every secret a URL carries: the userinfo password and the credential query parameters, raw and decoded. */
export function urlSecrets(url: string | undefined): string[] {
  if (!url) return [];
  const found = new Set<string>();
  const userinfo = /^[a-z][a-z0-9+.-]*:\/\/[^/?#@:]*:([^/?#]*)@/i.exec(url)?.[1];
  if (userinfo) {
    found.add(userinfo);
    found.add(decodeLenient(userinfo));
  }
  const query = url.split('?')[1]?.split('#')[0] ?? '';
  for (const pair of query.split('&')) {
    const eq = pair.indexOf('=');
    if (eq < 0) continue;
    if (!SECRET_PARAMS.includes(decodeLenient(pair.slice(0, eq)).toLowerCase())) continue;
    const raw = pair.slice(eq + 1);
    if (!raw) continue;
    found.add(raw);
    found.add(decodeLenient(raw.replace(/\+/g, ' ')));
    found.add(decodeLenient(raw));
  }
  return [...found].filter((s) => s && s !== '***');
}

/** The password embedded in a URL (userinfo first, else `?password=`), so it can be registered as a secret. */
export function urlPassword(url: string | undefined): string | undefined {
  if (!url) return undefined;
  const secrets = urlSecrets(url);
  const userinfo = /^[a-z][a-z0-9+.-]*:\/\/[^/?#@:]*:([^/?#]*)@/i.exec(url)?.[1];
  if (userinfo) return decodeLenient(userinfo);
  return secrets.length > 0 ? secrets[secrets.length - 1] : undefined;
}
