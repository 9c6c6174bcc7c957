// The gRPC bridge's codec (src/server/flat-codec.ts) against protobuf-es's fromBinary/toBinary, which it
// must agree with byte for byte and field for field: on random messages of every type the service sends or
// receives, and on those messages' bytes mangled (cut short, bytes changed, unknown fields added, random).

import {
  create,
  type DescField,
  type DescMessage,
  fromBinary,
  type Message,
  ScalarType,
  toBinary,
} from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import {
  AuthzService,
  CheckPermissionRequestSchema,
  CheckPermissionResponseSchema,
  ListAuditEventsRequestSchema,
  UpdateProfileRequestSchema,
} from "../../gen/flip/authz/v1/authz_pb.ts";
import { codecFor, isFlat } from "../../src/server/flat-codec.ts";

/** A small seeded generator (mulberry32), so a failure can be replayed. */
function random(seed: number): () => number {
  let state = seed;
  return () => {
    state = (state + 0x6d2b79f5) | 0;
    let t = Math.imul(state ^ (state >>> 15), 1 | state);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const STRINGS = [
  "",
  "Researcher",
  "6f0c1f4e-2a53-4c7e-9d8b-0a1b2c3d4e5f",
  "CAN_CREATE_PROJECTS",
  "x".repeat(127),
  "y".repeat(128),
  "z".repeat(300),
  "Zoë",
  "伦敦 🧬",
  "\u0000\u007f",
  "lone \ud800 surrogate",
  "é".repeat(70),
];

function pick<T>(next: () => number, values: readonly T[]): T {
  return values[Math.floor(next() * values.length)] as T;
}

function scalar(next: () => number, type: ScalarType): unknown {
  switch (type) {
    case ScalarType.STRING:
      return next() < 0.7 ? pick(next, STRINGS) : `s${Math.floor(next() * 1e9)}`;
    case ScalarType.BOOL:
      return next() < 0.5;
    case ScalarType.INT32:
      return pick(next, [0, 1, -1, 300, 2 ** 31 - 1, -(2 ** 31)]);
    case ScalarType.INT64:
      return pick(next, [0n, 1n, -1n, 1_700_000_000n]);
    default:
      throw new Error(`no generator for scalar type ${type}`);
  }
}

/** A random init object for `schema`: each field set or left at its zero value. */
function randomInit(next: () => number, schema: DescMessage, depth = 0): Record<string, unknown> {
  const init: Record<string, unknown> = {};
  for (const field of schema.fields) {
    if (next() < 0.3) continue;
    init[field.localName] = fieldValue(next, field, depth);
  }
  return init;
}

function fieldValue(next: () => number, field: DescField, depth: number): unknown {
  const count = Math.floor(next() * 4);
  switch (field.fieldKind) {
    case "scalar":
      return scalar(next, field.scalar);
    case "enum":
      return pick(next, field.enum.values).number;
    case "message":
      return depth > 2
        ? undefined
        : create(field.message, randomInit(next, field.message, depth + 1) as never);
    case "list":
      return Array.from({ length: count }, () =>
        field.listKind === "scalar"
          ? scalar(next, field.scalar)
          : field.listKind === "enum"
            ? pick(next, field.enum.values).number
            : create(field.message, randomInit(next, field.message, depth + 1) as never),
      );
    case "map":
      throw new Error("no maps in the service's messages");
  }
}

/** Every request and response message of the service. */
const SCHEMAS: DescMessage[] = [
  ...new Set(AuthzService.methods.flatMap((method) => [method.input, method.output] as DescMessage[])),
];

/** What decoding gave: the message, or that it threw. */
function outcome(decode: () => Message): { message: Message } | { threw: true } {
  try {
    return { message: decode() };
  } catch {
    return { threw: true };
  }
}

/** `bytes` changed in one of several ways. */
function mangle(next: () => number, bytes: Uint8Array): Buffer {
  const out = [...bytes];
  const at = Math.floor(next() * (out.length + 1));
  switch (Math.floor(next() * 6)) {
    case 0: // cut short
      return Buffer.from(out.slice(0, at));
    case 1: // one byte changed
      if (out.length > 0) out[Math.min(at, out.length - 1)] = Math.floor(next() * 256);
      return Buffer.from(out);
    case 2: // an unknown field (number 9, varint) in front
      return Buffer.from([0x48, Math.floor(next() * 128), ...out]);
    case 3: // a known field number with another wire type (1 as varint, 2 as fixed32)
      return Buffer.from([...out, pick(next, [0x08, 0x15]), 1, 2, 3, 4]);
    case 4: // a non-ASCII or invalid UTF-8 string for field 1
      return Buffer.from([...out, 0x0a, 2, pick(next, [0xc3, 0xff]), pick(next, [0xa9, 0x41])]);
    default: // random bytes
      return Buffer.from(Array.from({ length: Math.floor(next() * 24) }, () => Math.floor(next() * 256)));
  }
}

describe("the gRPC bridge's message codec", () => {
  it("compiles the hot check's messages, and leaves messages with other field kinds to protobuf-es", () => {
    expect(isFlat(CheckPermissionRequestSchema)).toBe(true);
    expect(isFlat(CheckPermissionResponseSchema)).toBe(true);
    // `optional` (explicit presence) and int32 fields are not flat.
    expect(isFlat(UpdateProfileRequestSchema)).toBe(false);
    expect(isFlat(ListAuditEventsRequestSchema)).toBe(false);
  });

  it("encodes every message type as toBinary does, and decodes it as fromBinary does", () => {
    const next = random(1);
    for (const schema of SCHEMAS) {
      const codec = codecFor(schema);
      for (let i = 0; i < 300; i++) {
        const message = create(schema, randomInit(next, schema) as never);
        const expected = toBinary(schema, message);
        const encoded = codec.encode(message);
        expect(Buffer.isBuffer(encoded)).toBe(true);
        expect([...encoded], `${schema.typeName} #${i}`).toEqual([...expected]);
        expect(codec.decode(encoded), `${schema.typeName} #${i}`).toStrictEqual(fromBinary(schema, expected));
      }
    }
  });

  it("encodes a plain init object as toBinary encodes the message made from it", () => {
    const codec = codecFor(CheckPermissionResponseSchema);
    const init = { allowed: true, grantedBy: ["Admin", "Researcher"], checkedAt: "42" };
    expect([...codec.encode(init)]).toEqual([
      ...toBinary(CheckPermissionResponseSchema, create(CheckPermissionResponseSchema, init)),
    ]);
  });

  it("writes unknown fields a decoded message kept, as toBinary does", () => {
    const codec = codecFor(CheckPermissionRequestSchema);
    const bytes = Buffer.from([0x48, 0x05, 0x0a, 0x01, 0x61]); // field 9 = 5, then user_id "a"
    const message = codec.decode(bytes);
    expect(message).toStrictEqual(fromBinary(CheckPermissionRequestSchema, bytes));
    expect(message.$unknown).toHaveLength(1);
    expect([...codec.encode(message)]).toEqual([...toBinary(CheckPermissionRequestSchema, message)]);
  });

  it("reads and writes strings whose length takes three bytes (16 KiB and more) as protobuf-es does", () => {
    const cases: [DescMessage, Record<string, unknown>][] = [
      [CheckPermissionRequestSchema, { userId: "b".repeat(16_384), permission: "p" }],
      [CheckPermissionResponseSchema, { allowed: true, grantedBy: ["a".repeat(20_000)], checkedAt: "1" }],
    ];
    for (const [schema, init] of cases) {
      const message = create(schema, init as never);
      const bytes = Buffer.from(toBinary(schema, message));
      expect([...codecFor(schema).encode(message)]).toEqual([...bytes]);
      expect(codecFor(schema).decode(bytes)).toStrictEqual(fromBinary(schema, bytes));
    }
  });

  it("fails where toBinary fails, on a value of another type than its field's", () => {
    const codec = codecFor(CheckPermissionResponseSchema);
    const encoded = (encode: () => Uint8Array) => {
      try {
        return { bytes: [...encode()] };
      } catch {
        return { threw: true };
      }
    };
    for (const wrong of [{ grantedBy: "Admin" }, { checkedAt: 42 }, { grantedBy: [1] }, { allowed: 1 }]) {
      const message = { ...create(CheckPermissionResponseSchema), ...wrong } as never;
      expect(encoded(() => codec.encode(message))).toEqual(
        encoded(() => toBinary(CheckPermissionResponseSchema, message)),
      );
    }
  });

  it("decodes mangled and random bytes exactly as fromBinary does, throwing where it throws", () => {
    const next = random(2);
    let threw = 0;
    for (const schema of SCHEMAS) {
      const codec = codecFor(schema);
      for (let i = 0; i < 400; i++) {
        const valid = toBinary(schema, create(schema, randomInit(next, schema) as never));
        const bytes = mangle(next, valid);
        const expected = outcome(() => fromBinary(schema, bytes));
        expect(
          outcome(() => codec.decode(bytes)),
          `${schema.typeName} from ${bytes.toString("hex")}`,
        ).toStrictEqual(expected);
        if ("threw" in expected) threw++;
      }
    }
    // The mangling reaches protobuf-es's errors, not only its successes.
    expect(threw).toBeGreaterThan(100);
  });
});
