import type { CustomTypesConfig } from 'pg';
import { types } from 'pg';

/**
 * Values on their way to and from PostgreSQL, for the data side (metrics, text items, queries).
 *
 * Rows are written in bulk as `unnest($n::T[])` of array literals built here rather than by
 * the driver: one statement text for any number of rows (prepared once), and the parts that
 * repeat (a series' key, name and tags) are escaped once per series and reused.
 */

/** PostgreSQL text cannot hold U+0000: it becomes U+FFFD (SQLite keeps it; nothing else differs). */
export function pgText(s: string): string {
  return s.includes('\u0000') ? s.replaceAll('\u0000', '\uFFFD') : s;
}

/** A text element of an array literal: quoted, `"` and `\` escaped. */
export function textElem(s: string): string {
  const t = pgText(s);
  return `"${/["\\]/.test(t) ? t.replace(/["\\]/g, '\\$&') : t}"`;
}

/** A bytea element of an array literal (hex input form, its backslash escaped). */
export function byteaElem(b: Buffer): string {
  return `"\\\\x${b.toString('hex')}"`;
}

/** A number element (finite numbers only reach here: the decoder refuses others) or NULL. */
export function numElem(n: number | null): string {
  return n === null ? 'NULL' : String(n);
}

/** `{a,b,…}` of elements already made by the functions above. */
export function arrayLiteral(elems: readonly string[]): string {
  return `{${elems.join(',')}}`;
}

/**
 * BIGINT columns (counts, ids, collector times) come back as numbers, not strings: every value
 * stored in them is a JavaScript number to begin with, so none exceeds 2^53.
 */
const INT8_OID = 20;
export const NUMERIC_INT8: CustomTypesConfig = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') => {
    if (oid === INT8_OID && format !== 'binary') return (v: string) => Number(v);
    return types.getTypeParser(oid, format ?? 'text');
  }) as CustomTypesConfig['getTypeParser'],
};
