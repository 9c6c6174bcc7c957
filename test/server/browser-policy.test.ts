// The browser policy as a table: which Host headers a listener answers to, which Origins may change state,
// and which get CORS headers, for the defaults (loopback names on the listener's port, its own address,
// the address a connection reached) and for AUTHZ_ALLOWED_HOSTS / AUTHZ_CORS_ORIGINS.

import { describe, expect, it } from "vitest";
import { type Arrival, createBrowserPolicy, splitHost } from "../../src/server/browser-policy.ts";

const LOOPBACK: Arrival = { localAddress: "127.0.0.1", localPort: 8080 };
const POD: Arrival = { localAddress: "10.1.2.3", localPort: 8080 };

const open = createBrowserPolicy({
  checkHost: true,
  allowedHosts: [],
  corsOrigins: [],
  listenHost: "127.0.0.1",
  tls: false,
});

const listed = createBrowserPolicy({
  checkHost: true,
  allowedHosts: ["flip-authz", "*.example.org", "authz.internal:9443", "[fd00::7]"],
  corsOrigins: ["https://console.example.net"],
  listenHost: "0.0.0.0",
  tls: false,
});

describe("Host check", () => {
  it.each([
    // The listener's own names, with its port.
    ["127.0.0.1:8080", true],
    ["localhost:8080", true],
    ["LOCALHOST:8080", true],
    ["localhost.:8080", true],
    ["[::1]:8080", true],
    ["127.0.0.2:8080", true],
    ["[::ffff:127.0.0.1]:8080", true],
    // Another port is another origin: a page on localhost:3000 is not ours.
    ["localhost:3000", false],
    ["127.0.0.1", false],
    // DNS rebinding: the attacker's name, whatever it resolves to.
    ["evil.example.com", false],
    ["evil.example.com:8080", false],
    ["localhost.evil.example.com:8080", false],
    ["127.0.0.1.nip.io:8080", false],
    // An IP literal the connection did not reach.
    ["10.1.2.3:8080", false],
    // Malformed.
    ["", false],
    ["127.0.0.1:8080:1", false],
    ["user@127.0.0.1:8080", false],
    ["127.0.0.1:0", false],
    ["127.0.0.1:99999", false],
    ["[not-v6]:8080", false],
    ["127.0.0.1:8080/x", false],
  ])("open mode, Host %j → served: %s", (host, served) => {
    expect(open.refuseHost(host, LOOPBACK) === null).toBe(served);
  });

  it("refuses a request without a Host header, and names the host it refuses", () => {
    expect(open.refuseHost(undefined, LOOPBACK)).toBe("the request has no Host header");
    expect(open.refuseHost("evil.example.com", LOOPBACK)).toBe(
      'this service does not answer to the host "evil.example.com" (AUTHZ_ALLOWED_HOSTS lists the names it answers to)',
    );
  });

  it.each([
    ["flip-authz", true],
    ["flip-authz:8080", true],
    ["FLIP-AUTHZ:1234", true],
    ["a.example.org", true],
    ["a.b.example.org:8080", true],
    ["example.org", false],
    ["evil-example.org", false],
    ["example.org.evil.com", false],
    ["authz.internal:9443", true],
    ["authz.internal:8080", false],
    ["[fd00::7]:8080", true],
    // The address the connection reached, as an IP literal on its port: kubelet and Prometheus by pod IP.
    ["10.1.2.3:8080", true],
    ["10.1.2.3:8081", false],
    ["10.1.2.4:8080", false],
    // A wildcard listen address is no name.
    ["0.0.0.0:8080", false],
    ["localhost:8080", true],
    ["flip-authz.evil.com", false],
  ])("listed names, Host %j → served: %s", (host, served) => {
    expect(listed.refuseHost(host, POD) === null).toBe(served);
  });

  it("is off when the policy says so (credentials configured and no names listed)", () => {
    const off = createBrowserPolicy({
      checkHost: false,
      allowedHosts: [],
      corsOrigins: [],
      listenHost: "0.0.0.0",
      tls: false,
    });
    expect(off.refuseHost("evil.example.com", POD)).toBeNull();
    expect(off.refuseHost(undefined, POD)).toBeNull();
  });

  it("takes the scheme's default port for a Host without one", () => {
    const tls = createBrowserPolicy({
      checkHost: true,
      allowedHosts: [],
      corsOrigins: [],
      listenHost: "127.0.0.1",
      tls: true,
    });
    expect(tls.refuseHost("localhost", { localAddress: "127.0.0.1", localPort: 443 })).toBeNull();
    expect(tls.refuseHost("localhost", { localAddress: "127.0.0.1", localPort: 80 })).not.toBeNull();
  });
});

describe("Origin check for calls that change state", () => {
  it.each([
    // Not from a browser page.
    [undefined, "127.0.0.1:8080", true],
    // The page's own origin.
    ["http://127.0.0.1:8080", "127.0.0.1:8080", true],
    ["http://localhost:8080", "localhost:8080", true],
    // Another loopback name of this same listener.
    ["http://localhost:8080", "127.0.0.1:8080", true],
    // Other pages.
    ["http://evil.example.com", "127.0.0.1:8080", false],
    ["http://localhost:3000", "127.0.0.1:8080", false],
    // Another scheme on this listener's own port: no other page can live there (a TLS proxy in front).
    ["https://127.0.0.1:8080", "127.0.0.1:8080", true],
    ["null", "127.0.0.1:8080", false],
    ["garbage", "127.0.0.1:8080", false],
    ["file://", "127.0.0.1:8080", false],
  ])("open mode, Origin %j with Host %j → allowed: %s", (origin, host, allowed) => {
    expect(open.refuseOrigin(origin, host, LOOPBACK) === null).toBe(allowed);
  });

  it.each([
    ["https://console.example.net", true],
    ["https://console.example.net:8443", false],
    ["http://console.example.net", false],
    ["http://a.example.org", true],
    ["https://a.example.org", true],
    ["http://flip-authz:8080", true],
    ["https://evil.example.com", false],
  ])("listed names and CORS origins, Origin %j → allowed: %s", (origin, allowed) => {
    expect(listed.refuseOrigin(origin, "flip-authz:8080", POD) === null).toBe(allowed);
  });

  it("names the origin it refuses and the variables that would allow it", () => {
    expect(open.refuseOrigin("http://evil.example.com", "127.0.0.1:8080", LOOPBACK)).toBe(
      'a call from the web origin "http://evil.example.com" may not change anything here (AUTHZ_ALLOWED_HOSTS, AUTHZ_CORS_ORIGINS)',
    );
  });
});

describe("CORS", () => {
  it("sends CORS headers only to listed origins, compared exactly", () => {
    expect(listed.corsConfigured).toBe(true);
    expect(listed.corsAllowed("https://console.example.net")).toBe(true);
    expect(listed.corsAllowed("https://console.example.net/")).toBe(false);
    expect(listed.corsAllowed("https://a.example.org")).toBe(false);
    expect(listed.corsAllowed(undefined)).toBe(false);
    expect(open.corsConfigured).toBe(false);
    expect(open.corsAllowed("http://127.0.0.1:8080")).toBe(false);
  });
});

describe("splitHost", () => {
  it.each([
    ["Example.ORG:80", { name: "example.org", port: 80 }],
    ["[::1]", { name: "::1", port: undefined }],
    ["host.", { name: "host", port: undefined }],
    ["[::1", null],
    [":80", null],
  ])("%j → %j", (value, expected) => {
    expect(splitHost(value)).toEqual(expected);
  });
});
