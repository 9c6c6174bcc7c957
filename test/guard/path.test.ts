// The request path as the route table sees it: every path attack of SIDECARS.md §1 and more, each either
// refused (with why) or decoded into exactly the segments a route is matched against.

import { describe, expect, it } from "vitest";
import { MAX_PATH_LENGTH, parseRequestPath } from "../../src/guard/path.ts";

const accepted: [string, string[]][] = [
  ["/api/projects", ["api", "projects"]],
  ["/api/projects?x=1", ["api", "projects"]],
  ["/api/projects?../../admin", ["api", "projects"]],
  ["/api/projects#frag", ["api", "projects"]],
  ["/api/projects/", ["api", "projects", ""]],
  ["/", [""]],
  ["/?q=/admin", [""]],
  ["/API/Projects", ["API", "Projects"]],
  ["/%61pi/projects", ["api", "projects"]],
  ["/api/caf%C3%A9", ["api", "café"]],
  ["/api/projects;jsessionid=1", ["api", "projects;jsessionid=1"]],
  ["/api/projects%3Fx", ["api", "projects?x"]],
  ["/api/%25", ["api", "%"]],
  ["/api/...", ["api", "..."]],
  ["/api/.well-known", ["api", ".well-known"]],
  [`/${"a".repeat(MAX_PATH_LENGTH - 1)}`, ["a".repeat(MAX_PATH_LENGTH - 1)]],
];

const refused: [string, string][] = [
  ["", "does not start with /"],
  ["api/projects", "does not start with /"],
  ["http://evil.example/api/projects", "does not start with /"],
  ["*", "does not start with /"],
  ["?/api", "does not start with /"],
  ["//api/projects", "empty segment"],
  ["/api//projects", "empty segment"],
  ["/api/projects//", "empty segment"],
  ["/api/./projects", ". or .. segment"],
  ["/api/../admin", ". or .. segment"],
  ["/api/..", ". or .. segment"],
  ["/api/.", ". or .. segment"],
  ["/api/%2e%2e/admin", ". or .. segment"],
  ["/api/%2E%2E/admin", ". or .. segment"],
  ["/api/.%2e/admin", ". or .. segment"],
  ["/api/%2e/admin", ". or .. segment"],
  ["/api/..;/admin", ". or .. segment"],
  ["/api/..;jsessionid=x/admin", ". or .. segment"],
  ["/api/%252e%252e/admin", "percent-encoded twice"],
  ["/api%252Fadmin", "percent-encoded twice"],
  ["/api/%2525", "percent-encoded twice"],
  ["/api%2Fadmin", "encoded /"],
  ["/api%2fadmin", "encoded /"],
  ["/api/..%2fadmin", "encoded /"],
  ["/api%5Cadmin", "backslash"],
  ["/api%5cadmin", "backslash"],
  ["/api\\admin", "backslash"],
  ["/api/..\\admin", "backslash"],
  ["/api/%00", "NUL"],
  ["/api/x%00.json", "NUL"],
  ["/api/%0d%0aSet-Cookie:x", "control character"],
  ["/api/%09", "control character"],
  ["/api/%7f", "control character"],
  ["/api/%C0%AE%C0%AE/admin", "not valid UTF-8"],
  ["/api/%C0%AF", "not valid UTF-8"],
  ["/api/%E0%80%AE", "not valid UTF-8"],
  ["/api/%ED%A0%80", "not valid UTF-8"],
  ["/api/%E2%82", "not valid UTF-8"],
  ["/api/%FF", "not valid UTF-8"],
  ["/api/%zz", "invalid percent-encoding"],
  ["/api/%4", "invalid percent-encoding"],
  ["/api/%", "invalid percent-encoding"],
  ["/api/%%32%65", "invalid percent-encoding"],
  ["/api/é", "must be percent-encoded"],
  ["/api/a b", "must be percent-encoded"],
  ["/api/\u0000", "must be percent-encoded"],
  ["/api/\r\n", "must be percent-encoded"],
  [`/${"a".repeat(MAX_PATH_LENGTH)}`, "too long"],
  [`/${"a/".repeat(100_000)}`, "too long"],
  [`/api/${"%2e".repeat(2000)}`, "too long"],
];

describe("parseRequestPath", () => {
  it.each(accepted)("%s is matched as its decoded segments", (target, segments) => {
    expect(parseRequestPath(target)).toEqual({ ok: true, segments });
  });

  it.each(refused)("%s is refused (%s)", (target, reason) => {
    const result = parseRequestPath(target);
    expect(result.ok).toBe(false);
    expect(result.ok === false && result.reason).toContain(reason);
  });

  it("looks at the path only: a huge query does not make a short path long", () => {
    expect(parseRequestPath(`/${"%2e".repeat(1_000_000)}`).ok).toBe(false);
    expect(parseRequestPath(`/api?${"a".repeat(1_000_000)}`)).toEqual({ ok: true, segments: ["api"] });
  });
});
