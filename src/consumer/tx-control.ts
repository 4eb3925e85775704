/**
 * Finds transaction-control statements (BEGIN, COMMIT, ROLLBACK, …) in SQL text a handler
 * sends through its transaction. The consumer owns that transaction: a handler's COMMIT
 * would commit its effects without the offset, and the offset's compare-and-set would then
 * run outside any transaction. Savepoints (SAVEPOINT, RELEASE, ROLLBACK TO) are the
 * handler's to use.
 *
 * The text is scanned the way PostgreSQL's lexer splits it: string constants ('…', E'…',
 * and '…' with backslash escapes when standard_conforming_strings is off),
 * dollar-quoted bodies ($tag$…$tag$), quoted identifiers and comments (nested block
 * comments included) are skipped, statements are split at `;`, and the first words of each
 * statement are compared. A function or DO block that COMMITs inside the transaction is
 * refused by PostgreSQL itself ("invalid transaction termination").
 */
export function transactionControlStatement(text: string, options: { backslashEscapes?: boolean } = {}): string | undefined {
  for (const statement of statements(text, options.backslashEscapes ?? false)) {
    const words = statement.trim().toLowerCase().split(/\s+/, 4);
    const refused = refusedCommand(words);
    if (refused !== undefined) return refused;
  }
  return undefined;
}

const ALWAYS_REFUSED = new Set(['begin', 'start', 'commit', 'end', 'abort']);
const NOISE = new Set(['work', 'transaction']);

function refusedCommand(words: string[]): string | undefined {
  const [first, second] = words;
  if (first === undefined || first === '') return undefined;
  if (ALWAYS_REFUSED.has(first)) return first === 'start' ? 'start transaction' : first;
  if (first === 'rollback') {
    // ROLLBACK [WORK|TRANSACTION] TO [SAVEPOINT] x undoes a savepoint only.
    const next = words.slice(1).find((w) => !NOISE.has(w));
    return next === 'to' ? undefined : 'rollback';
  }
  if (first === 'prepare' && second === 'transaction') return 'prepare transaction';
  return undefined;
}

/** `$` right after an identifier character continues the identifier (`a$b`), as do non-ASCII letters. */
const IDENTIFIER_END = /[A-Za-z0-9_$\u0080-\uffff]$/;
/** `$tag$` opening a dollar-quoted string; tags may hold non-ASCII letters, as identifiers do. */
const DOLLAR_TAG = /^\$([A-Za-z_\u0080-\uffff][A-Za-z0-9_\u0080-\uffff]*)?\$/;
/** `e'…'` is an escape string only when the `e` is not the end of a longer identifier. */
const IDENTIFIER_BEFORE_E = /[A-Za-z0-9_$\u0080-\uffff][eE]$/;

/** The statements of `text` with literals, quoted identifiers and comments blanked out. */
function statements(text: string, backslashEscapes: boolean): string[] {
  const out: string[] = [];
  let current = '';
  let i = 0;
  const n = text.length;
  while (i < n) {
    const c = text[i]!;
    const next = text[i + 1];
    if (c === ';') {
      out.push(current);
      current = '';
      i++;
    } else if (c === '-' && next === '-') {
      const end = text.indexOf('\n', i);
      i = end < 0 ? n : end + 1;
      current += ' ';
    } else if (c === '/' && next === '*') {
      i = skipBlockComment(text, i);
      current += ' ';
    } else if (c === "'") {
      const escapes = backslashEscapes || (/[eE]$/.test(current) && !IDENTIFIER_BEFORE_E.test(current));
      i = skipQuoted(text, i, "'", escapes);
      current += ' ';
    } else if (c === '"') {
      i = skipQuoted(text, i, '"', false);
      current += ' x ';
    } else if (c === '$' && !IDENTIFIER_END.test(current)) {
      const tag = DOLLAR_TAG.exec(text.slice(i));
      if (tag) {
        const end = text.indexOf(tag[0], i + tag[0].length);
        i = end < 0 ? n : end + tag[0].length;
        current += ' ';
      } else {
        current += c;
        i++;
      }
    } else {
      current += c;
      i++;
    }
  }
  out.push(current);
  return out;
}

function skipBlockComment(text: string, start: number): number {
  let depth = 0;
  let i = start;
  while (i < text.length) {
    if (text.startsWith('/*', i)) {
      depth++;
      i += 2;
    } else if (text.startsWith('*/', i)) {
      depth--;
      i += 2;
      if (depth === 0) return i;
    } else i++;
  }
  return i;
}

/** Index after the closing quote; a doubled quote is an escaped quote, `\x` too in E'' strings. */
function skipQuoted(text: string, start: number, quote: string, backslashEscapes: boolean): number {
  let i = start + 1;
  while (i < text.length) {
    const c = text[i]!;
    if (backslashEscapes && c === '\\') i += 2;
    else if (c === quote && text[i + 1] === quote) i += 2;
    else if (c === quote) return i + 1;
    else i++;
  }
  return i;
}
