// The request headers a handler sees on the gRPC listener (MetadataHeaders reads grpc-js metadata lazily)
// behave exactly as fetch Headers holding a copy of the metadata would, read before or after any copy.

import { encodeBinaryHeader } from "@connectrpc/connect";
import * as grpc from "@grpc/grpc-js";
import { describe, expect, it } from "vitest";
import { MetadataHeaders } from "../../src/server/grpc-context.ts";

/** What the bridge handed handlers before: every metadata entry appended to plain Headers. */
function copied(metadata: grpc.Metadata): Headers {
  const headers = new Headers();
  for (const [key, values] of Object.entries(metadata.toJSON())) {
    for (const value of values) {
      try {
        headers.append(key, typeof value === "string" ? value : encodeBinaryHeader(value));
      } catch {
        // skipped, as the bridge skips it
      }
    }
  }
  return headers;
}

function metadata(): grpc.Metadata {
  const m = new grpc.Metadata();
  m.add("authorization", "Bearer abc.def");
  m.add("x-many", "one");
  m.add("x-many", "two words");
  // grpc-js admits printable ASCII only; Headers trims the spaces around a value.
  m.add("x-padded", "  padded  ");
  m.add("x-empty", "");
  m.add("x-inner", "a  b");
  m.add("trace-bin", Buffer.from([0, 1, 2, 250]));
  m.add("user-agent", "grpc-node-js/1.14.7");
  return m;
}

const NAMES = [
  "authorization",
  "Authorization",
  "x-many",
  "X-MANY",
  "x-padded",
  "x-empty",
  "x-inner",
  "trace-bin",
  "user-agent",
  "absent",
  "absent-bin",
];

describe("MetadataHeaders", () => {
  it("answers get and has as Headers holding a copy of the metadata would, for every kind of value", () => {
    const reference = copied(metadata());
    const lazy = new MetadataHeaders(metadata());
    for (const name of NAMES) {
      expect(lazy.get(name), name).toBe(reference.get(name));
      expect(lazy.has(name), name).toBe(reference.has(name));
    }
    // Invalid names are refused as Headers refuses them.
    expect(() => lazy.get("not a name")).toThrow(TypeError);
    expect(() => reference.get("not a name")).toThrow(TypeError);
  });

  it("iterates, copies and mutates as Headers do, before or after a direct read", () => {
    for (const readFirst of [false, true]) {
      const reference = copied(metadata());
      const lazy = new MetadataHeaders(metadata());
      if (readFirst) expect(lazy.get("authorization")).toBe("Bearer abc.def");
      expect([...lazy]).toEqual([...reference]);
      expect([...lazy.keys()]).toEqual([...reference.keys()]);
      expect([...lazy.values()]).toEqual([...reference.values()]);
      expect([...new Headers(lazy)]).toEqual([...reference]);
      const seen: string[] = [];
      lazy.forEach((value, key) => {
        seen.push(`${key}=${value}`);
      });
      expect(seen).toEqual([...reference].map(([key, value]) => `${key}=${value}`));
    }
    const lazy = new MetadataHeaders(metadata());
    lazy.set("authorization", "Bearer other");
    lazy.append("x-many", "three");
    lazy.delete("user-agent");
    expect(lazy.get("authorization")).toBe("Bearer other");
    expect(lazy.get("x-many")).toBe("one, two words, three");
    expect(lazy.has("user-agent")).toBe(false);
    expect(lazy.get("trace-bin")).toBe(copied(metadata()).get("trace-bin"));
    expect(lazy).toBeInstanceOf(Headers);
  });

  it("does not copy the metadata for a plain read", () => {
    const m = metadata();
    let copies = 0;
    const toJSON = m.toJSON.bind(m);
    m.toJSON = () => {
      copies++;
      return toJSON();
    };
    const lazy = new MetadataHeaders(m);
    expect(lazy.get("authorization")).toBe("Bearer abc.def");
    expect(lazy.has("absent")).toBe(false);
    expect(copies).toBe(0);
    expect(lazy.get("x-padded")).toBe("padded");
    expect(copies).toBe(1);
  });
});
