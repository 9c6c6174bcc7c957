// The rules of a user import file (flip-authz import): CSV, a header row `user_id,role[,name,organisation]`
// (line 1), then one user and role per line. Roles by name (case-insensitive, exact case preferred) or UUID.
// A name or organisation left empty or absent leaves the profile's value as it is. Parsing only: the command
// (src/cli/import.ts) streams the file through these, the store writes what they produce.

import { MAX_TEXT_LENGTH } from "./authz.ts";
import { isUuid } from "./ids.ts";
import type { RoleName } from "./store.ts";

export const IMPORT_COLUMNS = ["user_id", "role", "name", "organisation"] as const;

/** One valid line: ids lower case, the role resolved. */
export interface ImportLine {
  userId: string;
  role: RoleName;
  name?: string;
  organisation?: string;
}

export class ImportLineError extends Error {}

/**
 * Splits one CSV line (RFC 4180 quoting: "a ""b"", c"; no line breaks inside a field) into its fields,
 * or throws ImportLineError.
 */
export function splitCsvLine(line: string): string[] {
  const fields: string[] = [];
  let i = 0;
  for (;;) {
    if (line[i] === '"') {
      let value = "";
      i++;
      for (;;) {
        const quote = line.indexOf('"', i);
        if (quote < 0) throw new ImportLineError("a quoted field is not closed");
        value += line.slice(i, quote);
        if (line[quote + 1] === '"') {
          value += '"';
          i = quote + 2;
          continue;
        }
        i = quote + 1;
        break;
      }
      fields.push(value);
      if (i === line.length) return fields;
      if (line[i] !== ",")
        throw new ImportLineError("a quoted field must be followed by a comma or the line's end");
      i++;
    } else {
      const comma = line.indexOf(",", i);
      const value = comma < 0 ? line.slice(i) : line.slice(i, comma);
      if (value.includes('"')) throw new ImportLineError('a field with a quote (") must be quoted');
      fields.push(value);
      if (comma < 0) return fields;
      i = comma + 1;
    }
  }
}

/** Checks the header row (line 1): `user_id,role`, optionally `,name` and `,organisation`, in that order. */
export function parseHeader(line: string): number {
  const fields = splitCsvLine(stripBom(line)).map((field) => field.trim().toLowerCase());
  const expected = IMPORT_COLUMNS.slice(0, fields.length);
  if (
    fields.length < 2 ||
    fields.length > IMPORT_COLUMNS.length ||
    fields.some((f, i) => f !== expected[i])
  ) {
    throw new ImportLineError(
      `the header must be user_id,role[,name[,organisation]]; found ${JSON.stringify(fields.join(","))}`,
    );
  }
  return fields.length;
}

function stripBom(line: string): string {
  return line.charCodeAt(0) === 0xfeff ? line.slice(1) : line;
}

/** Resolves role references the way the RPCs do: a UUID, or a name (exact case first, then any case). */
export class RoleResolver {
  private readonly byId = new Map<string, RoleName>();
  private readonly byName = new Map<string, RoleName>();
  private readonly byFolded = new Map<string, RoleName>();

  constructor(roles: readonly RoleName[]) {
    for (const role of roles) {
      this.byId.set(role.id.toLowerCase(), role);
      this.byName.set(role.name, role);
      const folded = role.name.toLowerCase();
      if (!this.byFolded.has(folded)) this.byFolded.set(folded, role);
    }
  }

  resolve(ref: string): RoleName | undefined {
    if (isUuid(ref)) return this.byId.get(ref.toLowerCase());
    return this.byName.get(ref) ?? this.byFolded.get(ref.toLowerCase());
  }
}

function text(value: string | undefined, field: string): string | undefined {
  if (value === undefined || value === "") return undefined;
  if ([...value].length > MAX_TEXT_LENGTH) {
    throw new ImportLineError(`${field} must be at most ${MAX_TEXT_LENGTH} characters`);
  }
  if (value.includes("\0")) throw new ImportLineError(`${field} must not contain NUL characters`);
  return value;
}

/** One data line (not the header), or ImportLineError naming the column that is wrong. */
export function parseLine(line: string, columns: number, roles: RoleResolver): ImportLine {
  const fields = splitCsvLine(line);
  if (fields.length !== columns) {
    throw new ImportLineError(`expected ${columns} fields as in the header, found ${fields.length}`);
  }
  const userId = (fields[0] ?? "").trim();
  if (!isUuid(userId)) throw new ImportLineError(`user_id must be a UUID, found ${JSON.stringify(userId)}`);
  const ref = (fields[1] ?? "").trim();
  if (ref === "") throw new ImportLineError("role is required");
  const role = roles.resolve(ref);
  if (!role) throw new ImportLineError(`role ${JSON.stringify(ref)} does not exist`);
  const name = text(fields[2], "name");
  const organisation = text(fields[3], "organisation");
  return {
    userId: userId.toLowerCase(),
    role,
    ...(name !== undefined && { name }),
    ...(organisation !== undefined && { organisation }),
  };
}
