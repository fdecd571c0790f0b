import { ApmError } from '@apm-sidecar/proto';

/** The data directory or the database file cannot be created or opened (permissions, not a directory, ...). */
export class StoreOpenError extends ApmError {
  readonly path: string;
  constructor(path: string, why: string) {
    super('ERR_STORE_OPEN', `cannot open the collector database ${path}: ${why}`);
    this.path = path;
  }
}

/**
 * The file exists but is not a usable collector database: not SQLite at all, damaged, or
 * another program's database. The collector refuses to start and never deletes it.
 */
export class StoreCorruptError extends ApmError {
  readonly path: string;
  constructor(path: string, why: string) {
    super(
      'ERR_STORE_CORRUPT',
      `${path} is not a usable collector database (${why}); refusing to start, the file was left untouched — move it away or choose another --data-dir`,
    );
    this.path = path;
  }
}

/** SQLite did not accept the durability settings the collector requires (WAL, synchronous = FULL). */
export class StoreDurabilityError extends ApmError {
  constructor(what: string, wanted: string, got: string) {
    super('ERR_STORE_DURABILITY', `SQLite ${what} is ${got}, the collector requires ${wanted}`);
  }
}

/** The database was written by a newer collector (its schema version is unknown here). */
export class StoreVersionError extends ApmError {
  constructor(path: string, found: number, known: number) {
    super('ERR_STORE_VERSION', `${path} has schema version ${found}; this collector knows up to ${known} (was it written by a newer version?)`);
  }
}

/** A project name that yields no usable project id. */
export class ProjectNameError extends ApmError {
  constructor(why: string) {
    super('ERR_PROJECT_NAME', `bad project name: ${why}`);
  }
}

/** `tokens create --project` names no project that has an access key, or a name several projects share. */
export class UnknownProjectError extends ApmError {
  constructor(message: string) {
    super('ERR_UNKNOWN_PROJECT', message);
  }
}

/** `tokens create` drew 16 token ids in a row that were all taken (practically impossible below millions of tokens). */
export class TokenIdExhaustedError extends ApmError {
  constructor() {
    super('ERR_TOKEN_ID_EXHAUSTED', 'could not find a free token id');
  }
}

/** `tokens revoke` names no token. */
export class UnknownTokenError extends ApmError {
  constructor(tokenId: string) {
    super('ERR_UNKNOWN_TOKEN', `no read token with id ${JSON.stringify(tokenId)} (see: apm-collector tokens list)`);
  }
}

/** `keys revoke --fingerprint F` names no key. */
export class KeyNotFoundError extends ApmError {
  constructor(fingerprint: string) {
    super('ERR_KEY_NOT_FOUND', `no access key has the fingerprint "${fingerprint.slice(0, 64)}" (see: apm-collector keys list)`);
  }
}

/**
 * The data directory (it holds the access keys' secrets) is open to other users and the
 * collector will not tighten it: it is shared (sticky bit, like /tmp) or another user's.
 */
export class DataDirModeError extends ApmError {
  readonly path: string;
  constructor(path: string, mode: number, why: string) {
    super(
      'ERR_DATA_DIR_MODE',
      `the data directory ${path} has mode ${mode.toString(8).padStart(4, '0')}, open to other users, and ${why}; use a directory of its own with mode 0700`,
    );
    this.path = path;
  }
}

/** An agent connection did not complete the handshake within handshake_timeout_ms. Counted as rejected.handshakeTimeout. */
export class HandshakeTimeoutError extends ApmError {
  constructor(ms: number) {
    super('ERR_HANDSHAKE_TIMEOUT', `the handshake was not completed within ${ms} ms (handshake_timeout_ms)`);
  }
}

/**
 * A write to the store failed (disk full, I/O error, a damaged file). What it carried is not
 * acked: the agent keeps it and sends it again on its next session. Counted as
 * rejected.storeFailed (a batch refused) or storeErrors (an agent's liveness not written).
 */
export class StoreWriteError extends ApmError {
  constructor(what: string, why: string) {
    super('ERR_STORE_WRITE', `the collector could not store ${what} (${why}); it was not acked and will be sent again`);
  }
}

/**
 * `--store URL` (or APM_COLLECTOR_STORE) is not a store URL this collector takes: not `sqlite` nor
 * `postgres://USER@HOST:PORT/DB`, a parameter it does not know, or a password in it (the password
 * comes from PGPASSWORD or a password file, never from a flag that `ps` shows).
 */
export class StoreUrlError extends ApmError {
  constructor(why: string) {
    super('ERR_STORE_URL', `bad --store URL: ${why}`);
  }
}

/** The PostgreSQL server of the store could not be reached, or has no such database. */
export class StoreUnavailableError extends ApmError {
  readonly location: string;
  constructor(location: string, server: string, why: string) {
    super('ERR_STORE_UNAVAILABLE', `the store ${location} is unavailable: cannot reach PostgreSQL at ${server} (${why})`);
    this.location = location;
  }
}

/** PostgreSQL refused the store's user: a wrong or missing password (PGPASSWORD, PGPASSFILE), or a user it does not know. */
export class StoreAuthError extends ApmError {
  readonly location: string;
  constructor(location: string, why: string) {
    super('ERR_STORE_AUTH', `PostgreSQL refused the login of the store ${location}: ${why} (the password comes from PGPASSWORD or PGPASSFILE)`);
    this.location = location;
  }
}

/** The store's database has no collector schema, or an older one: `run` does not create or change it. */
export class StoreNotMigratedError extends ApmError {
  readonly location: string;
  constructor(location: string, found: number, wanted: number) {
    super(
      'ERR_STORE_NOT_MIGRATED',
      `the store ${location} ${found === 0 ? 'has no collector schema' : `has schema version ${found}, this collector needs ${wanted}`}: run apm-collector migrate --store ${location}`,
    );
    this.location = location;
  }
}
