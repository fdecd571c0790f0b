import { readFileSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { StoreAuthError } from '../../errors';
import type { PgTarget } from './url';

/**
 * The store's password, asked for when the server wants one: PGPASSWORD, else the password
 * file (PGPASSFILE, else ~/.pgpass) in libpq's format, one `host:port:database:user:password`
 * a line, `*` matching anything, `\:` and `\\` escaped, the first match winning. As libpq does,
 * a file that other users can read is not used: it is refused with a StoreAuthError saying so.
 */

/** The fields of a password file line ([] for a comment or blank), split on unescaped ':'. */
export function passfileFields(line: string): string[] {
  if (line.trim() === '' || line.startsWith('#')) return [];
  const out: string[] = [];
  let cur = '';
  for (let i = 0; i < line.length; i++) {
    const ch = line[i] as string;
    if (ch === '\\' && i + 1 < line.length) cur += line[++i];
    else if (ch === ':' && out.length < 4) {
      out.push(cur);
      cur = '';
    } else cur += ch;
  }
  out.push(cur);
  return out.length === 5 ? out : [];
}

/** The password for `t` as user `user`: PGPASSWORD, else from the password file; throws StoreAuthError when there is none. */
export function passwordFor(t: PgTarget, user: string): string {
  const env = process.env.PGPASSWORD;
  if (env !== undefined) return env;
  const file = process.env.PGPASSFILE || join(process.env.HOME || homedir(), '.pgpass');
  let text: string | undefined;
  try {
    const st = statSync(file);
    if (st.isFile() && (st.mode & 0o077) !== 0) {
      throw new StoreAuthError(t.location, `the password file ${file} is open to other users (mode ${(st.mode & 0o777).toString(8)}); chmod 600 it`);
    }
    if (st.isFile()) text = readFileSync(file, 'utf8');
  } catch (err) {
    if (err instanceof StoreAuthError) throw err;
  }
  const hosts = t.host.startsWith('/') ? [t.host, 'localhost'] : [t.host];
  for (const line of (text ?? '').split(/\r?\n/)) {
    const [host, port, database, login, password] = passfileFields(line);
    if (password === undefined) continue;
    const match = (field: string | undefined, values: string[]) => field === '*' || values.includes(field as string);
    if (match(host, hosts) && match(port, [String(t.port)]) && match(database, [t.database]) && match(login, [user])) return password;
  }
  throw new StoreAuthError(t.location, 'no password was given (set PGPASSWORD, or PGPASSFILE to a password file)');
}
