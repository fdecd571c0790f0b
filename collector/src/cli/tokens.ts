import { UnknownProjectError, UnknownTokenError } from '../errors';
import type { CollectorStore } from '../store/contract';
import { type StoreFlags, failStore, printList, withStore } from './common';

/** apm-collector tokens create | list | revoke: the read tokens of the HTTP API and web page (DESIGN §10). */

/** The project a token is for: given by project id, or by name when one project has that name. */
async function resolveProject(store: CollectorStore, nameOrId: string): Promise<string> {
  const want = nameOrId.trim();
  const keys = await store.listKeys();
  if (keys.some((k) => k.projectId === want)) return want;
  const ids = [...new Set(keys.filter((k) => k.name === want).map((k) => k.projectId))];
  if (ids.length === 1) return ids[0] as string;
  if (ids.length > 1) throw new UnknownProjectError(`several projects are named ${JSON.stringify(want)} (${ids.join(', ')}): give the project id`);
  throw new UnknownProjectError(
    `no project ${JSON.stringify(want)} (by id or name) has an access key here; create it with: apm-collector keys create --project NAME`,
  );
}

export async function tokensCreate(o: { project?: string } & StoreFlags): Promise<void> {
  await withStore(o, async (store) => {
    const projectId = o.project === undefined ? null : await resolveProject(store, o.project);
    const { tokenId, token } = await store.createToken(projectId);
    // Informational lines first; the token alone on the last line (`| tail -n 1`).
    process.stdout.write(
      `created read token ${tokenId} for ${projectId === null ? 'every project' : `project ${projectId}`}\n` +
        'it is shown only this once; send it as "Authorization: Bearer <token>" (the web page asks for it):\n' +
        `${token}\n`,
    );
  });
}

export async function tokensList(o: { json?: boolean } & StoreFlags): Promise<void> {
  printList(await withStore(o, (store) => store.listTokens()), {
    json: o.json === true,
    empty: 'no read tokens (protected mode: the API answers loopback clients only); create one with: apm-collector tokens create',
    header: ['TOKEN ID', 'PROJECT', 'CREATED', 'REVOKED'],
    cells: (r, iso) => [r.tokenId, r.projectId ?? '(every project)', iso(r.createdAt) as string, iso(r.revokedAt) ?? '-'],
  });
}

export async function tokensRevoke(tokenId: string, o: StoreFlags): Promise<void> {
  const result = await withStore(o, (store) => store.revokeToken(tokenId.trim()));
  if (result === 'unknown') failStore(new UnknownTokenError(tokenId));
  process.stdout.write(result === 'revoked' ? `revoked read token ${tokenId}\n` : `read token ${tokenId} was already revoked\n`);
}
