/**
 * The Sigstore libraries that sign and verify (with their HTTP stack, TUF client and caches, about
 * a fifth of the CLI bundle) are loaded on first use: a backup, restore or drill never signs, and
 * every command pays the loading of what it imports at start-up. Types are imported statically
 * (`import type`), which costs nothing at run time.
 */
export const loadSigstoreSign = () => import('@sigstore/sign');
export const loadSigstoreTuf = () => import('@sigstore/tuf');
export const loadSigstoreVerify = () => import('@sigstore/verify');
