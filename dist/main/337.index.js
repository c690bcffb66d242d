export const id = 337;
export const ids = [337];
export const modules = {

/***/ 9337:
/***/ ((__unused_webpack_module, __webpack_exports__, __webpack_require__) => {

__webpack_require__.r(__webpack_exports__);
/* harmony export */ __webpack_require__.d(__webpack_exports__, {
/* harmony export */   githubArtifactStore: () => (/* binding */ githubArtifactStore)
/* harmony export */ });
/* harmony import */ var _actions_artifact__WEBPACK_IMPORTED_MODULE_0__ = __webpack_require__(20584);
/* harmony import */ var _errors__WEBPACK_IMPORTED_MODULE_1__ = __webpack_require__(83916);


/** Pages of 100 searched for the newest artifact: enough for weeks of nightly runs, bounded for busy repositories. */
const MAX_PAGES = 10;
/**
 * GitHub's artifact service through @actions/artifact. Finding the newest artifact across
 * workflow runs needs the REST API (the toolkit lists one run at a time), hence the token.
 */
function githubArtifactStore(env, token) {
    const client = new _actions_artifact__WEBPACK_IMPORTED_MODULE_0__/* .DefaultArtifactClient */ .t9();
    const repository = env.GITHUB_REPOSITORY ?? '';
    const [owner, repo] = repository.split('/');
    const api = env.GITHUB_API_URL ?? 'https://api.github.com';
    const requireToken = () => {
        if (!token || !owner || !repo) {
            throw (0,_errors__WEBPACK_IMPORTED_MODULE_1__/* .usageError */ .Wp)('ARTIFACTS_UNAVAILABLE', 'finding an artifact from another workflow run needs github-token and GITHUB_REPOSITORY', 'pass github-token: ${{ github.token }} and grant the job `permissions: actions: read`');
        }
        return token;
    };
    return {
        async upload(name, files, rootDirectory, options) {
            const result = await client.uploadArtifact(name, files, rootDirectory, { retentionDays: options.retentionDays });
            return { id: result.id, size: result.size };
        },
        async findNewest(namePrefix) {
            const auth = requireToken();
            for (let page = 1; page <= MAX_PAGES; page++) {
                const response = await fetch(`${api}/repos/${owner}/${repo}/actions/artifacts?per_page=100&page=${page}`, {
                    headers: { authorization: `Bearer ${auth}`, accept: 'application/vnd.github+json', 'x-github-api-version': '2022-11-28' },
                });
                if (!response.ok)
                    throw (0,_errors__WEBPACK_IMPORTED_MODULE_1__/* .failure */ .V2)('ARTIFACT_LIST_FAILED', `listing artifacts of ${repository} failed: HTTP ${response.status}`, { fix: 'grant the job `permissions: actions: read`' });
                const body = (await response.json());
                // The API lists newest first.
                const match = body.artifacts.find((a) => !a.expired && a.name.startsWith(namePrefix));
                if (match)
                    return { id: match.id, name: match.name, createdAt: match.created_at, workflowRunId: match.workflow_run?.id };
                if (body.artifacts.length < 100)
                    return undefined;
            }
            return undefined;
        },
        async download(artifact, destination) {
            const findBy = artifact.workflowRunId ? { token: requireToken(), workflowRunId: artifact.workflowRunId, repositoryOwner: owner, repositoryName: repo } : undefined;
            const result = await client.downloadArtifact(artifact.id, { path: destination, findBy });
            if (result.digestMismatch)
                throw (0,_errors__WEBPACK_IMPORTED_MODULE_1__/* .failure */ .V2)('ARTIFACT_DIGEST_MISMATCH', `artifact ${artifact.name} does not match the digest GitHub recorded at upload`, { fix: 'fetch it again; if it persists, use the bucket copy' });
        },
    };
}


/***/ })

};
