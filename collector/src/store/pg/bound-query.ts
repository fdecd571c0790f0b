import type { PoolClient, QueryResult, QueryResultRow } from 'pg';
import { Query } from 'pg';

/**
 * A prepared statement run with a Bind message built by the caller (ArrayBatch in bind mode,
 * binary-array.ts): the driver's query, with only the Bind step replaced. The driver would copy
 * every parameter into a buffer of its own, grown by reallocation from 256 bytes on each call
 * (a batch's columns are a few hundred KiB); the message written here goes to the socket as it
 * was built.
 *
 * Everything else is the driver's: the statement is parsed once per connection (its names of
 * parsed statements), then Describe, Execute and Sync as it sends them, and the answer, errors
 * included, is handled by its Query. The steps below are those of Query.prepare in `pg` 8.x
 * (the version the collector pins); every test that stores metrics on PostgreSQL runs them.
 */

/** The parts of the driver's connection and query used here (not in its type declarations). */
interface Wire {
  parsedStatements: Record<string, string | undefined>;
  submittedNamedStatements: Record<string, string | undefined>;
  parse(q: { text: string; name: string; types: unknown }): void;
  describe(m: { type: 'P'; name: string }): void;
  _send(message: Buffer): unknown;
}

interface QueryInternals {
  text: string;
  name: string;
  types: unknown;
  rows: unknown;
  portal: string;
  hasBeenParsed(c: Wire): boolean;
  _getRows(c: Wire, rows: unknown): void;
}

class BoundQuery extends Query {
  constructor(
    name: string,
    text: string,
    private readonly bindMessage: Buffer,
    callback: (err: Error | null, res: QueryResult) => void,
  ) {
    super({ name, text, values: [] });
    (this as unknown as { callback: typeof callback }).callback = callback;
  }

  /** Query.prepare, with the Bind message as built. */
  prepare(c: Wire): void {
    const q = this as unknown as QueryInternals;
    if (!q.hasBeenParsed(c)) {
      c.parse({ text: q.text, name: q.name, types: q.types });
      c.submittedNamedStatements[q.name] = q.text;
    }
    c._send(this.bindMessage);
    c.describe({ type: 'P', name: q.portal });
    q._getRows(c, q.rows);
  }
}

/** Run the statement `name` (`text`) on `c` with the Bind message `bind` (built for statement `name`, portal ""). */
export function queryBound<R extends QueryResultRow>(c: PoolClient, name: string, text: string, bind: Buffer): Promise<QueryResult<R>> {
  return new Promise((resolve, reject) => {
    c.query(new BoundQuery(name, text, bind, (err, res) => (err === null ? resolve(res as QueryResult<R>) : reject(err))));
  });
}
