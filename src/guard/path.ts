// The path of a guarded HTTP request as the route table sees it (SIDECARS.md §1): the raw request target a
// proxy forwards (query and fragment ignored) percent-decoded into segments, or the reason it is refused
// without matching. Anything a server could read two ways is refused, never matched loosely.

/** Longest path (before the query) looked at; a longer one is refused. */
export const MAX_PATH_LENGTH = 4096;

/**
 * The decoded segments of an acceptable path: `/api/x` is ["api", "x"], a trailing `/` adds an empty last
 * segment (`/api/x/` is ["api", "x", ""]) and `/` is [""]. Only the last segment can be empty.
 */
export type RequestPath = { ok: true; segments: string[] } | { ok: false; reason: string };

/** A raw request target holds visible ASCII only: anything else must arrive percent-encoded. */
const RAW = /^[\x21-\x7e]*$/;
const BAD_ESCAPE = /%(?![0-9A-Fa-f]{2})/;
/** A decoded segment still holding an escape was encoded twice: a server decoding again would see another path. */
const ESCAPE = /%[0-9A-Fa-f]{2}/;
const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** True when `text` holds a C0 control character (NUL included) or DEL. */
export function hasControl(text: string): boolean {
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code < 0x20 || code === 0x7f) return true;
  }
  return false;
}

function refuse(reason: string): RequestPath {
  return { ok: false, reason };
}

/** Percent-decodes one raw segment (already checked to be visible ASCII); null when not valid UTF-8. */
function decode(segment: string): string | null {
  const bytes: number[] = [];
  for (let i = 0; i < segment.length; i++) {
    const code = segment.charCodeAt(i);
    if (code === 0x25) {
      bytes.push(Number.parseInt(segment.slice(i + 1, i + 3), 16));
      i += 2;
    } else {
      bytes.push(code);
    }
  }
  try {
    // fatal: overlong forms (%C0%AE for "."), surrogates and truncated sequences throw.
    return utf8.decode(Uint8Array.from(bytes));
  } catch {
    return null;
  }
}

/** Parses a raw request target (`/api/projects/1?x=y`) into the segments routes are matched against. */
export function parseRequestPath(target: string): RequestPath {
  let end = target.length;
  const query = target.indexOf("?");
  if (query !== -1) end = query;
  const fragment = target.indexOf("#");
  if (fragment !== -1 && fragment < end) end = fragment;
  if (end > MAX_PATH_LENGTH) return refuse("the path is too long");
  const path = target.slice(0, end);
  if (path.charCodeAt(0) !== 0x2f) return refuse("the path does not start with /");
  if (!RAW.test(path)) return refuse("the path holds characters that must be percent-encoded");
  const raw = path.slice(1).split("/");
  const segments: string[] = new Array(raw.length);
  const last = raw.length - 1;
  for (let i = 0; i <= last; i++) {
    const encoded = raw[i] as string;
    if (encoded === "" && i !== last) return refuse("the path has an empty segment (//)");
    let segment = encoded;
    if (encoded.includes("%")) {
      if (BAD_ESCAPE.test(encoded)) return refuse("the path has invalid percent-encoding");
      const decoded = decode(encoded);
      if (decoded === null) return refuse("the path is not valid UTF-8");
      if (decoded.includes("/")) return refuse("the path has an encoded /");
      if (ESCAPE.test(decoded)) return refuse("the path is percent-encoded twice");
      // Only decoding can bring in a control character: RAW let none through.
      if (hasControl(decoded)) return refuse("the path has a NUL or control character");
      segment = decoded;
    }
    if (segment.includes("\\")) return refuse("the path has a backslash");
    // `;` is an ordinary character, but servers that cut path parameters (`..;x` → `..`) would climb here.
    const name = segment.includes(";") ? segment.slice(0, segment.indexOf(";")) : segment;
    if (name === "." || name === "..") return refuse("the path has a . or .. segment");
    segments[i] = segment;
  }
  return { ok: true, segments };
}
