import { formatAccessKey, keyFingerprint } from '@apm-sidecar/proto/upstream';
import { type StoreFlags, printList, withStore } from './common';

/** apm-collector keys create | list | revoke: the access keys agents authenticate with (DESIGN §7). */

export async function keysCreate(o: { project: string } & StoreFlags): Promise<void> {
  await withStore(o, async (store) => {
    const key = await store.createKey(o.project);
    const keys = (await store.listKeys()).filter((k) => k.projectId === key.projectId);
    const fp = keyFingerprint(key.secret);
    const active = keys.filter((k) => k.revokedAt === null).length;
    // Informational lines first; the key alone on the last line (`| tail -n 1`).
    process.stdout.write(
      key.created
        ? `created project ${JSON.stringify(keys[0]?.name ?? o.project.trim())} (project id ${key.projectId}) with access key ${fp}\n`
        : `added access key ${fp} to project ${key.projectId}: it has ${active} valid keys now; revoke the old one with: apm-collector keys revoke --fingerprint F\n`,
    );
    process.stdout.write('it is shown only this once; store it as a secret (e.g. in the sidecar access_key_file):\n');
    process.stdout.write(`${formatAccessKey(key)}\n`);
  });
}

export async function keysList(o: { json?: boolean } & StoreFlags): Promise<void> {
  printList(await withStore(o, (store) => store.listKeys()), {
    json: o.json === true,
    empty: 'no access keys; create one with: apm-collector keys create --project NAME',
    header: ['PROJECT ID', 'NAME', 'CREATED', 'FINGERPRINT', 'STATUS'],
    cells: (k, iso) => [k.projectId, k.name, iso(k.createdAt) as string, k.fingerprint, k.revokedAt === null ? 'valid' : `revoked ${iso(k.revokedAt)}`],
  });
}

export async function keysRevoke(o: { fingerprint: string } & StoreFlags): Promise<void> {
  await withStore(o, async (store) => {
    const r = await store.revokeKey(o.fingerprint);
    const left = (await store.projectKeys(r.projectId)).filter((k) => k.revokedAt === null).length;
    if (r.alreadyRevokedAt !== null) {
      process.stdout.write(`access key ${r.fingerprint} of project ${r.projectId} was already revoked at ${new Date(r.alreadyRevokedAt).toISOString()}\n`);
    } else {
      process.stdout.write(`revoked access key ${r.fingerprint} of project ${r.projectId}; running collectors end its sessions within a second\n`);
    }
    if (left === 0)
      process.stdout.write(`project ${r.projectId} has no valid access key left; create one with: apm-collector keys create --project ${r.projectId}\n`);
  });
}
